'use strict'
// hyperdht's real NoiseWrap and @hyperswarm/secret-stream, driven over stdin/stdout
// JSON lines (hex for bytes), for the Python Noise/secret-stream interop tests.
// `node noise-peer.js vectors` prints one JSON object of recorded test vectors instead.
//
// ops: {op:"initiate", seed, remote, eseed?, payload}  -> {msg1}
//      {op:"finish", msg2}                           -> {payload, keys}
//      {op:"respond", seed, msg1, eseed?, payload}   -> {msg2, payload, remotePublicKey, keys}
//      {op:"ss_write", messages:[hex]}              -> {data} (raw bytes NoiseSecretStream wrote, header first)
//      {op:"ss_feed", data}                         -> {messages:[hex]} decoded by NoiseSecretStream
//      {op:"ss_send", message} -> {data} (secretbox datagram); {op:"ss_recv", data} -> {message|null}
const b4a = require('b4a')
const readline = require('readline')
const curve = require('noise-curve-ed')
const NoiseWrap = require('hyperdht/lib/noise-wrap')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const HyperDHT = require('hyperdht')
const { Duplex } = require('streamx')

const hex = (b) => b4a.toString(b, 'hex')
const buf = (h) => b4a.from(h, 'hex')

function payloadFromJson(p) {
  return {
    error: p.error || 0,
    firewall: p.firewall || 0,
    holepunch: p.holepunch ? { id: p.holepunch.id, relays: p.holepunch.relays } : null,
    addresses4: p.addresses4 || [],
    addresses6: p.addresses6 || [],
    udx: p.udx ? { reusableSocket: !!p.udx.reusableSocket, id: p.udx.id, seq: p.udx.seq || 0 } : null,
    secretStream: p.secretStream ? {} : null,
    relayThrough: p.relayThrough ? { publicKey: buf(p.relayThrough.publicKey), token: buf(p.relayThrough.token) } : null,
    relayAddresses: p.relayAddresses || null
  }
}

function payloadToJson(p) {
  return {
    version: p.version,
    error: p.error,
    firewall: p.firewall,
    holepunch: p.holepunch,
    addresses4: p.addresses4,
    addresses6: p.addresses6,
    udx: p.udx,
    secretStream: p.secretStream,
    relayThrough: p.relayThrough ? { publicKey: hex(p.relayThrough.publicKey), token: hex(p.relayThrough.token) } : null,
    relayAddresses: p.relayAddresses
  }
}

function keys(f) {
  return { hash: hex(f.hash), tx: hex(f.tx), rx: hex(f.rx), holepunchSecret: hex(f.holepunchSecret), remotePublicKey: hex(f.remotePublicKey) }
}

const state = {}

function secretStream() {
  if (state.ss) return state.ss
  const raw = new Duplex({ write(data, cb) { state.out.push(b4a.from(data)); cb() } })
  state.out = []
  state.raw = raw
  state.received = []
  const ss = new NoiseSecretStream(state.wrap.isInitiator, raw, { handshake: state.wrap.final() })
  ss.on('data', (d) => state.received.push(hex(d)))
  ss.on('message', (d) => state.datagrams.push(hex(d)))
  ss.on('error', () => {})
  state.datagrams = []
  state.ss = ss
  return ss
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 20))

const ops = {
  initiate(c) {
    const w = (state.wrap = new NoiseWrap(HyperDHT.keyPair(buf(c.seed)), buf(c.remote)))
    if (c.eseed) w.handshake.e = curve.generateKeyPair(buf(c.eseed))
    return { msg1: hex(w.send(payloadFromJson(c.payload))) }
  },
  finish(c) {
    const p = state.wrap.recv(buf(c.msg2))
    return { payload: payloadToJson(p), keys: keys(state.wrap.final()) }
  },
  respond(c) {
    const w = (state.wrap = new NoiseWrap(HyperDHT.keyPair(buf(c.seed)), null))
    const p = w.recv(buf(c.msg1))
    if (c.eseed) w.handshake.e = curve.generateKeyPair(buf(c.eseed))
    const msg2 = w.send(payloadFromJson(c.payload))
    return { msg2: hex(msg2), payload: payloadToJson(p), keys: keys(w.final()) }
  },
  async ss_write(c) {
    const ss = secretStream()
    for (const m of c.messages) ss.write(buf(m))
    await tick()
    const data = b4a.concat(state.out)
    state.out.length = 0
    return { data: hex(data) }
  },
  async ss_feed(c) {
    const ss = secretStream()
    state.raw.push(buf(c.data))
    await tick()
    const messages = state.received.splice(0)
    return { messages, destroyed: ss.destroyed }
  },
  ss_send(c) {
    const ss = secretStream()
    return { data: hex(ss._boxMessage(buf(c.message))) }
  },
  ss_recv(c) {
    secretStream()._onmessage(buf(c.data))
    return { message: state.datagrams.shift() || null }
  }
}

async function vectors() {
  const seed = (n) => hex(b4a.alloc(32, n))
  const server = HyperDHT.keyPair(buf(seed(0x22)))
  const payloadI = { firewall: 1, addresses4: [{ host: '127.0.0.1', port: 40005 }], udx: { id: 5, seq: 0 }, secretStream: true }
  const payloadR = { firewall: 2, addresses4: [{ host: '127.0.0.1', port: 40404 }], udx: { id: 7, seq: 0, reusableSocket: true }, secretStream: true, relayAddresses: [{ host: '127.0.0.1', port: 49737 }] }
  const i = ops.initiate({ seed: seed(0x33), remote: hex(server.publicKey), eseed: seed(0x44), payload: payloadI })
  const initWrap = state.wrap
  const r = ops.respond({ seed: seed(0x22), msg1: i.msg1, eseed: seed(0x55), payload: payloadR })
  const respWrap = state.wrap
  state.wrap = initWrap
  const f = ops.finish({ msg2: r.msg2 })
  // secret-stream frames written by the initiator (header + 3 messages incl. a keepalive)
  const ss = await ops.ss_write({ messages: [hex(b4a.from('hello')), '', hex(b4a.alloc(3000, 7))] })
  const dgram = ops.ss_send({ message: hex(b4a.from('datagram')) })
  void respWrap
  return {
    initiatorSeed: seed(0x33), responderSeed: seed(0x22), initiatorEphemeralSeed: seed(0x44), responderEphemeralSeed: seed(0x55),
    initiatorPayload: payloadI, responderPayload: payloadR,
    msg1: i.msg1, msg2: r.msg2, initiatorKeys: f.keys, responderKeys: r.keys,
    decodedByResponder: r.payload, decodedByInitiator: f.payload,
    initiatorStream: ss.data, streamMessages: ['68656c6c6f', hex(b4a.alloc(3000, 7))],
    initiatorDatagram: dgram.data, datagramMessage: hex(b4a.from('datagram'))
  }
}

if (process.argv[2] === 'vectors') {
  vectors().then((v) => { process.stdout.write(JSON.stringify(v, null, 1) + '\n'); process.exit(0) })
} else {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', async (line) => {
    const c = JSON.parse(line)
    let out
    try {
      out = await ops[c.op](c)
    } catch (err) {
      out = { error: err.message }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  })
}

'use strict'
// A hyperdht-style secure connection in Node: NoiseWrap handshake (messages over
// stdin/stdout JSON lines) + udx-native stream + NoiseSecretStream with the 5 s
// keepalive hyperdht uses. Echoes every message it receives; for the Python
// Connection interop test.
//
// argv: role ("initiator" | "responder"). Lines:
//  -> {port, id, publicKey}                      (our UDX socket, stream id, static key)
//  <- initiator: {remotePublicKey, remoteId, port}  -> {msg1};  <- {msg2}
//  <- responder: {msg1, remoteId, port}             -> {msg2}
//  -> {connected: true} ... -> {closed: true, messages: N, bytes: N}
const UDX = require('udx-native')
const b4a = require('b4a')
const readline = require('readline')
const NoiseWrap = require('hyperdht/lib/noise-wrap')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const HyperDHT = require('hyperdht')

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')
const role = process.argv[2]
const keyPair = HyperDHT.keyPair()
const udx = new UDX()
const sock = udx.createSocket()
sock.bind(0, '127.0.0.1')
const myId = 1 + Math.floor(Math.random() * 0xfffffff0)
const raw = udx.createStream(myId)
out({ port: sock.address().port, id: myId, publicKey: b4a.toString(keyPair.publicKey, 'hex') })

const lines = []
const waiters = []
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  const v = JSON.parse(l)
  if (waiters.length) waiters.shift()(v)
  else lines.push(v)
})
const next = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => waiters.push(resolve)))
const payload = { error: 0, firewall: 1, holepunch: null, addresses4: [], addresses6: [], udx: { reusableSocket: false, id: myId, seq: 0 }, secretStream: {}, relayThrough: null }

async function main() {
  const first = await next()
  let wrap
  if (role === 'initiator') {
    wrap = new NoiseWrap(keyPair, b4a.from(first.remotePublicKey, 'hex'))
    out({ msg1: b4a.toString(wrap.send(payload), 'hex') })
    const second = await next()
    wrap.recv(b4a.from(second.msg2, 'hex'))
  } else {
    wrap = new NoiseWrap(keyPair, null)
    wrap.recv(b4a.from(first.msg1, 'hex'))
    out({ msg2: b4a.toString(wrap.send(payload), 'hex') })
  }
  raw.connect(sock, first.remoteId, first.port, '127.0.0.1')
  const ss = new NoiseSecretStream(wrap.isInitiator, raw, { handshake: wrap.final(), keepAlive: 5000 })
  let messages = 0
  let bytes = 0
  ss.on('data', (m) => {
    messages++
    bytes += m.byteLength
    ss.write(m)
  })
  ss.on('end', () => ss.end())
  ss.on('error', (err) => out({ error: err.message }))
  ss.on('close', () => {
    out({ closed: true, messages, bytes })
    setTimeout(() => process.exit(0), 50)
  })
  out({ connected: true })
}

main().catch((err) => {
  out({ error: err.message })
  process.exit(1)
})

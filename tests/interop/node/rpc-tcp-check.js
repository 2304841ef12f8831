'use strict'
// CODEC CHECK (not the product transport): the real @hyperswarm/rpc 3.5.0
// (Client and Server classes, protomux-rpc, protomux, @hyperswarm/secret-stream)
// against mesh.rpc, run by scripts/rpc_tcp_peer.py over the TCP stand-in in
// tests/interop/rpc_tcp_adapter.py. Ported from rpc-reference/rpc-interop.js.
//
// The only thing replaced on the Node side is the `dht` object handed to
// @hyperswarm/rpc: its connect()/createServer() run hyperdht's own NoiseWrap
// (Noise IK, same payloads) over a TCP connection on 127.0.0.1 instead of
// routing PEER_HANDSHAKE through the DHT, and then start a
// NoiseSecretStream on that connection exactly as hyperdht does on its UDX
// stream (start(rawStream, { handshake })). Everything above is unmodified.
//
//  A. Node RPC client -> Python mesh.rpc server (echo, JSON, msgpack, errors, timeout, event, 1 MB)
//  B. Python mesh.rpc client -> Node RPC server
//
// Usage: node rpc-tcp-check.js [python]   (run from anywhere; default python3)

const { spawn } = require('child_process')
const net = require('net')
const path = require('path')
const readline = require('readline')
const { EventEmitter } = require('events')
const b4a = require('b4a')
const HyperDHT = require('hyperdht')
const NoiseWrap = require('hyperdht/lib/noise-wrap')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const RPC = require('@hyperswarm/rpc')

const msgpack = require('msgpackr')

const python = process.argv[2] || 'python3'
const CAP = b4a.alloc(32, 0x55)
let failed = 0
function check(cond, what) {
  console.log((cond ? 'ok   ' : 'FAIL ') + what)
  if (!cond) failed++
}

const noisePayload = {
  error: 0,
  firewall: 1,
  holepunch: null,
  addresses4: [{ host: '127.0.0.1', port: 1 }],
  addresses6: [],
  udx: { reusableSocket: false, id: 1, seq: 0 },
  secretStream: {},
  relayThrough: null
}

const u16 = (b) => b4a.concat([b4a.from([b.byteLength & 255, b.byteLength >> 8]), b])

// read one uint16-framed message, return it and whatever came after it
function readU16Frame(sock) {
  return new Promise((resolve, reject) => {
    let buf = b4a.alloc(0)
    const ondata = (d) => {
      buf = b4a.concat([buf, d])
      if (buf.byteLength < 2) return
      const n = buf[0] + buf[1] * 256
      if (buf.byteLength < 2 + n) return
      sock.removeListener('data', ondata)
      sock.removeListener('error', reject)
      resolve({ msg: buf.subarray(2, 2 + n), rest: buf.subarray(2 + n) })
    }
    sock.on('data', ondata)
    sock.on('error', reject)
  })
}

// Stand-in for hyperdht: same Noise IK + secret-stream, TCP instead of DHT routing + UDX.
class LocalDHT {
  constructor(keyPair, portOf) {
    this.defaultKeyPair = keyPair
    this.portOf = portOf // publicKey hex -> TCP port
  }

  connect(remotePublicKey, opts = {}) {
    const keyPair = opts.keyPair || this.defaultKeyPair
    const ss = new NoiseSecretStream(true, null, {
      publicKey: keyPair.publicKey,
      remotePublicKey,
      autoStart: false,
      keepAlive: 5000
    })
    const sock = net.connect(this.portOf(b4a.toString(remotePublicKey, 'hex')), '127.0.0.1')
    ;(async () => {
      const nw = new NoiseWrap(keyPair, remotePublicKey)
      sock.write(u16(nw.send(noisePayload)))
      const { msg, rest } = await readU16Frame(sock)
      nw.recv(msg)
      ss.start(sock, { handshake: nw.final(), data: rest.byteLength ? rest : null })
    })().catch((err) => ss.destroy(err))
    return ss
  }

  createServer() {
    const server = new EventEmitter()
    server.closed = false
    server.listen = async (keyPair = this.defaultKeyPair) => {
      server.publicKey = keyPair.publicKey
      server.tcp = net.createServer(async (sock) => {
        try {
          const { msg, rest } = await readU16Frame(sock)
          const nw = new NoiseWrap(keyPair, null)
          nw.recv(msg)
          sock.write(u16(nw.send(noisePayload)))
          const ss = new NoiseSecretStream(false, null, { publicKey: keyPair.publicKey, autoStart: false, keepAlive: 5000 })
          ss.start(sock, { handshake: nw.final(), data: rest.byteLength ? rest : null })
          server.emit('connection', ss)
        } catch (err) {
          sock.destroy()
        }
      })
      await new Promise((resolve) => server.tcp.listen(0, '127.0.0.1', resolve))
      server.emit('listening')
    }
    server.address = () => server.tcp.address()
    server.close = async () => {
      server.closed = true
      await new Promise((resolve) => server.tcp.close(resolve))
      server.emit('close')
    }
    return server
  }

  async destroy() {}
}

function startPython(args) {
  const root = path.join(__dirname, '..', '..', '..')
  const child = spawn(python, [path.join(root, 'scripts', 'rpc_tcp_peer.py'), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, PYTHONPATH: root }
  })
  const rl = readline.createInterface({ input: child.stdout })
  const lines = []
  let waiter = null
  rl.on('line', (line) => {
    const v = JSON.parse(line)
    if (waiter) {
      const w = waiter
      waiter = null
      w(v)
    } else lines.push(v)
  })
  const next = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => (waiter = resolve)))
  return { child, next }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const withTimeout = (p, ms, what) => Promise.race([p, sleep(ms).then(() => { throw new Error('timeout: ' + what) })])

async function partA() {
  console.log('# A: Node @hyperswarm/rpc client -> Python mesh.rpc server')
  const py = startPython(['serve', b4a.toString(b4a.alloc(32, 0x44), 'hex')])
  const info = await withTimeout(py.next(), 10000, 'python serve start')
  const serverKey = b4a.from(info.publicKey, 'hex')
  check(b4a.equals(serverKey, HyperDHT.keyPair(b4a.alloc(32, 0x44)).publicKey), 'Python server key = hyperdht keyPair(seed)')

  const dht = new LocalDHT(HyperDHT.keyPair(b4a.alloc(32, 0x66)), () => info.port)
  const rpc = new RPC({ dht })
  const req = (method, value, opts) => withTimeout(rpc.request(serverKey, method, value, opts), 10000, method)

  check(b4a.toString(await req('echo', b4a.from('hello from node'))) === 'hello from node', 'echo: raw buffer round trip')
  const j = JSON.parse(b4a.toString(await req('jecho', b4a.from(JSON.stringify({ a: 1, b: 'x' })))))
  check(j.echo.a === 1 && j.echo.b === 'x' && j.from === 'python', 'jecho: hp-svc-facs-net style JSON in/out ' + JSON.stringify(j))
  const jerr = JSON.parse(b4a.toString(await req('jecho', b4a.from('not json'))))
  check(jerr === '[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT', 'jecho: bad JSON answered with the [HRPC_ERR]= convention')
  const m = msgpack.unpack(await req('mecho', msgpack.pack({ n: 42, list: [1, 'two'], bin: b4a.from([1, 2, 3]) })))
  check(m.echo.n === 42 && m.echo.list[1] === 'two' && b4a.equals(m.echo.bin, b4a.from([1, 2, 3])) && m.from === 'python', 'mecho: msgpack payload (msgpackr in Node, msgpack in Python)')

  for (const [name, method, opts, code] of [
    ['unknown method', 'nope', {}, 'UNKNOWN_METHOD'],
    ['handler error', 'fail', {}, 'REQUEST_ERROR'],
    ['timeout', 'slow', { timeout: 300 }, 'TIMEOUT_EXCEEDED']
  ]) {
    try {
      await req(method, b4a.from('x'), opts)
      check(false, name + ': should have rejected')
    } catch (err) {
      const extra = err.cause ? ` (cause: ${err.cause.message} code=${err.cause.code})` : ''
      const causeOk = method !== 'fail' || (err.cause && err.cause.message === 'python says no' && err.cause.code === 'E_NOPE')
      check(err.code === code && causeOk, `${name}: Node got ${err.code}: ${err.message}${extra}`)
    }
  }
  rpc.event(serverKey, 'note', b4a.from('event from node'))
  await sleep(200)
  const events = JSON.parse(b4a.toString(await req('events', null)))
  check(events.includes('event from node'), 'event (id 0) reached the Python handler, no response expected: ' + JSON.stringify(events))
  const big = b4a.alloc(1000000)
  for (let i = 0; i < big.byteLength; i++) big[i] = i % 251
  check(b4a.equals(await req('echo', big), big), 'echo: 1 MB buffer round trip')
  check((await req('echo', b4a.alloc(0))) === null, 'echo: empty buffer -> null (optionalBuffer)')
  check(rpc._pool.size === 1, 'all calls reused one pooled connection')
  await rpc.destroy()
  py.child.kill()

  // capability handshake: Python server with a capability, Node client with the right / a wrong one
  const pyCap = startPython(['serve', b4a.toString(b4a.alloc(32, 0x45), 'hex'), b4a.toString(CAP, 'hex')])
  const capInfo = await withTimeout(pyCap.next(), 10000, 'python cap serve start')
  const capKey = b4a.from(capInfo.publicKey, 'hex')
  const rpc2 = new RPC({ dht: new LocalDHT(HyperDHT.keyPair(b4a.alloc(32, 0x67)), () => capInfo.port) })
  const good = rpc2.connect(capKey, { capability: CAP })
  check(b4a.toString(await withTimeout(good.request('echo', b4a.from('cap')), 10000, 'cap echo')) === 'cap', 'capability: Node client with the right capability is answered by Python')
  const bad = rpc2.connect(capKey, { capability: b4a.alloc(32, 0) })
  try {
    await withTimeout(bad.request('echo', b4a.from('cap')), 10000, 'bad cap echo')
    check(false, 'capability: wrong capability should fail')
  } catch (err) {
    check(err.code === 'CHANNEL_CLOSED' || err.code === 'CHANNEL_DESTROYED' || /capability/.test(err.message), 'capability: Node client with a wrong capability is refused: ' + (err.code || err.message))
  }
  await rpc2.destroy()
  pyCap.child.kill()
}

async function partB() {
  console.log('# B: Python mesh.rpc client -> Node @hyperswarm/rpc server')
  const keyPair = HyperDHT.keyPair(b4a.alloc(32, 0x77))
  const dht = new LocalDHT(keyPair, () => null)
  const rpc = new RPC({ dht, keyPair })
  const server = rpc.createServer()
  const events = []
  server.respond('echo', (req) => req)
  server.respond('jecho', (req) => b4a.from(JSON.stringify({ echo: JSON.parse(b4a.toString(req)), from: 'node' })))
  server.respond('mecho', (req) => msgpack.pack({ echo: msgpack.unpack(req), from: 'node' }))
  server.respond('fail', () => {
    const err = new Error('node says no')
    err.code = 'E_NODE'
    throw err
  })
  server.respond('slow', async (req) => {
    await sleep(1500)
    return req
  })
  server.respond('note', (req) => {
    events.push(b4a.toString(req))
  })
  server.respond('events', () => b4a.from(JSON.stringify(events)))
  await server.listen()
  const py = startPython(['call', String(server.address().port), b4a.toString(server.publicKey, 'hex')])
  const r = await withTimeout(py.next(), 15000, 'python call results')
  check(r.echo === 'hello from python', 'echo from Python answered by Node')
  check(r.empty === 'None', 'empty buffer arrives as null (optionalBuffer) and comes back as null')
  check(r.jecho.echo.a[1] === 2 && r.jecho.from === 'node', 'jecho JSON: ' + JSON.stringify(r.jecho))
  check(r.mecho.echo.n === 42 && r.mecho.from === 'node', 'mecho msgpack (mesh.rpc codec <-> msgpackr): ' + JSON.stringify(r.mecho))
  check(r.unknown.code === 'UNKNOWN_METHOD', 'unknown method -> ' + JSON.stringify(r.unknown))
  check(r.fail.wire_code === 'REQUEST_ERROR' && r.fail.code === 'E_NODE' && r.fail.message === 'node says no', 'handler error with code -> ' + JSON.stringify(r.fail))
  check(r.timeout.code === 'TIMEOUT_EXCEEDED', 'Python-side timeout -> ' + JSON.stringify(r.timeout))
  check(r.events.includes('event from python'), 'event from Python reached the Node handler')
  check(r.big === true, '1 MB echo from Python')
  check(r.burst === true && r.mux.batches_sent > 0 && r.mux.batches_received > 0, '50 concurrent requests from Python sent as protomux batches, Node answered with batches: ' + JSON.stringify(r.mux))

  // capability handshake: Node server with a capability, Python client with the right / a wrong one
  const capServer = rpc.createServer({ capability: CAP })
  capServer.respond('echo', (req) => req)
  await capServer.listen(HyperDHT.keyPair(b4a.alloc(32, 0x78)))
  const pyc = startPython(['capcall', String(capServer.address().port), b4a.toString(capServer.publicKey, 'hex'), b4a.toString(CAP, 'hex')])
  const rc = await withTimeout(pyc.next(), 15000, 'python capcall results')
  check(rc.right === 'cap', 'capability: Python client with the right capability is answered')
  check(typeof rc.wrong === 'object', 'capability: Python client with a wrong capability is refused -> ' + JSON.stringify(rc.wrong))
  await sleep(200)
  await rpc.destroy()
  py.child.kill()
}

async function main() {
  await partA()
  await partB()
  console.log(failed ? `FAILED: ${failed} checks` : 'ALL OK')
  process.exit(failed ? 1 : 0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

'use strict'
// A real Node hyperswarm / hyperdht peer, driven by JSON lines on stdin, for the
// Python interop tests and benchmarks (tests/interop/test_swarm_node.py,
// scripts/bench/connect.py). Everything binds to 127.0.0.1 and only the given
// bootstrap list is used.
//
// Usage: node swarm-peer.js --bootstrap 127.0.0.1:PORT[,..] [--seed HEX32]
//                           [--allow HEX,HEX]   (firewall: refuse other keys)
//                           [--open]            (tell the DHT it is reachable, as
//                                                our Python nodes find out on loopback)
//
// Commands (one JSON object per line):
//   {"cmd":"join","topic":HEX,"server":true,"client":true}  -> {"event":"flushed","topic":HEX}
//   {"cmd":"leave","topic":HEX}                              -> {"event":"left","topic":HEX}
//   {"cmd":"connect","public_key":HEX}    dht.connect by key alone (no swarm)
//   {"cmd":"listen"}                      dht.createServer().listen(keyPair) -> {"event":"listening"}
//   {"cmd":"send","peer":HEX,"bytes":N}   write N pattern bytes -> {"event":"sent","sha256":..}
//   {"cmd":"expect","peer":HEX,"bytes":N} -> {"event":"received","bytes":N,"sha256":..} once N arrived
//   {"cmd":"echo"}                        echo every message back (RTT benchmarks)
//   {"cmd":"ping","peer":HEX,"count":N,"size":S}  N round trips -> {"event":"rtt","ms":[...]}
//   {"cmd":"bench","public_key":HEX,"connects":N,"pings":N,"size":S,"bytes":N}
//        against an echoing server: N connects by key (+1-byte echo), N pings, one
//        echoed bulk transfer -> {"event":"bench","setup_ms":[..],"rtt_ms":[..],"bulk_ms":x}
//   {"cmd":"bench-join","topics":[HEX,..]}  per topic: join as client, time to the first
//        connection, leave, close it -> {"event":"bench-join","ms":[..]}
//   {"cmd":"close","peer":HEX}            destroy that connection
//   {"cmd":"exit"}                        destroy everything and exit
// Events also: {"event":"ready",...}, {"event":"connection","public_key":HEX,"topics":[HEX],
//   "initiator":bool,"t":ms}, {"event":"close","public_key":HEX}, {"event":"error","message":..}

const crypto = require('crypto')
const readline = require('readline')
const b4a = require('b4a')
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name)
  return i === -1 ? dflt : process.argv[i + 1]
}

function emit(obj) {
  process.stdout.write(JSON.stringify({ t: performance.now(), ...obj }) + '\n')
}

const bootstrap = arg('bootstrap', '')
  .split(',')
  .filter(Boolean)
  .map((s) => {
    const [host, port] = s.split(':')
    if (!host.startsWith('127.')) throw new Error('loopback bootstrap only')
    return { host, port: Number(port) }
  })
if (bootstrap.length === 0) throw new Error('--bootstrap is required')

const seed = arg('seed', null)
const keyPair = HyperDHT.keyPair(seed ? b4a.from(seed, 'hex') : crypto.randomBytes(32))
const allow = arg('allow', null)
const allowed = allow === null ? null : new Set(allow.split(',').filter(Boolean))

function firewall(remotePublicKey) {
  if (allowed === null) return false
  const ok = allowed.has(b4a.toString(remotePublicKey, 'hex'))
  if (!ok) emit({ event: 'refused', public_key: b4a.toString(remotePublicKey, 'hex') })
  return !ok
}

const dht = new HyperDHT({
  bootstrap,
  host: '127.0.0.1',
  ...(process.argv.includes('--open') ? { firewalled: false } : {})
})
const swarm = new Hyperswarm({ dht, keyPair, firewall })
const conns = new Map() // hex key -> { conn, received, hash, expect }
let echo = false
let server = null

function pattern(n) {
  // Deterministic bytes both languages can regenerate: sha256 counter blocks.
  const out = Buffer.alloc(n)
  let off = 0
  for (let i = 0; off < n; i++) {
    const block = crypto.createHash('sha256').update('mesh-pattern:' + i).digest()
    off += block.copy(out, off)
  }
  return out
}

function track(conn, topics) {
  const key = b4a.toString(conn.remotePublicKey, 'hex')
  const st = { conn, received: 0, hash: crypto.createHash('sha256'), expect: null, pong: null }
  conns.set(key, st)
  conn.on('error', (err) => emit({ event: 'conn-error', public_key: key, message: err.message }))
  conn.on('data', (data) => {
    if (st.pong) return st.pong(data)
    if (echo) {
      conn.write(data)
      return
    }
    st.received += data.length
    st.hash.update(data)
    checkExpect(key, st)
  })
  conn.on('close', () => {
    if (conns.get(key) === st) conns.delete(key)
    emit({ event: 'close', public_key: key })
  })
  emit({
    event: 'connection',
    public_key: key,
    topics: topics.map((t) => b4a.toString(t, 'hex')),
    initiator: conn.isInitiator
  })
}

function checkExpect(key, st) {
  if (st.expect !== null && st.received >= st.expect) {
    st.expect = null
    emit({ event: 'received', peer: key, bytes: st.received, sha256: st.hash.copy().digest('hex') })
  }
}

swarm.on('connection', (conn, info) => track(conn, info.topics || []))

async function send(st, n) {
  const data = pattern(n)
  const chunk = 65536
  for (let off = 0; off < n; off += chunk) {
    if (!st.conn.write(data.subarray(off, Math.min(n, off + chunk)))) {
      await new Promise((resolve) => st.conn.once('drain', resolve))
    }
  }
  return crypto.createHash('sha256').update(data).digest('hex')
}

async function ping(st, count, size) {
  const msg = Buffer.alloc(size, 7)
  const ms = []
  for (let i = 0; i < count; i++) {
    let got = 0
    const done = new Promise((resolve) => {
      st.pong = (d) => {
        got += d.length
        if (got >= size) resolve()
      }
    })
    const t0 = performance.now()
    st.conn.write(msg)
    await done
    ms.push(performance.now() - t0)
  }
  st.pong = null
  return ms
}

function echoOnce(conn, n) {
  // resolves after n bytes came back on conn
  return new Promise((resolve, reject) => {
    let got = 0
    const ondata = (d) => {
      got += d.length
      if (got >= n) {
        conn.removeListener('data', ondata)
        conn.removeListener('close', onclose)
        resolve()
      }
    }
    const onclose = () => reject(new Error('closed'))
    conn.on('data', ondata)
    conn.on('close', onclose)
  })
}

async function openByKey(publicKey) {
  const conn = dht.connect(publicKey, { keyPair })
  let error = null
  conn.on('error', (err) => {
    error = err
  })
  await new Promise((resolve, reject) => {
    conn.once('open', resolve)
    conn.once('close', () => reject(error || new Error('closed before open')))
  })
  return conn
}

async function bench(msg) {
  const pk = b4a.from(msg.public_key, 'hex')
  const setup = []
  for (let i = 0; i < (msg.connects || 10); i++) {
    const t0 = performance.now()
    const conn = await openByKey(pk)
    const back = echoOnce(conn, 1)
    conn.write(b4a.from([1]))
    await back
    setup.push(performance.now() - t0)
    conn.destroy()
  }
  const conn = await openByKey(pk)
  const rtt = []
  const ping = Buffer.alloc(msg.size || 64, 7)
  for (let i = 0; i < (msg.pings || 200); i++) {
    const back = echoOnce(conn, ping.length)
    const t0 = performance.now()
    conn.write(ping)
    await back
    rtt.push(performance.now() - t0)
  }
  const n = msg.bytes || 10000000
  const data = pattern(n)
  const t0 = performance.now()
  const back = echoOnce(conn, n)
  for (let off = 0; off < n; off += 65536) {
    if (!conn.write(data.subarray(off, Math.min(n, off + 65536)))) {
      await new Promise((resolve) => conn.once('drain', resolve))
    }
  }
  await back
  const bulk = performance.now() - t0
  conn.destroy()
  return { setup_ms: setup, rtt_ms: rtt, bulk_ms: bulk, bytes: n }
}

async function benchJoin(topics) {
  const ms = []
  for (const hex of topics) {
    const topic = b4a.from(hex, 'hex')
    const t0 = performance.now()
    const opened = new Promise((resolve) => swarm.once('connection', resolve))
    swarm.join(topic, { server: false, client: true })
    const conn = await opened
    ms.push(performance.now() - t0)
    await swarm.leave(topic)
    const closed = new Promise((resolve) => conn.once('close', resolve))
    conn.destroy()
    await closed
  }
  return ms
}

async function handle(msg) {
  const get = (k) => {
    const st = conns.get(k)
    if (!st) throw new Error('no connection to ' + k)
    return st
  }
  switch (msg.cmd) {
    case 'join': {
      const d = swarm.join(b4a.from(msg.topic, 'hex'), { server: msg.server !== false, client: msg.client !== false })
      await d.flushed()
      if (msg.client !== false) await swarm.flush()
      return emit({ event: 'flushed', topic: msg.topic })
    }
    case 'leave':
      await swarm.leave(b4a.from(msg.topic, 'hex'))
      return emit({ event: 'left', topic: msg.topic })
    case 'connect': {
      const conn = dht.connect(b4a.from(msg.public_key, 'hex'), { keyPair })
      conn.on('open', () => track(conn, []))
      conn.on('error', (err) => emit({ event: 'connect-error', public_key: msg.public_key, code: err.code, message: err.message }))
      return
    }
    case 'listen': {
      server = dht.createServer({ firewall }, (conn) => track(conn, []))
      await server.listen(keyPair)
      return emit({ event: 'listening', public_key: b4a.toString(keyPair.publicKey, 'hex') })
    }
    case 'send': {
      const sha256 = await send(get(msg.peer), msg.bytes)
      return emit({ event: 'sent', peer: msg.peer, bytes: msg.bytes, sha256 })
    }
    case 'expect': {
      const st = get(msg.peer)
      st.expect = msg.bytes
      return checkExpect(msg.peer, st)
    }
    case 'echo':
      echo = true
      return emit({ event: 'echoing' })
    case 'ping': {
      const ms = await ping(get(msg.peer), msg.count || 100, msg.size || 64)
      return emit({ event: 'rtt', peer: msg.peer, ms })
    }
    case 'bench':
      return emit({ event: 'bench', ...(await bench(msg)) })
    case 'bench-join':
      return emit({ event: 'bench-join', ms: await benchJoin(msg.topics) })
    case 'close':
      get(msg.peer).conn.destroy()
      return
    case 'exit':
      if (server) await server.close()
      await swarm.destroy()
      emit({ event: 'exited' })
      process.exit(0)
  }
  throw new Error('unknown command ' + msg.cmd)
}

async function main() {
  await dht.fullyBootstrapped()
  emit({
    event: 'ready',
    public_key: b4a.toString(keyPair.publicKey, 'hex'),
    port: dht.address().port,
    firewalled: dht.firewalled
  })
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    let msg
    try {
      msg = JSON.parse(line)
    } catch {
      return emit({ event: 'error', message: 'bad json' })
    }
    handle(msg).catch((err) => emit({ event: 'error', cmd: msg.cmd, message: err.message }))
  })
  rl.on('close', () => {
    swarm.destroy().then(() => process.exit(0))
  })
}

main().catch((err) => {
  emit({ event: 'fatal', message: err.message })
  process.exit(1)
})

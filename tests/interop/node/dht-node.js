'use strict'
// A Node hyperdht peer driven by JSON lines on stdin; one JSON reply per line on stdout.
// Used by tests/interop/test_dht_node.py and scripts/bench/dht.py.
//
// Every command is {"rid": N, "cmd": NAME, ...}; every reply {"rid": N, "ok": true|false, "ms": elapsed, ...}.
//   testnet {size, bootstrap?: [[host, port]...]}   persistent nodes (first bootstraps the rest
//                                                    unless bootstrap is given) -> {nodes: [port...], bootstrap}
//   node {ephemeral?: bool, bootstrap?}             one more node -> {node: index, port}
//   announce {node, topic, seed, relays?}           -> {}
//   unannounce {node, topic, seed}
//   lookup {node, topic}                             -> {peers: [{publicKey, relayAddresses}], requests}
//   mutable_put {node, seed, value, seq} / mutable_get {node, publicKey} -> {seq, value}
//   immutable_put {node, value} -> {hash} / immutable_get {node, hash} -> {value}
//   listen {node, seed} -> {publicKey}; connect {node, publicKey, text} -> {echoed}
//   memory {}                                        -> {rss, heapUsed}
//   destroy {}                                       then the process exits
// Values and keys are hex. Only 127.0.0.0/8 is ever sent to.

const readline = require('readline')
const b4a = require('b4a')
const UDXSocket = require('udx-native/lib/socket')
const HyperDHT = require('hyperdht')

for (const fn of ['send', 'trySend']) {
  const orig = UDXSocket.prototype[fn]
  UDXSocket.prototype[fn] = function (buffer, port, host, ttl) {
    if (!String(host).startsWith('127.')) throw new Error('refusing to send to ' + host)
    return orig.call(this, buffer, port, host, ttl)
  }
}

const nodes = []
let bootstrap = []
const hex = (b) => b4a.toString(b, 'hex')
const buf = (h) => b4a.from(h, 'hex')
const addr = (a) => ({ host: a[0], port: a[1] })
const requests = (n) => n.io.stats.requests.total

async function makeNode(opts) {
  const node = new HyperDHT({ host: '127.0.0.1', bootstrap: opts.bootstrap || bootstrap, ...opts.extra })
  await node.fullyBootstrapped()
  nodes.push(node)
  return node
}

const handlers = {
  async testnet(msg) {
    const given = (msg.bootstrap || []).map(addr)
    bootstrap = given.slice()
    const ports = []
    for (let i = 0; i < msg.size; i++) {
      const first = i === 0 && given.length === 0
      const node = await makeNode({ bootstrap: first ? [] : bootstrap, extra: { ephemeral: false, firewalled: false } })
      if (first) bootstrap.push({ host: '127.0.0.1', port: node.address().port })
      ports.push(node.address().port)
    }
    return { nodes: ports, bootstrap: bootstrap.map((b) => [b.host, b.port]) }
  },
  async node(msg) {
    const extra = { ephemeral: msg.ephemeral !== false }
    if (msg.ephemeral === false) extra.firewalled = false
    const node = await makeNode({ bootstrap: msg.bootstrap ? msg.bootstrap.map(addr) : bootstrap, extra })
    return { node: nodes.length - 1, port: node.address().port }
  },
  async announce(msg) {
    const node = nodes[msg.node]
    const kp = HyperDHT.keyPair(buf(msg.seed))
    const before = requests(node)
    await node.announce(buf(msg.topic), kp, (msg.relays || []).map(addr)).finished()
    return { requests: requests(node) - before }
  },
  async unannounce(msg) {
    await nodes[msg.node].unannounce(buf(msg.topic), HyperDHT.keyPair(buf(msg.seed)))
    return {}
  },
  async lookup(msg) {
    const node = nodes[msg.node]
    const before = requests(node)
    const peers = []
    for await (const r of node.lookup(buf(msg.topic))) {
      for (const p of r.peers) peers.push({ publicKey: hex(p.publicKey), relayAddresses: p.relayAddresses.map((a) => [a.host, a.port]) })
    }
    return { peers, requests: requests(node) - before }
  },
  async mutable_put(msg) {
    const kp = HyperDHT.keyPair(buf(msg.seed))
    const r = await nodes[msg.node].mutablePut(kp, buf(msg.value), { seq: msg.seq || 0 })
    return { publicKey: hex(r.publicKey), seq: r.seq }
  },
  async mutable_get(msg) {
    const r = await nodes[msg.node].mutableGet(buf(msg.publicKey), { seq: msg.seq || 0 })
    return r ? { seq: r.seq, value: hex(r.value) } : { seq: null, value: null }
  },
  async immutable_put(msg) {
    const r = await nodes[msg.node].immutablePut(buf(msg.value))
    return { hash: hex(r.hash) }
  },
  async immutable_get(msg) {
    const r = await nodes[msg.node].immutableGet(buf(msg.hash))
    return { value: r ? hex(r.value) : null }
  },
  async listen(msg) {
    // an echo server on the node's key pair (announces itself under hash(publicKey))
    const server = nodes[msg.node].createServer((conn) => {
      conn.on('data', (d) => conn.write(d))
      conn.on('error', () => {})
    })
    await server.listen(HyperDHT.keyPair(buf(msg.seed)))
    return { publicKey: hex(server.publicKey) }
  },
  async connect(msg) {
    const conn = nodes[msg.node].connect(buf(msg.publicKey))
    const echoed = await new Promise((resolve, reject) => {
      conn.on('error', reject)
      conn.on('open', () => conn.write(b4a.from(msg.text)))
      conn.on('data', (d) => resolve(b4a.toString(d)))
    })
    conn.destroy()
    return { echoed }
  },
  async memory() {
    const m = process.memoryUsage()
    return { rss: m.rss, heapUsed: m.heapUsed, external: m.external }
  },
  async destroy() {
    for (let i = nodes.length - 1; i >= 0; i--) await nodes[i].destroy()
    return {}
  }
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
let chain = Promise.resolve()
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let msg
  try {
    msg = JSON.parse(line)
  } catch {
    out({ ok: false, error: 'bad json' })
    return
  }
  // commands run one at a time so replies come back in order
  chain = chain.then(async () => {
    const start = process.hrtime.bigint()
    try {
      const res = await handlers[msg.cmd](msg)
      out({ rid: msg.rid, ok: true, ms: Number(process.hrtime.bigint() - start) / 1e6, ...res })
    } catch (err) {
      out({ rid: msg.rid, ok: false, error: String(err && err.stack ? err.stack : err) })
    }
    if (msg.cmd === 'destroy') process.exit(0)
  })
})
process.stdin.on('end', () => chain.then(() => process.exit(0)))

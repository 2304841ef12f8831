'use strict'
// RPC benchmark client: real @hyperswarm/rpc on real hyperdht against a server
// (rpc-server.js or a Python mesh.rpc server), 127.0.0.1 only.
//
//   node rpc-bench.js --bootstrap 127.0.0.1:PORT --key HEX [--n 3000] [--inflight 1,64] [--size 100]
//
// Echoes --size-byte buffers; prints one JSON line per in-flight level:
// {"inflight", "n", "rps", "p50_ms", "p99_ms"}.

const b4a = require('b4a')
const RPC = require('@hyperswarm/rpc')
const { args, makeDHT, emit } = require('./rpc-common')

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]
}

async function level(client, n, inflight, value) {
  const lat = []
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      const t = process.hrtime.bigint()
      await client.request('echo', value)
      lat.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
  }
  const t0 = process.hrtime.bigint()
  await Promise.all(Array.from({ length: inflight }, worker))
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  lat.sort((a, b) => a - b)
  return { inflight, n, rps: n / secs, p50_ms: pct(lat, 50), p99_ms: pct(lat, 99) }
}

async function main() {
  const opts = args()
  const { dht } = await makeDHT(opts)
  const key = b4a.from(opts.key, 'hex')
  const rpc = new RPC({ dht })
  const n = Number(opts.n || 3000)
  const value = b4a.alloc(Number(opts.size || 100), 7)
  // an unpooled client: the pool's linger timer can destroy a connection whose
  // first request is still waiting for the DHT (RPC.md 2.5)
  let client = null
  for (let attempt = 0; client === null; attempt++) {
    const c = rpc.connect(key)
    try {
      await c.request('echo', value, { timeout: 10000 }) // connect + first call
      client = c
    } catch (err) {
      c.destroy()
      if (attempt >= 5) throw err
    }
  }
  await level(client, Math.min(500, n), 8, value) // warm-up
  for (const inflight of String(opts.inflight || '1,64').split(',').map(Number)) {
    emit(await level(client, n, inflight, value))
  }
  client.destroy()
  await rpc.destroy()
  await dht.destroy()
  process.exit(0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

'use strict'
// A Node caller of the books worker, written the way hp-svc-facs-net services
// call workers: real hyperdht + @hyperswarm/rpc, the worker found by looking its
// topic up on the DHT, JSON text as the request value, JSON text back, errors
// in-band as "[HRPC_ERR]=message". Used by tests/interop/test_book_node.py.
// Everything binds to 127.0.0.1 and only the given bootstrap list is used.
//
// Usage: node book-client.js --bootstrap 127.0.0.1:PORT[,..]
//          (--topic HEX32 | --namespace NS --name books) [--timeout-ms 20000]
// The topic key is BLAKE2b-256("<namespace>:<name>") as in mesh/topics.py.
//
// Prints one JSON object per line:
//   {"event":"found","public_key":HEX,"lookups":N}     first peer announcing the topic
//   {"event":"connected","attempts":N,"ms":T,"books":N} first reply (a list)
//   {"event":"created","book":{...}}                   per book created
//   {"event":"refused","method":"create","message":"INVALID_INPUT: isbn: ..."}  in-band error
//   {"event":"listed","order":"year","items":[...]}    list results
//   {"event":"done"} at the end, or {"event":"fatal","message":...} (exit code 1)

const b4a = require('b4a')
const sodium = require('sodium-universal')
const HyperDHT = require('hyperdht')
const RPC = require('@hyperswarm/rpc')

const HRPC_ERR = '[HRPC_ERR]='

function arg (name, dflt) {
  const i = process.argv.indexOf('--' + name)
  return i === -1 ? dflt : process.argv[i + 1]
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function topicKey () {
  const hex = arg('topic', null)
  if (hex) return b4a.from(hex, 'hex')
  const name = arg('name', 'books')
  const namespace = arg('namespace', 'inference-mesh')
  const out = b4a.alloc(32)
  sodium.crypto_generichash(out, b4a.from(namespace + ':' + name))
  return out
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
const deadline = Date.now() + Number(arg('timeout-ms', '20000'))

// The first server public key announcing `topic`, looking again until the deadline
// (the worker may still be announcing when we start).
async function findWorker (dht, topic) {
  for (let lookups = 1; Date.now() < deadline; lookups++) {
    for await (const reply of dht.lookup(topic)) {
      for (const peer of reply.peers) return { publicKey: peer.publicKey, lookups }
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error('no peer announced the topic before the deadline')
}

// hp-svc-facs-net's jRequest: JSON in, JSON out, "[HRPC_ERR]=" replies thrown.
async function jRequest (rpc, publicKey, method, data) {
  const timeout = Math.max(1000, deadline - Date.now())
  const reply = await rpc.request(publicKey, method, b4a.from(JSON.stringify(data)), { timeout })
  const value = JSON.parse(b4a.toString(reply))
  if (typeof value === 'string' && value.startsWith(HRPC_ERR)) {
    const err = new Error(value.slice(HRPC_ERR.length))
    err.inband = true
    throw err
  }
  return value
}

// The first call, retried while the connection cannot be made (hp-svc-facs-net
// retries on a closed client too). It is a read, so a retry never writes twice.
async function warmUp (rpc, publicKey) {
  const t0 = Date.now()
  for (let attempts = 1; ; attempts++) {
    try {
      const page = await jRequest(rpc, publicKey, 'list', { limit: 1 })
      emit({ event: 'connected', attempts, ms: Date.now() - t0, books: page.items.length })
      return
    } catch (err) {
      const retry = err.code === 'CHANNEL_CLOSED' || err.code === 'CHANNEL_DESTROYED'
      if (!retry || Date.now() >= deadline) throw err
      emit({ event: 'retry', attempts, message: err.message })
    }
  }
}

const BOOKS = [
  { title: 'Dune', author: 'Frank Herbert', isbn: '978-0-441-01359-3', year: 1965 },
  { title: 'Neuromancer', author: 'William Gibson', isbn: '0-441-56956-0', year: 1984 },
  { title: 'Emma', author: 'Jane Austen', isbn: '978-0-14-143958-7', year: 1815 }
]

async function main () {
  const dht = new HyperDHT({ bootstrap, host: '127.0.0.1' })
  // poolLinger as hp-svc-facs-net sets it: the pooled connection outlives a slow connect.
  const rpc = new RPC({ dht, poolLinger: 300000 })
  try {
    await dht.ready()
    const found = await findWorker(dht, topicKey())
    const key = found.publicKey
    emit({ event: 'found', public_key: b4a.toString(key, 'hex'), lookups: found.lookups })

    await warmUp(rpc, key)
    for (const book of BOOKS) emit({ event: 'created', book: await jRequest(rpc, key, 'create', book) })
    try {
      await jRequest(rpc, key, 'create', { ...BOOKS[0], title: 'Dune again', isbn: '978-0-441-01359-4' })
      emit({ event: 'accepted', method: 'create' })
    } catch (err) {
      if (!err.inband) throw err
      emit({ event: 'refused', method: 'create', message: err.message })
    }
    const page = await jRequest(rpc, key, 'list', { order: 'year', limit: 10 })
    emit({ event: 'listed', order: 'year', items: page.items })
    const since = await jRequest(rpc, key, 'list', { where: { year: { gte: 1900 } }, order: '-year' })
    emit({ event: 'listed', order: '-year', where: { year: { gte: 1900 } }, items: since.items })
    emit({ event: 'done' })
  } finally {
    await rpc.destroy()
    await dht.destroy()
  }
}

main().then(() => process.exit(0), (err) => {
  emit({ event: 'fatal', message: err.message })
  process.exit(1)
})

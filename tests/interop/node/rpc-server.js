'use strict'
// A real @hyperswarm/rpc 3.5.0 server on real hyperdht, for the Python interop
// tests and the RPC benchmark (127.0.0.1 only).
//
//   node rpc-server.js --bootstrap 127.0.0.1:PORT[,...] [--seed HEX]
//   node rpc-server.js --testnet 3 [--seed HEX]      (its own hyperdht testnet)
//
// Prints one JSON line {"publicKey", "bootstrap"} when listening, then serves
// until stdin closes or SIGTERM. Methods (the contract tests/interop/test_rpc_node.py
// and rpc-client.js use):
//   echo    plain buffer identity (default optionalBuffer encoding)
//   jecho   hp-svc-facs-net JSON: {"echo": value, "from": "node"}; bad JSON -> "[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT"
//   mecho   msgpack (msgpackr): {"echo": value, "from": "node"}
//   fail    throws Error('node says no') with code 'E_NODE'
//   slow    answers after 2 s
//   note    event sink; events returns the notes as JSON

const b4a = require('b4a')
const RPC = require('@hyperswarm/rpc')
const msgpack = require('msgpackr')
const { args, makeDHT, emit, refused, HyperDHT } = require('./rpc-common')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main() {
  const opts = args()
  const { dht, testnet, bootstrap } = await makeDHT(opts)
  const seed = opts.seed ? b4a.from(opts.seed, 'hex') : null
  const keyPair = seed ? HyperDHT.keyPair(seed) : HyperDHT.keyPair()
  const rpc = new RPC({ dht, keyPair })
  const server = rpc.createServer()
  const events = []
  server.respond('echo', (req) => req)
  server.respond('jecho', (req) => {
    let data
    try {
      data = JSON.parse(b4a.toString(req || b4a.alloc(0)))
    } catch {
      return b4a.from(JSON.stringify('[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT'))
    }
    return b4a.from(JSON.stringify({ echo: data, from: 'node' }))
  })
  server.respond('mecho', (req) => msgpack.pack({ echo: msgpack.unpack(req), from: 'node' }))
  server.respond('fail', () => {
    const err = new Error('node says no')
    err.code = 'E_NODE'
    throw err
  })
  server.respond('slow', async (req) => {
    await sleep(2000)
    return req
  })
  server.respond('note', (req) => {
    events.push(b4a.toString(req || b4a.alloc(0)))
  })
  server.respond('events', () => b4a.from(JSON.stringify(events)))
  await server.listen(keyPair)
  emit({ publicKey: b4a.toString(server.publicKey, 'hex'), bootstrap })

  const stop = async () => {
    await rpc.destroy()
    await dht.destroy()
    if (testnet) await testnet.destroy()
    if (refused.length) console.error('refused non-loopback sends:', refused.length)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.stdin.on('end', stop)
  process.stdin.resume()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

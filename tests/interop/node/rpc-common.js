'use strict'
// Shared bits of the rpc-*.js scripts: argument parsing, the loopback-only
// guard on UDP sends, a hyperdht node on the given bootstrap list, JSON output.

const UDXSocket = require('udx-native/lib/socket')
const HyperDHT = require('hyperdht')

// Refuse every UDP datagram that is not for 127.0.0.0/8 (never reach public nodes).
const refused = []
for (const name of ['send', 'trySend']) {
  const orig = UDXSocket.prototype[name]
  UDXSocket.prototype[name] = function (buffer, port, host, ttl) {
    if (typeof host !== 'string' || !host.startsWith('127.')) {
      refused.push({ host, port })
      return name === 'send' ? Promise.resolve(false) : undefined
    }
    return orig.call(this, buffer, port, host, ttl)
  }
}

function args(argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue
    const key = argv[i].slice(2)
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) out[key] = true
    else out[key] = argv[++i]
  }
  return out
}

function parseBootstrap(list) {
  return String(list)
    .split(',')
    .filter(Boolean)
    .map((hp) => {
      const [host, port] = hp.split(':')
      if (!host.startsWith('127.')) throw new Error('bootstrap must be on 127.0.0.0/8: ' + hp)
      return { host, port: Number(port) }
    })
}

// A DHT node on the given bootstrap list, or (with testnet = n) a fresh local testnet.
async function makeDHT(opts) {
  if (opts.testnet) {
    const createTestnet = require('hyperdht/testnet')
    const testnet = await createTestnet(Number(opts.testnet), { host: '127.0.0.1' })
    const dht = testnet.createNode()
    return { dht, testnet, bootstrap: testnet.bootstrap.map((b) => `${b.host}:${b.port}`) }
  }
  if (!opts.bootstrap) throw new Error('pass --bootstrap host:port[,host:port] or --testnet N')
  const bootstrap = parseBootstrap(opts.bootstrap)
  const dht = new HyperDHT({ bootstrap, host: '127.0.0.1', ephemeral: true })
  await dht.ready()
  return { dht, testnet: null, bootstrap: bootstrap.map((b) => `${b.host}:${b.port}`) }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

module.exports = { args, makeDHT, emit, refused, HyperDHT }

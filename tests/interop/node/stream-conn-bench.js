'use strict'
// A full hyperdht connection endpoint (dht.createServer / dht.connect: Noise IK,
// udx-native, secret-stream) driven over stdin/stdout JSON lines, for the
// "full connections" part of scripts/bench/stream.py. The Python twin is
// scripts/bench/conn_peer.py.
//
// argv: --bootstrap 127.0.0.1:PORT[,..]. Listens on a fresh key and prints
//   {"publicKey": HEX}; then reads one line
//   {"connect": HEX|null, "mode": "sink"|"source"|"echo"|"ping", "bytes": N, "count": N, "size": N}
// connect: dial that key (else use the first incoming connection)
// sink:   count bytes until `bytes` arrived; report {"bytes", "seconds"} (from the first byte)
// source: write `bytes` bytes as 64 KB messages; report {"sent": true}
// echo:   write back every message
// ping:   `count` round trips of `size` bytes against an echo peer; report {"medianMs"}
const readline = require('readline')
const HyperDHT = require('hyperdht')

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')
const i = process.argv.indexOf('--bootstrap')
const bootstrap = process.argv[i + 1].split(',').map((s) => {
  const [host, port] = s.split(':')
  if (!host.startsWith('127.')) throw new Error('loopback bootstrap only')
  return { host, port: Number(port) }
})

const dht = new HyperDHT({ bootstrap, host: '127.0.0.1', firewalled: false })
const keyPair = HyperDHT.keyPair()
let incoming = null
let onIncoming = null
const server = dht.createServer((conn) => {
  conn.on('error', () => {})
  if (onIncoming) onIncoming(conn)
  else incoming = conn
})

async function main() {
  await server.listen(keyPair)
  out({ publicKey: keyPair.publicKey.toString('hex') })
  const cmd = await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once('line', (l) => resolve(JSON.parse(l))))
  let conn
  if (cmd.connect) {
    conn = dht.connect(Buffer.from(cmd.connect, 'hex'), { keyPair: HyperDHT.keyPair() })
    conn.on('error', (err) => out({ error: err.message }))
    await new Promise((resolve) => conn.once('open', resolve))
  } else {
    conn = incoming || (await new Promise((resolve) => { onIncoming = resolve }))
  }
  modes[cmd.mode](conn, cmd)
}

const modes = {
  sink(conn, cmd) {
    let n = 0
    let t0 = 0n
    conn.on('data', (d) => {
      if (n === 0) t0 = process.hrtime.bigint()
      n += d.byteLength
      if (n >= cmd.bytes) out({ bytes: n, seconds: Number(process.hrtime.bigint() - t0) / 1e9 })
    })
  },
  source(conn, cmd) {
    const chunk = Buffer.alloc(65536, 7)
    let left = cmd.bytes
    const pump = () => {
      while (left > 0) {
        const ok = conn.write(left >= chunk.length ? chunk : chunk.subarray(0, left))
        left -= chunk.length
        if (!ok) return conn.once('drain', pump)
      }
      out({ sent: true })
    }
    conn.on('data', () => {})
    pump()
  },
  echo(conn) {
    conn.on('data', (d) => conn.write(d))
  },
  ping(conn, cmd) {
    const msg = Buffer.alloc(cmd.size, 7)
    let left = cmd.count
    let got = 0
    let t0 = process.hrtime.bigint()
    const samples = []
    conn.on('data', (d) => {
      got += d.byteLength
      if (got < msg.length) return
      got -= msg.length
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6)
      if (--left === 0) {
        samples.sort((a, b) => a - b)
        out({ medianMs: samples[samples.length >> 1] })
        return
      }
      t0 = process.hrtime.bigint()
      conn.write(msg)
    })
    conn.write(msg)
  }
}

main().catch((err) => {
  out({ error: err.message })
  process.exit(1)
})

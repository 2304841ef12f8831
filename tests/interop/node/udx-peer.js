'use strict'
// A udx-native (libudx) stream endpoint driven over stdin/stdout JSON lines, for
// the Python UDX interop tests and scripts/bench/stream.py.
//
// Prints {"port": P, "id": ID}, then reads one line
//   {"remoteId": N, "port": P, "mode": "echo"|"sink"|"source"|"ping", "bytes": N, "count": N, "size": N}
// echo:   write back everything received, END after the peer's END
// sink:   count bytes until END; report {"bytes", "sha256", "seconds"} (from the first byte)
// source: write `bytes` random bytes then END; report {"sha256"} at once and {"done"} at close
// ping:   `count` round trips of `size` bytes against an echo peer; report {"rttMs"}
const UDX = require('udx-native')
const crypto = require('crypto')
const readline = require('readline')

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')

const udx = new UDX()
const sock = udx.createSocket()
sock.bind(0, '127.0.0.1')
const myId = 1 + Math.floor(Math.random() * 0xfffffff0)
const stream = udx.createStream(myId)
stream.on('error', (err) => out({ error: err.message }))
out({ port: sock.address().port, id: myId })

const rl = readline.createInterface({ input: process.stdin })
rl.once('line', (line) => {
  const cmd = JSON.parse(line)
  stream.connect(sock, cmd.remoteId, cmd.port, '127.0.0.1')
  modes[cmd.mode](cmd)
})

function finish(extra) {
  out({ done: true, retransmits: stream.retransmits, rtt: stream.rtt, ...extra })
  setTimeout(() => process.exit(0), 100)
}

const modes = {
  echo() {
    stream.on('data', (d) => stream.write(d))
    stream.on('end', () => stream.end())
    stream.on('close', () => finish({}))
  },
  sink() {
    const h = crypto.createHash('sha256')
    let n = 0
    let t0 = 0
    stream.on('data', (d) => {
      if (n === 0) t0 = process.hrtime.bigint()
      n += d.byteLength
      h.update(d)
    })
    stream.on('end', () => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      out({ bytes: n, sha256: h.digest('hex'), seconds })
      stream.end()
    })
    stream.on('close', () => finish({}))
  },
  source(cmd) {
    const data = crypto.randomBytes(cmd.bytes)
    out({ sha256: crypto.createHash('sha256').update(data).digest('hex') })
    const chunk = 65536
    let i = 0
    const pump = () => {
      while (i < data.length) {
        const ok = stream.write(data.subarray(i, i + chunk))
        i += chunk
        if (!ok) return stream.once('drain', pump)
      }
      stream.end()
    }
    pump()
    stream.on('data', () => {})
    stream.on('end', () => {})
    stream.on('close', () => finish({}))
  },
  ping(cmd) {
    const msg = crypto.randomBytes(cmd.size)
    let left = cmd.count
    let got = 0
    let t0 = process.hrtime.bigint()
    const samples = []
    stream.on('data', (d) => {
      got += d.byteLength
      if (got < msg.length) return
      got -= msg.length
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6)
      if (--left === 0) {
        samples.sort((a, b) => a - b)
        out({ rttMs: samples.reduce((a, b) => a + b, 0) / samples.length, medianMs: samples[samples.length >> 1] })
        stream.end()
        return
      }
      t0 = process.hrtime.bigint()
      stream.write(msg)
    })
    stream.on('end', () => {})
    stream.on('close', () => finish({}))
    stream.write(msg)
  }
}

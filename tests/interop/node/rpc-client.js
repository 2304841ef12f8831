'use strict'
// A real @hyperswarm/rpc 3.5.0 client on real hyperdht that runs the interop
// cases against a server (Python mesh.rpc or rpc-server.js), 127.0.0.1 only.
//
//   node rpc-client.js --bootstrap 127.0.0.1:PORT[,...] --key SERVER_PUBLIC_KEY_HEX
//
// Prints one JSON line per case {"case", "ok", "detail"} and a final
// {"done": true, "failed": n}. The server must implement the methods listed
// in rpc-server.js (from: "python" or "node").

const b4a = require('b4a')
const RPC = require('@hyperswarm/rpc')
const msgpack = require('msgpackr')
const { args, makeDHT, emit } = require('./rpc-common')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main() {
  const opts = args()
  const { dht } = await makeDHT(opts)
  const key = b4a.from(opts.key, 'hex')
  const rpc = new RPC({ dht })
  const req = (method, value, o) => rpc.request(key, method, value, { timeout: 15000, ...o })
  let failed = 0
  const report = (name, ok, detail) => {
    if (!ok) failed++
    emit({ case: name, ok: !!ok, detail })
  }
  const run = async (name, fn) => {
    try {
      const [ok, detail] = await fn()
      report(name, ok, detail)
    } catch (err) {
      report(name, false, { error: String(err), code: err.code })
    }
  }
  const expectError = async (method, o, check) => {
    try {
      await req(method, b4a.from('x'), o)
      return [false, 'resolved']
    } catch (err) {
      const detail = { code: err.code, message: err.message, cause: err.cause ? { message: err.cause.message, code: err.cause.code } : null }
      return [check(err), detail]
    }
  }

  await run('echo', async () => {
    const r = await req('echo', b4a.from('hello from node'))
    return [r && b4a.toString(r) === 'hello from node', r && b4a.toString(r)]
  })
  await run('empty', async () => {
    const r = await req('echo', b4a.alloc(0))
    return [r === null, String(r)]
  })
  await run('json', async () => {
    const r = JSON.parse(b4a.toString(await req('jecho', b4a.from(JSON.stringify({ a: [1, 2], s: 'x' })))))
    return [r.echo.a[1] === 2 && r.echo.s === 'x' && typeof r.from === 'string', r]
  })
  await run('json-bad', async () => {
    const r = JSON.parse(b4a.toString(await req('jecho', b4a.from('not json'))))
    return [r === '[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT', r]
  })
  await run('msgpack', async () => {
    const r = msgpack.unpack(await req('mecho', msgpack.pack({ n: 42, list: [1, 'two'], bin: b4a.from([1, 2, 3]) })))
    return [r.echo.n === 42 && r.echo.list[1] === 'two' && b4a.equals(r.echo.bin, b4a.from([1, 2, 3])), { n: r.echo.n, from: r.from }]
  })
  await run('big', async () => {
    const big = b4a.alloc(1024 * 1024)
    for (let i = 0; i < big.byteLength; i++) big[i] = i % 251
    const r = await req('echo', big)
    return [r && b4a.equals(r, big), r && r.byteLength]
  })
  await run('unknown', () => expectError('nope', {}, (e) => e.code === 'UNKNOWN_METHOD'))
  await run('fail', () => expectError('fail', {}, (e) => e.code === 'REQUEST_ERROR' && !!e.cause && /says no/.test(e.cause.message)))
  await run('timeout', () => expectError('slow', { timeout: 300 }, (e) => e.code === 'TIMEOUT_EXCEEDED'))
  await run('event', async () => {
    rpc.event(key, 'note', b4a.from('event from node'))
    let events = []
    for (let i = 0; i < 50 && !events.includes('event from node'); i++) {
      events = JSON.parse(b4a.toString(await req('events', null)))
      if (!events.includes('event from node')) await sleep(20)
    }
    return [events.includes('event from node'), events]
  })
  await run('pooled', async () => [rpc._pool.size === 1, rpc._pool.size])
  emit({ done: true, failed })
  await rpc.destroy()
  await dht.destroy()
  process.exit(failed ? 1 : 0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

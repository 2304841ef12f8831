'use strict'
// A hyperdht testnet of N persistent nodes on 127.0.0.1 for the swarm tests.
// Prints {"event":"testnet","bootstrap":["127.0.0.1:PORT",...]} and runs until
// stdin closes (the Python test ends it by closing the pipe).
// Usage: node swarm-testnet.js [N]
const createTestnet = require('hyperdht/testnet')

async function main() {
  const n = Number(process.argv[2] || 3)
  const testnet = await createTestnet(n, { host: '127.0.0.1' })
  const bootstrap = testnet.nodes.map((node) => '127.0.0.1:' + node.address().port)
  process.stdout.write(JSON.stringify({ event: 'testnet', bootstrap }) + '\n')
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await testnet.destroy()
    process.exit(0)
  })
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ event: 'fatal', message: err.message }) + '\n')
  process.exit(1)
})

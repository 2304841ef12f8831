'use strict'
// Prints byte vectors of hyperdht's codecs and signatures (JSON), recorded into
// tests/unit/test_dht_messages.py. Run: node dht-vectors.js
const c = require('compact-encoding')
const b4a = require('b4a')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const HyperDHT = require('hyperdht')

const hex = (b) => b4a.toString(b, 'hex')
const kp = HyperDHT.keyPair(b4a.alloc(32, 7))
const target = b4a.alloc(32, 0xaa)
const id = b4a.alloc(32, 0xbb)
const token = b4a.alloc(32, 0xcc)
const peer = { publicKey: kp.publicKey, relayAddresses: [{ host: '127.0.0.1', port: 49738 }, { host: '10.1.2.3', port: 1 }] }
const ann = { peer, refresh: null, signature: null, bump: 0 }
ann.signature = Persistent.signAnnounce(target, token, id, ann, kp)
const unann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null, signature: null }
unann.signature = Persistent.signUnannounce(target, token, id, unann, kp)
const sig = Persistent.signMutable(5, b4a.from('hello'), kp)

console.log(JSON.stringify({
  seed: '07'.repeat(32),
  publicKey: hex(kp.publicKey),
  peer: hex(c.encode(m.peer, peer)),
  announce: hex(c.encode(m.announce, ann)),
  announceBump: hex(c.encode(m.announce, { ...ann, bump: 1700000000000 })),
  unannounce: hex(c.encode(m.announce, unann)),
  lookupRawReply: hex(c.encode(m.lookupRawReply, { peers: [c.encode(m.peer, peer)], bump: 42 })),
  mutableSignature: hex(sig),
  mutablePutRequest: hex(c.encode(m.mutablePutRequest, { publicKey: kp.publicKey, seq: 5, value: b4a.from('hello'), signature: sig })),
  mutableGetResponse: hex(c.encode(m.mutableGetResponse, { seq: 5, value: b4a.from('hello'), signature: sig })),
  handshake: hex(c.encode(m.handshake, { mode: 2, noise: b4a.alloc(40, 1), peerAddress: { host: '127.0.0.1', port: 1234 }, relayAddress: null })),
  handshakeBoth: hex(c.encode(m.handshake, { mode: 3, noise: b4a.alloc(3, 2), peerAddress: { host: '127.0.0.1', port: 1 }, relayAddress: { host: '127.0.0.2', port: 2 } })),
  holepunch: hex(c.encode(m.holepunch, { mode: 1, id: 300, payload: b4a.alloc(10, 3), peerAddress: { host: '127.0.0.1', port: 999 } }))
}, null, 1))

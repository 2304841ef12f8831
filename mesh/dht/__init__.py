"""A HyperDHT-compatible DHT (dht-rpc framing + hyperdht commands).

messages.py  wire codecs: dht-rpc request/response, peer, announce, lookup reply,
             mutable/immutable, PEER_HANDSHAKE / PEER_HOLEPUNCH bodies (sans-IO)
routing.py   256-bit k-bucket table, k = 20, ping-before-evict          (sans-IO)
tokens.py    rotating round-trip tokens                                  (sans-IO)
query.py     iterative query state machine                               (sans-IO)
store.py     announce records, router entries, mutable/immutable values  (sans-IO)
nat.py       public-address sampling from reply `to` fields              (sans-IO)
congestion.py  dht-rpc's congestion window (80 per 750 ms slot)        (sans-IO)
io.py        asyncio driver: sockets, tids, retries, congestion window,
             per-source limits, demux (dht-rpc / UDX / holepunch probes)
driver.py    runs a query over io.py: async iterator + commit
handlers.py  the storing node's commands and the handshake relay
upkeep.py    NAT sampling, PING_NAT firewall check, persistence, table upkeep
verbs.py     client verbs: announce, unannounce, find_peer, mutable/immutable
node.py      `DHT`: lifecycle, serving internal commands, hooks, queries
testnet.py   `testnet(n)`: n persistent nodes on loopback

Hooks for the connection layer
------------------------------
* Hosting a server: `target = dht.register_server(keypair, on_handshake, on_holepunch,
  relay_addresses=())`. PEER_HANDSHAKE (modes FROM_CLIENT / FROM_RELAY /
  FROM_SECOND_RELAY) with target hash(public key) reaching this node call
  `on_handshake(req: IncomingRequest, hs: messages.Handshake)`, sync or async,
  which returns the Noise reply bytes (or `(bytes, socket)` to answer from another
  endpoint, or None to drop). The node answers exactly as hyperdht's router does:
  FROM_CLIENT -> REPLY response; FROM_RELAY -> FROM_SERVER request with the same
  tid back to the relay (peerAddress echoed); FROM_SECOND_RELAY -> to relayAddress.
  PEER_HOLEPUNCH FROM_RELAY calls `on_holepunch(req, hp: messages.Holepunch)`
  returning the reply payload; the node sends FROM_SERVER (id 0) to the relay.
  LOOKUP / FIND_PEER on that target also return the server's record.
  `dht.unregister_server(public_key)`. To be found, the server also self-announces:
  `relays = await dht.announce(target, keypair, relay_addresses, limit=3)` returns
  the addresses of the nodes that now hold its router entry (its relays), and is
  refreshed in the background like any announce.
* Raw answers: an `IncomingRequest` has `reply(value, token=, closer_nodes=, to=)`,
  `error(code)`, and `relay(value, to)` (a request with the same tid, command and
  target sent to `to`), plus tid, command, target, value, from_address, to_address.
* One-shot requests: `reply = await dht.request(addr, command, target=, value=,
  token=, internal=False, retries=3, timeout=None, socket=None)`; returns an
  `io.Reply` (from_address, from_id, to, token, closer_nodes, error, value) and
  raises `TimeoutError_`. A non-zero `reply.error` is returned, not raised.
* Relay discovery: `await dht.find_peer(pk)` (first `FindPeerResult`) or
  `async for r in dht.find_peer_iter(pk)`.
* Socket sharing: `dht.set_udx_handler(fn(data, addr, socket))` receives datagrams
  starting 0xff 0x01; `dht.set_probe_handler(fn(data, addr, socket))` receives
  1-byte holepunch probes; `dht.send_raw(data, addr, socket=None)` sends on the
  server socket (or the given one: `dht.io.server` / `dht.io.client`).
"""

from .io import IncomingRequest, Reply
from .messages import PeerRecord
from .node import DHT, DHTConfig, FindPeerResult, LookupResult, MutableResult
from .testnet import Testnet, testnet

__all__ = [
    "DHT", "DHTConfig", "FindPeerResult", "IncomingRequest", "LookupResult", "MutableResult",
    "PeerRecord", "Reply", "Testnet", "testnet",
]

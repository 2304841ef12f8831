"""A Python implementation of the Hyperswarm networking stack.

crypto.py     the one importer of pynacl: keys, BLAKE2b, namespaces, signatures, ciphers
encoding.py   compact-encoding primitives shared by every wire codec
errors.py     the package's error tree
dht/          dht-rpc + HyperDHT commands (announce, lookup, mutable/immutable values)
net.py        datagram networks: real UDP (loopback-only by default); sim.py the fakes
udx/          reliable streams over the DHT's UDP socket
noise.py, noise_payload.py   Noise IK over Ed25519 and its payload codec
secret_stream.py             secret-stream framing and encryption (sans-IO)
connection.py                an encrypted message connection over a UDX stream
transport.py  UDX streams on the DHT's socket (early packets held until connected)
paths.py      where a connection's stream goes (direct, same host, wait; holepunch later)
connect.py, server.py, server_announcer.py   the two ends of a connection, the route announce
connect_errors.py            this layer's errors
swarm.py      join/leave topics, one connection per peer; swarm_logic.py its sans-IO
              decisions, swarm_discovery.py topic handles, swarm_cli.py the CLI's part
rpc/          protomux + protomux-rpc (@hyperswarm/rpc wire format)
runtime.py    MeshRuntime: one process's DHT, Swarm, RPC server and client (roles, gateway, tools)
node.py       `python -m mesh.node`; node_role.py runs the worker role a topic names
"""

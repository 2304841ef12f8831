"""A Python implementation of the Hyperswarm networking stack.

crypto.py     the one importer of pynacl: keys, BLAKE2b, namespaces, signatures, ciphers
encoding.py   compact-encoding primitives shared by every wire codec
errors.py     the package's error tree
dht/          dht-rpc + HyperDHT commands (announce, lookup, mutable/immutable values)
udx/          reliable streams over the DHT's UDP socket
noise.py, secret_stream.py   the encrypted channel
swarm.py      join/leave topics, one connection per peer
rpc/          protomux + protomux-rpc (@hyperswarm/rpc wire format)
node.py       `python -m mesh.node`
"""

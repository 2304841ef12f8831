"""The relay side of connections and the hooks for servers hosted on a node."""

from __future__ import annotations

import asyncio

from mesh import crypto, sim
from mesh.dht import messages as m
from mesh.dht import testnet as start_testnet


def test_handshake_and_holepunch_are_relayed_to_a_hosted_server():
    async def main():
        net = sim.SimNetwork(latency=0.002, seed=11)
        async with start_testnet(12, network=net) as tn:
            server = await tn.create_node()
            client = await tn.create_node()
            kp = crypto.keypair(b"\x61" * 32)
            seen = []

            async def on_handshake(req, hs):
                seen.append(("hs", hs.mode, hs.noise, hs.peer_address))
                await asyncio.sleep(0)  # handlers may be async
                return b"noise-2"

            def on_holepunch(req, hp):
                seen.append(("hp", hp.mode, hp.payload, hp.peer_address))
                return b"punch-2"

            target = server.register_server(kp, on_handshake, on_holepunch)
            relays = await server.announce(target, kp, limit=3)
            assert len(relays) == 3
            found = await client.find_peer(kp.public_key)
            assert found is not None and found.peer.public_key == kp.public_key
            relay = found.from_address
            assert relay in relays

            value = m.encode_handshake(m.Handshake(m.FROM_CLIENT, b"noise-1"))
            res = await client.request(relay, m.PEER_HANDSHAKE, target=target, value=value)
            hs = m.decode_handshake(res.value)
            assert (hs.mode, hs.noise) == (m.REPLY, b"noise-2")
            assert hs.peer_address == server.address  # the server as the relay saw it
            assert seen[0] == ("hs", m.FROM_RELAY, b"noise-1", res.to)

            # straight to the server: a direct REPLY without peerAddress
            res = await client.request(server.address, m.PEER_HANDSHAKE, target=target, value=value)
            hs = m.decode_handshake(res.value)
            assert (hs.mode, hs.noise, hs.peer_address) == (m.REPLY, b"noise-2", None)

            value = m.encode_holepunch(m.Holepunch(m.FROM_CLIENT, 5, b"punch-1"))
            res = await client.request(relay, m.PEER_HOLEPUNCH, target=target, value=value)
            hp = m.decode_holepunch(res.value)
            assert (hp.mode, hp.payload, hp.peer_address) == (m.REPLY, b"punch-2", server.address)
            assert seen[-1][:3] == ("hp", m.FROM_RELAY, b"punch-1")
            relay_node = next(n for n in tn.nodes if n.address == relay)
            assert relay_node.stats["relayed"] == 2

            # a handshake for an unknown server gets closer nodes to route by, not a relay
            other = crypto.hash(b"nobody")
            res = await client.request(relay, m.PEER_HANDSHAKE, target=other, value=m.encode_handshake(
                m.Handshake(m.FROM_CLIENT, b"x")))
            assert res.value is None and res.closer_nodes
    sim.run(main())

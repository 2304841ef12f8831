"""Live interop with hyperdht's NoiseWrap and @hyperswarm/secret-stream (Node), both roles."""

from __future__ import annotations

import pytest

from mesh import crypto
from mesh.noise import NoiseWrap
from mesh.noise_payload import NoisePayload, UdxInfo
from mesh.secret_stream import SecretStream

from .nodepeer import NodeProc

pytestmark = pytest.mark.interop

NODE_PAYLOAD = {"firewall": 1, "addresses4": [{"host": "127.0.0.1", "port": 41000}], "udx": {"id": 77, "seq": 0}, "secretStream": True}
PY_PAYLOAD = NoisePayload(firewall=2, addresses4=[("127.0.0.1", 42000)], udx=UdxInfo(id=88), relay_addresses=[("127.0.0.1", 49737)])


def check_keys(r, keys):
    assert r.handshake_hash.hex() == keys["hash"]
    assert r.tx.hex() == keys["rx"] and r.rx.hex() == keys["tx"]
    assert r.holepunch_secret.hex() == keys["holepunchSecret"]


async def secret_stream_both_ways(node: NodeProc, ss: SecretStream):
    node.send({"op": "ss_write", "messages": [b"from node".hex(), "", (b"n" * 100_000).hex()]})
    data = bytes.fromhex((await node.line())["data"])
    assert ss.feed(data) == [b"from node", b"n" * 100_000]
    raw = ss.header_frame + ss.encrypt(b"from python") + ss.encrypt(b"") + ss.encrypt(b"p" * 70_000)
    node.send({"op": "ss_feed", "data": raw.hex()})
    got = await node.line()
    # without keepAlive set, NoiseSecretStream hands the empty keepalive frame up as-is
    assert [bytes.fromhex(m) for m in got["messages"]] == [b"from python", b"", b"p" * 70_000]
    node.send({"op": "ss_recv", "data": ss.seal_datagram(b"dgram-py").hex()})
    assert bytes.fromhex((await node.line())["message"]) == b"dgram-py"
    node.send({"op": "ss_send", "message": b"dgram-node".hex()})
    assert ss.open_datagram(bytes.fromhex((await node.line())["data"])) == b"dgram-node"


async def test_python_initiator_node_responder(node_harness):
    node = await NodeProc.start("noise-peer.js")
    try:
        server_seed = crypto.random_bytes(32)
        server = crypto.keypair(server_seed)
        me = crypto.keypair()
        w = NoiseWrap(me, server.public_key)
        node.send({"op": "respond", "seed": server_seed.hex(), "msg1": w.send(PY_PAYLOAD).hex(), "payload": NODE_PAYLOAD})
        reply = await node.line()
        assert reply["payload"]["udx"]["id"] == 88 and reply["payload"]["relayAddresses"] == [{"host": "127.0.0.1", "port": 49737}]
        assert reply["keys"]["remotePublicKey"] == me.public_key.hex()
        p = w.recv(bytes.fromhex(reply["msg2"]))
        assert p.udx.id == 77 and p.firewall == 1 and p.addresses4 == [("127.0.0.1", 41000)]
        r = w.final()
        check_keys(r, reply["keys"])
        await secret_stream_both_ways(node, SecretStream(True, r.handshake_hash, r.tx, r.rx))
    finally:
        await node.close()


async def test_node_initiator_python_responder(node_harness):
    node = await NodeProc.start("noise-peer.js")
    try:
        me = crypto.keypair()
        node_seed = crypto.random_bytes(32)
        node.send({"op": "initiate", "seed": node_seed.hex(), "remote": me.public_key.hex(), "payload": NODE_PAYLOAD})
        msg1 = bytes.fromhex((await node.line())["msg1"])
        w = NoiseWrap(me)
        p = w.recv(msg1)
        assert p.udx.id == 77 and w.remote_public_key == crypto.keypair(node_seed).public_key
        node.send({"op": "finish", "msg2": w.send(PY_PAYLOAD).hex()})
        fin = await node.line()
        assert fin["payload"]["udx"]["id"] == 88
        r = w.final()
        check_keys(r, fin["keys"])
        await secret_stream_both_ways(node, SecretStream(False, r.handshake_hash, r.tx, r.rx))
    finally:
        await node.close()

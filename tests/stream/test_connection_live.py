"""Connection (mesh) against hyperdht's NoiseWrap + NoiseSecretStream over udx-native, both roles."""

from __future__ import annotations

import asyncio
import os

import pytest

from mesh import crypto
from mesh.connection import Connection
from mesh.net import UDPNetwork
from mesh.noise import NoiseWrap
from mesh.noise_payload import NoisePayload, UdxInfo
from mesh.udx import UDXMux

from .nodepeer import NodeProc

pytestmark = pytest.mark.interop

MESSAGES = [b"hello"] + [os.urandom(n) for n in (1, 1000, 65536, 1_000_000, 10)] * 5


async def connect(role_of_node: str):
    node = await NodeProc.start("stream-conn-peer.js", role_of_node)
    hello = await node.line()
    mux = await UDXMux.bind(UDPNetwork())
    s = mux.create_stream()
    me = crypto.keypair()
    node_addr = ("127.0.0.1", hello["port"])
    if role_of_node == "initiator":
        node.send({"remotePublicKey": me.public_key.hex(), "remoteId": s.local_id, "port": mux.address[1]})
        w = NoiseWrap(me)
        p = w.recv(bytes.fromhex((await node.line())["msg1"]))
        node.send({"msg2": w.send(NoisePayload(udx=UdxInfo(id=s.local_id))).hex()})
        s.connect(p.udx.id)  # responder: the initiator's first packet brings the address
    else:
        w = NoiseWrap(me, bytes.fromhex(hello["publicKey"]))
        node.send({"msg1": w.send(NoisePayload(udx=UdxInfo(id=s.local_id))).hex(), "remoteId": s.local_id, "port": mux.address[1]})
        p = w.recv(bytes.fromhex((await node.line())["msg2"]))
        s.connect(p.udx.id, node_addr)
    await node.until("connected")
    return node, mux, Connection(s, w.final())


@pytest.mark.parametrize("role_of_node", ["initiator", "responder"])
async def test_echo_with_node_secret_stream(node_harness, role_of_node):
    node, mux, conn = await connect(role_of_node)
    try:
        async def send_all():
            for m in MESSAGES:
                if not conn.write(m):
                    await conn.drain()

        sender = asyncio.ensure_future(send_all())
        got = [await asyncio.wait_for(conn.recv(), 30) for _ in MESSAGES]
        await sender
        assert got == MESSAGES
        await asyncio.wait_for(conn.close(), 15)
        assert conn.closed.result() is None
        fin = await node.until("closed")
        assert fin["messages"] == len(MESSAGES) and fin["bytes"] == sum(map(len, MESSAGES))
    finally:
        mux.close()
        await node.close()

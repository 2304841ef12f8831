"""The storing node's side of the hyperdht commands, and the relay of
PEER_HANDSHAKE / PEER_HOLEPUNCH to the servers this node routes for or hosts.

Mirrors hyperdht's lib/persistent.js and lib/router.js: malformed or
unauthenticated writes are dropped without an answer (and counted).
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING

from .. import crypto
from ..errors import DecodeError
from . import messages as m
from .io import IncomingRequest

if TYPE_CHECKING:
    from .node import DHT

MAX_VALUE = 4096
MAX_RELAY_ADDRESSES = 3


def handle_user_command(dht: "DHT", req: IncomingRequest) -> bool:
    """Dispatch a hyperdht command; False means 'unknown command' (or not storing)."""
    c = req.command
    if c == m.PEER_HANDSHAKE:
        on_peer_handshake(dht, req)
        return True
    if c == m.PEER_HOLEPUNCH:
        on_peer_holepunch(dht, req)
        return True
    if dht.id is None:
        return False
    fn = _STORAGE.get(c)
    if fn is None:
        return False
    fn(dht, req)
    return True


def _decode(dht: "DHT", decoder, value):
    try:
        return decoder(value)
    except DecodeError:
        dht.stats["malformed"] += 1
        return None


def _server_record(dht: "DHT", target: bytes) -> bytes | None:
    hosted = dht.servers.get(target)
    if hosted is not None:
        return hosted.record
    entry = dht.store.get_router(target, dht.now())
    return entry.record if entry else None


def on_find_peer(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None:
        return
    req.reply(_server_record(dht, req.target))


def on_lookup(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None:
        return
    now = dht.now()
    records = dht.store.get_records(req.target, now)
    fwd = _server_record(dht, req.target)
    if fwd is not None and len(records) < 20:
        records.append(fwd)
    value = m.encode_lookup_reply(records, dht.store.get_bump(req.target, now)) if records else None
    req.reply(value)


def on_announce(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None or req.token is None:
        return
    ann = _decode(dht, m.decode_announce, req.value or b"")
    if ann is None:
        return
    store, now = dht.store, dht.now()
    if ann.peer is None:
        if ann.refresh is not None:
            _on_refresh(dht, req, ann.refresh)
        return
    signable = m.announce_signable(req.target, dht.id, req.token, ann, m.NS_ANNOUNCE)
    if ann.signature is None or not crypto.verify(ann.signature, signable, ann.peer.public_key):
        dht.stats["bad_signature"] += 1
        return
    peer = m.PeerRecord(ann.peer.public_key, ann.peer.relay_addresses[:MAX_RELAY_ADDRESSES])
    record = m.encode_peer(peer)
    announce_self = crypto.hash(peer.public_key) == req.target
    if announce_self:
        store.set_router(req.target, req.from_address, record, now)
        store.remove_record(req.target, peer.public_key)
    else:
        store.set_bump(req.target, ann.bump, now, int(time.time() * 1000))
        store.add_record(req.target, peer.public_key, record, now)
    if ann.refresh is not None:
        dht.refreshes.set(crypto.hash(ann.refresh), (req.target, record, announce_self), now)
    req.reply(None, token=False, closer_nodes=False)


def _on_refresh(dht: "DHT", req: IncomingRequest, refresh: bytes) -> None:
    now = dht.now()
    key = crypto.hash(refresh)
    entry = dht.refreshes.get(key, now)
    if entry is None:
        return
    target, record, announce_self = entry
    if announce_self:
        dht.store.set_router(target, req.from_address, record, now)
    else:
        dht.store.add_record(target, record[:32], record, now)
    dht.refreshes.delete(key)
    dht.refreshes.set(refresh, entry, now)
    req.reply(None, token=False, closer_nodes=False)


def on_unannounce(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None or req.token is None:
        return
    ann = _decode(dht, m.decode_announce, req.value or b"")
    if ann is None or ann.peer is None or ann.signature is None:
        return
    signable = m.announce_signable(req.target, dht.id, req.token, ann, m.NS_UNANNOUNCE)
    if not crypto.verify(ann.signature, signable, ann.peer.public_key):
        dht.stats["bad_signature"] += 1
        return
    if crypto.hash(ann.peer.public_key) == req.target:
        dht.store.delete_router(req.target)
    dht.store.remove_record(req.target, ann.peer.public_key)
    req.reply(None, token=False, closer_nodes=False)


def on_mutable_get(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None or req.value is None:
        return
    try:
        seq = m.decode_uint(req.value)
    except DecodeError:
        dht.stats["malformed"] += 1
        return
    stored = dht.store.mutables.get(req.target, dht.now())
    if stored is None:
        req.reply(None)
        return
    local_seq, raw = stored
    req.reply(None if local_seq < seq else raw)


def on_mutable_put(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None or req.token is None or req.value is None:
        return
    if len(req.value) > MAX_VALUE + 200:
        dht.stats["oversized"] += 1
        return
    p = _decode(dht, m.decode_mutable_put, req.value)
    if p is None or crypto.hash(p.public_key) != req.target or not p.value:
        return
    if not crypto.verify(p.signature, m.mutable_signable(p.seq, p.value), p.public_key):
        dht.stats["bad_signature"] += 1
        return
    now = dht.now()
    local = dht.store.mutables.get(req.target, now)
    if local is not None:
        existing = m.decode_mutable_get(local[1])
        if existing.value and existing.seq == p.seq and existing.value != p.value:
            req.error(m.ERR_SEQ_REUSED)
            return
        if p.seq < existing.seq:
            req.error(m.ERR_SEQ_TOO_LOW)
            return
    raw = m.encode_mutable_get(m.MutableGet(p.seq, p.value, p.signature))
    dht.store.mutables.set(req.target, (p.seq, raw), now)
    req.reply(None)


def on_immutable_get(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None:
        return
    req.reply(dht.store.immutables.get(req.target, dht.now()))


def on_immutable_put(dht: "DHT", req: IncomingRequest) -> None:
    if req.target is None or req.token is None or req.value is None:
        return
    if len(req.value) > MAX_VALUE:
        dht.stats["oversized"] += 1
        return
    if crypto.hash(req.value) != req.target:
        dht.stats["bad_value"] += 1
        return
    dht.store.immutables.set(req.target, req.value, dht.now())
    req.reply(None)


_STORAGE = {
    m.FIND_PEER: on_find_peer,
    m.LOOKUP: on_lookup,
    m.ANNOUNCE: on_announce,
    m.UNANNOUNCE: on_unannounce,
    m.MUTABLE_PUT: on_mutable_put,
    m.MUTABLE_GET: on_mutable_get,
    m.IMMUTABLE_PUT: on_immutable_put,
    m.IMMUTABLE_GET: on_immutable_get,
}


# ---------------------------------------------------------------- relay / hosted servers

def on_peer_handshake(dht: "DHT", req: IncomingRequest) -> None:
    hs = _decode(dht, m.decode_handshake, req.value) if req.value else None
    if hs is None:
        return
    hosted = dht.servers.get(req.target) if req.target else None
    if hosted is not None and hosted.on_handshake is not None:
        if hs.mode in (m.FROM_CLIENT, m.FROM_RELAY, m.FROM_SECOND_RELAY) and hs.noise:
            dht.spawn(_serve_handshake(dht, hosted, req, hs))
        return
    entry = dht.store.get_router(req.target, dht.now()) if req.target and dht.id is not None else None
    relay = entry.relay if entry else None
    if hs.mode == m.FROM_CLIENT:
        if not hs.noise:
            return
        if relay is None and hs.relay_address is None:
            req.reply(None, token=False, closer_nodes=True)
            return
        dht.stats["relayed"] += 1
        req.relay(m.encode_handshake(m.Handshake(m.FROM_RELAY, hs.noise, req.from_address, None)),
                  hs.relay_address or relay)
    elif hs.mode == m.FROM_RELAY:
        if relay is None or not hs.noise:
            return
        req.relay(m.encode_handshake(m.Handshake(m.FROM_SECOND_RELAY, hs.noise, hs.peer_address, req.from_address)),
                  relay)
    elif hs.mode == m.FROM_SERVER:
        if hs.peer_address is None or not hs.noise:
            return
        req.reply(m.encode_handshake(m.Handshake(m.REPLY, hs.noise, req.from_address, None)),
                  to=hs.peer_address, token=False, closer_nodes=False)


async def _call(handler, *args):
    result = handler(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _unpack(result):
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, None


async def _serve_handshake(dht: "DHT", hosted, req: IncomingRequest, hs: m.Handshake) -> None:
    noise, sock = _unpack(await _call(hosted.on_handshake, req, hs))
    if not noise:
        return
    if sock is not None:
        req.socket = sock
    if hs.mode == m.FROM_CLIENT:
        req.reply(m.encode_handshake(m.Handshake(m.REPLY, noise, None)), token=False, closer_nodes=False)
    elif hs.mode == m.FROM_RELAY:
        req.relay(m.encode_handshake(m.Handshake(m.FROM_SERVER, noise, hs.peer_address)), req.from_address)
    elif hs.mode == m.FROM_SECOND_RELAY and hs.relay_address is not None:
        req.relay(m.encode_handshake(m.Handshake(m.FROM_SERVER, noise, hs.peer_address)), hs.relay_address)


def on_peer_holepunch(dht: "DHT", req: IncomingRequest) -> None:
    hp = _decode(dht, m.decode_holepunch, req.value) if req.value else None
    if hp is None:
        return
    hosted = dht.servers.get(req.target) if req.target else None
    entry = dht.store.get_router(req.target, dht.now()) if req.target and dht.id is not None else None
    relay = entry.relay if entry else None
    if hp.mode == m.FROM_CLIENT:
        if hp.peer_address is None and relay is None:
            return
        dht.stats["relayed"] += 1
        req.relay(m.encode_holepunch(m.Holepunch(m.FROM_RELAY, hp.id, hp.payload, req.from_address)),
                  hp.peer_address or relay)
    elif hp.mode == m.FROM_RELAY:
        if hosted is None or hosted.on_holepunch is None or hp.peer_address is None:
            return
        dht.spawn(_serve_holepunch(dht, hosted, req, hp))
    elif hp.mode == m.FROM_SERVER:
        if hp.peer_address is None:
            return
        req.reply(m.encode_holepunch(m.Holepunch(m.REPLY, hp.id, hp.payload, req.from_address)),
                  to=hp.peer_address, token=False, closer_nodes=False)


async def _serve_holepunch(dht: "DHT", hosted, req: IncomingRequest, hp: m.Holepunch) -> None:
    payload, sock = _unpack(await _call(hosted.on_holepunch, req, hp))
    if payload is None:
        return
    if sock is not None:
        req.socket = sock
    req.relay(m.encode_holepunch(m.Holepunch(m.FROM_SERVER, 0, payload, hp.peer_address)), req.from_address)


"""Sans-IO decisions of the Swarm: which peers to dial, when to retry, which
duplicate connection to keep, how many peers to hold.

Nothing here touches a socket or a clock: callers pass `now` (seconds, from the
running loop) and get back decisions and deadlines. The rules follow Node's
hyperswarm 4.17 (index.js, lib/peer-info.js, lib/retry-timer.js) so that mixed
Python/Node swarms settle on the same connection from both ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mesh.encoding import Address

# Retry delays (seconds) after a lost or failed connection: short, medium, long.
# hyperswarm: 1 s / 5 s / 15 s, each with up to 0.5-2 s of jitter.
BACKOFF_S = 1.0
BACKOFF_M = 5.0
BACKOFF_L = 15.0
BACKOFF_JITTER = 0.5
# A connection that lived this long counts as healthy: its loss retries fast.
MIN_CONNECTION_TIME = 15.0
# After this many failed attempts in a row a peer found by lookup is dropped
# until a lookup finds it again.
MAX_ATTEMPTS = 3

MAX_PEERS = 64
MAX_PARALLEL = 3

# Announce refresh for joined topics (hyperswarm lib/peer-discovery.js).
REFRESH_INTERVAL = 600.0
REFRESH_JITTER = 120.0


def keep_new_connection(
    local_key: bytes, remote_key: bytes, new_is_initiator: bool, existing_exchanged_data: bool
) -> bool:
    """Whether a new connection to a peer replaces the one we already hold.

    An established old connection (bytes both ways) loses: the other side must
    have lost it and be reconnecting. Otherwise both ends keep the connection
    whose initiator is the side with the larger key, so they agree without
    talking (hyperswarm `_handleServerConnection`).
    """
    if existing_exchanged_data:
        return True
    expected_initiator = local_key > remote_key  # bytes compare like b4a.compare
    return expected_initiator == new_is_initiator


def refresh_delay(rng: random.Random, eager: bool = False, failures: int = 0) -> float:
    """Seconds until the next announce/lookup refresh of a joined topic. After
    `failures` announces in a row that stored nowhere, retry soon (1 s, doubling,
    with 10% jitter) instead of waiting a whole refresh interval."""
    if failures > 0:
        base = min(REFRESH_INTERVAL, 2.0 ** (failures - 1))
        return base + rng.random() * 0.1 * base
    jitter = rng.random() * REFRESH_JITTER
    return jitter if eager else REFRESH_INTERVAL + jitter


@dataclass
class PeerState:
    """What the Swarm knows about one remote public key."""

    public_key: bytes
    relay_addresses: list[Address] = field(default_factory=list)
    topics: list[bytes] = field(default_factory=list)
    attempts: int = 0
    proven: bool = False  # a connection to it has opened at least once
    banned: bool = False  # refused by the firewall hook
    connecting: bool = False
    connected: bool = False
    connected_at: float | None = None
    retry_at: float = 0.0  # do not dial before this time
    order: int = 0  # discovery order, for a stable tie break

    def add_topic(self, topic: bytes) -> bool:
        """Record a topic the peer was found under; True when it is new."""
        if topic in self.topics:
            return False
        self.topics.append(topic)
        return True

    @property
    def priority(self) -> int:
        """Higher dials first: a recently lost peer before a new one, a stale one last."""
        if (self.attempts > 0 and not self.proven) or self.attempts > MAX_ATTEMPTS:
            return 0
        return {0: 2, 1: 4, 2: 3, 3: 1}[self.attempts]


def retry_delay(peer: PeerState, rng: random.Random) -> float | None:
    """Seconds to wait before redialling `peer`, or None to give up on it."""
    if peer.banned or peer.attempts > MAX_ATTEMPTS:
        return None
    if peer.attempts == 0:
        base = BACKOFF_S
    elif peer.proven:
        base = (BACKOFF_S, BACKOFF_M, BACKOFF_L)[peer.attempts - 1]
    else:
        base = (BACKOFF_M, BACKOFF_L, BACKOFF_L)[peer.attempts - 1]
    scale = {BACKOFF_S: 1, BACKOFF_M: 2, BACKOFF_L: 4}[base]
    return base + rng.random() * BACKOFF_JITTER * scale


class PeerTable:
    """The Swarm's peer bookkeeping: discovery, dialling, limits, backoff.

    The driver calls `found`, `dial_started`, `opened`, `closed`, `ban` as things
    happen, asks `dials(now)` for the peers to dial now, and sleeps until
    `next_deadline()`.
    """

    def __init__(
        self,
        local_key: bytes,
        max_peers: int = MAX_PEERS,
        max_parallel: int = MAX_PARALLEL,
        rng: random.Random | None = None,
    ):
        self.local_key = local_key
        self.max_peers = max_peers
        self.max_parallel = max_parallel
        self.rng = rng or random.Random()
        self.peers: dict[bytes, PeerState] = {}
        self.client_topics: set[bytes] = set()  # topics we look up (dial their peers)
        self._order = 0

    # -- discovery ---------------------------------------------------------
    def found(
        self, public_key: bytes, relay_addresses: list[Address], topic: bytes | None, now: float
    ) -> PeerState | None:
        """A lookup (or an incoming connection) named `public_key`. Returns its state."""
        if public_key == self.local_key:
            return None
        peer = self.peers.get(public_key)
        if peer is None:
            self._order += 1
            peer = PeerState(public_key, order=self._order, retry_at=now)
            self.peers[public_key] = peer
        elif not peer.connected and not peer.connecting and peer.attempts > MAX_ATTEMPTS:
            # Rediscovered after we gave up: give it a fresh, low-priority chance.
            peer.attempts = MAX_ATTEMPTS
            peer.retry_at = now
        if relay_addresses:
            peer.relay_addresses = list(relay_addresses)  # the newest record is the best
        if topic is not None:
            peer.add_topic(topic)
        return peer

    # -- limits --------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        return sum(1 for p in self.peers.values() if p.connected or p.connecting)

    @property
    def connecting_count(self) -> int:
        return sum(1 for p in self.peers.values() if p.connecting)

    def accepts_incoming(self) -> bool:
        """Whether a new server-side connection fits under max_peers."""
        return sum(1 for p in self.peers.values() if p.connected) < self.max_peers

    def _wanted(self, peer: PeerState) -> bool:
        """Still worth dialling: found under a topic we look up, not given up."""
        return (
            not peer.banned
            and not peer.connected
            and not peer.connecting
            and peer.attempts <= MAX_ATTEMPTS
            and any(t in self.client_topics for t in peer.topics)
        )

    def dials(self, now: float) -> list[PeerState]:
        """Peers to dial now, best first, within max_peers and max_parallel."""
        ready = [p for p in self.peers.values() if self._wanted(p) and p.retry_at <= now]
        ready.sort(key=lambda p: (-p.priority, p.order))
        room = min(
            self.max_parallel - self.connecting_count, self.max_peers - self.connection_count
        )
        return ready[: max(room, 0)]

    def next_deadline(self) -> float | None:
        """Earliest time a waiting peer becomes dialable (None: nothing waits)."""
        times = [p.retry_at for p in self.peers.values() if self._wanted(p)]
        return min(times) if times else None

    # -- connection events ---------------------------------------------------
    def dial_started(self, public_key: bytes) -> None:
        self.peers[public_key].connecting = True

    def opened(self, public_key: bytes, now: float) -> PeerState:
        """A connection to `public_key` opened (either direction)."""
        peer = self.peers.get(public_key) or self.found(public_key, [], None, now)
        assert peer is not None
        peer.connecting = False
        peer.connected = True
        peer.proven = True
        peer.connected_at = now
        return peer

    def closed(self, public_key: bytes, now: float) -> float | None:
        """A connection (or dial) to `public_key` ended. Returns the retry time or None."""
        peer = self.peers.get(public_key)
        if peer is None:
            return None
        lived = now - peer.connected_at if peer.connected_at is not None else 0.0
        peer.connected = peer.connecting = False
        peer.connected_at = None
        if lived >= MIN_CONNECTION_TIME:
            peer.attempts = 0
        peer.attempts += 1
        delay = retry_delay(peer, self.rng)
        if delay is None or not any(t in self.client_topics for t in peer.topics):
            self._forget_maybe(peer)
            return None
        peer.retry_at = now + delay
        return peer.retry_at

    def ban(self, public_key: bytes, now: float) -> None:
        """The firewall hook refused `public_key`: never dial it again."""
        peer = self.peers.get(public_key) or self.found(public_key, [], None, now)
        if peer is not None:
            peer.banned = True

    def left(self, topic: bytes) -> None:
        """We stopped looking up `topic`: its peers are no longer redialled."""
        self.client_topics.discard(topic)
        for peer in list(self.peers.values()):
            self._forget_maybe(peer)

    def _forget_maybe(self, peer: PeerState) -> None:
        if peer.banned or peer.connected or peer.connecting:
            return
        if peer.attempts <= MAX_ATTEMPTS and any(t in self.client_topics for t in peer.topics):
            return
        # A later lookup or incoming connection recreates it; keeping it would grow without bound.
        self.peers.pop(peer.public_key, None)

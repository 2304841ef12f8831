"""Registry and file replication between model managers.

Every `interval_s` the replicator asks each peer from `peers()` (the managers this
one is connected to on the model-manager topic) for its registry snapshot, merges
it by (id, version), and pulls the files it lacks chunk by chunk, verifying them.
The same (id, version) with another sha256 is a conflict: ours is kept, and each
distinct conflict is counted and logged once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from .errors import BadRequestError
from .fetch import CHUNK_SIZE, PEER_FAILURES, WINDOW, PeerList, RpcPeerLike, fetch_file
from .library import MergeReport, ModelLibrary
from .registry import ModelEntry, Tombstone

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReplicationStats:
    rounds: int = 0
    failed_rounds: int = 0
    added: int = 0
    deleted: int = 0
    conflicts: int = 0            # distinct (id, version, their sha256)
    failed_entries: int = 0
    failed_peers: int = 0
    not_managers: int = 0         # peers that have no registry_snapshot method
    malformed: int = 0            # snapshot entries/tombstones that did not parse


class Replicator:
    def __init__(self, library: ModelLibrary, peers: PeerList, *, interval_s: float = 30.0,
                 timeout_s: float = 10.0, chunk_size: int = CHUNK_SIZE, window: int = WINDOW):
        self.library = library
        self.peers = peers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.window = window
        self.stats = ReplicationStats()
        self._seen_conflicts: set[tuple[str, str, str]] = set()
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Sync every interval until cancelled."""
        while True:
            try:
                await self.sync_once()
            except Exception:
                # A failed round (e.g. a full disk) is logged and retried next
                # period rather than ending replication for the life of the process.
                self.stats.failed_rounds += 1
                log.exception("replication round failed")
            await asyncio.sleep(self.interval_s)

    async def sync_once(self) -> list[MergeReport]:
        """One round: merge every peer's snapshot in turn. Returns one report per
        peer that answered."""
        async with self._lock:
            self.stats.rounds += 1
            peers = list(self.peers())
            reports = []
            for peer in peers:
                try:
                    snapshot = await peer.request("registry_snapshot", {}, timeout=self.timeout_s)
                    entries, tombs = self._parse(snapshot)
                except PEER_FAILURES as e:
                    if getattr(e, "code", None) == "UNKNOWN_METHOD":
                        self.stats.not_managers += 1  # a gateway or worker, not a manager
                    else:
                        self.stats.failed_peers += 1
                        log.info("registry snapshot from a peer failed: %s", e)
                    continue
                others = [peer] + [p for p in peers if p is not peer]
                reports.append(await self._merge(entries, tombs, others))
            return reports

    async def _merge(self, entries: list[ModelEntry], tombs: list[Tombstone],
                     peers: list[RpcPeerLike]) -> MergeReport:
        async def fetch(entry: ModelEntry):
            # No validation here: the library validates when it registers the file,
            # and removes it again if that fails.
            return await fetch_file(peers, entry.sha256, entry.size, self.library.store,
                                    timeout=self.timeout_s, chunk_size=self.chunk_size,
                                    window=self.window)

        plan = self.library.registry.plan_merge(entries, tombs)
        report = await self.library.merge(plan, fetch)
        self.stats.added += len(report.added)
        for entry in report.added:  # operators (and the multi-process tests) see each arrival
            log.info("replicated model %s version %s sha256 %s", entry.id, entry.version, entry.sha256)
        self.stats.deleted += len(report.deleted)
        self.stats.failed_entries += len(report.failed)
        for mine, theirs in report.conflicts:
            key = (theirs.id, theirs.version, theirs.sha256)
            if key not in self._seen_conflicts:
                self._seen_conflicts.add(key)
                self.stats.conflicts += 1
                log.warning("replication conflict: %s version %s is %s here and %s on a peer; "
                            "keeping ours", mine.id, mine.version, mine.sha256, theirs.sha256)
        return report

    def _parse(self, snapshot: Any) -> tuple[list[ModelEntry], list[Tombstone]]:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("entries"), list):
            raise BadRequestError("registry snapshot is not a map with an entries list")
        entries, tombs = [], []
        for raw in snapshot["entries"]:
            try:
                entries.append(ModelEntry.from_wire(raw))
            except BadRequestError:
                self.stats.malformed += 1
        for raw in snapshot.get("tombstones") or []:
            try:
                tombs.append(Tombstone.from_wire(raw))
            except BadRequestError:
                self.stats.malformed += 1
        return entries, tombs

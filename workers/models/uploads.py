"""Upload sessions: a file streamed in numbered chunks across several RPC calls.

A session holds the store's PendingFile and what the row will say (id, version,
type, tags). Chunks must arrive in order (`offset` equals the bytes received), each
at most MAX_CHUNK. A session idle for `timeout_s` is aborted by `expire`, leaving
nothing behind.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Callable

from workers.errors import Busy

from .errors import BadRequestError, UploadNotFoundError
from .store import ContentStore, PendingFile

MAX_CHUNK = 1 << 20


@dataclasses.dataclass
class UploadSession:
    id: str
    model_id: str
    version: str
    model_type: str
    tags: tuple[str, ...]
    sha256: str
    size: int
    pending: PendingFile | None     # None: the store already holds this sha256
    deadline: float

    @property
    def received(self) -> int:
        return self.size if self.pending is None else self.pending.received

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.abort()


class UploadTable:
    def __init__(self, store: ContentStore, *, timeout_s: float, max_sessions: int,
                 clock: Callable[[], float]):
        self.store = store
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: dict[str, UploadSession] = {}
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def begin(self, model_id: str, version: str, model_type: str, tags: tuple[str, ...],
              sha256: str, size: int) -> UploadSession:
        """A new session; Busy when `max_sessions` are open, TooLargeError over the limit."""
        if len(self._sessions) >= self.max_sessions:
            raise Busy(f"{len(self._sessions)} uploads in progress",
                       retry_after_ms=int(self.timeout_s * 1000 / 10))
        pending = None if self.store.has(sha256) else self.store.begin(sha256, size)
        if pending is None and self.store.stat(sha256).size != size:
            raise BadRequestError(f"size {size} does not match the stored file {sha256}")
        session = UploadSession(secrets.token_hex(16), model_id, version, model_type, tags,
                                sha256, size, pending, self.clock() + self.timeout_s)
        self._sessions[session.id] = session
        return session

    def write(self, session_id: str, offset: int, data: bytes) -> int:
        """Append a chunk at `offset`; returns the bytes received. An oversized chunk
        or wrong offset is refused and the session kept; bytes beyond the declared
        size end the session (the store rejects them)."""
        session = self._get(session_id)
        if len(data) > MAX_CHUNK:
            raise BadRequestError(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK}")
        if offset != session.received:
            raise BadRequestError(f"chunk at offset {offset}, expected {session.received}",
                                  details={"expected_offset": session.received})
        if session.pending is None:
            if data:
                raise BadRequestError("the file is already stored: commit without chunks")
            return session.received
        try:
            received = session.pending.write(data)
        except Exception:
            self._sessions.pop(session_id, None)
            raise
        session.deadline = self.clock() + self.timeout_s
        return received

    def take(self, session_id: str) -> UploadSession:
        """Remove the session for commit (no more chunks are accepted)."""
        session = self._get(session_id)
        del self._sessions[session_id]
        return session

    def abort(self, session_id: str) -> None:
        self.take(session_id).abort()

    def expire(self, now: float | None = None) -> int:
        """Abort sessions idle past their deadline; returns how many."""
        now = self.clock() if now is None else now
        stale = [s for s in self._sessions.values() if s.deadline <= now]
        for session in stale:
            del self._sessions[session.id]
            session.abort()
        self.expired += len(stale)
        return len(stale)

    def abort_all(self) -> None:
        for session in self._sessions.values():
            session.abort()
        self._sessions.clear()

    def _get(self, session_id: str) -> UploadSession:
        try:
            return self._sessions[session_id]
        except (KeyError, TypeError):
            raise UploadNotFoundError(f"no upload session {session_id!r} "
                                      "(never begun, finished or expired)") from None

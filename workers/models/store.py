"""A content-addressed file store: each file is named by the sha256 of its bytes.

A file becomes visible only whole and verified: bytes go to a temp file in the same
folder, and on commit the size and sha256 the client declared are checked, the file
is validated (e.g. parsed as ONNX), fsynced and renamed into place, and the folder is
fsynced. A rejected or abandoned upload leaves nothing; temp files left by a crash are
removed when the store opens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import re
import secrets
from typing import Callable, Iterator, TypeVar

from .errors import (BadRequestError, ChecksumError, NotFoundError, TooLargeError,
                     TruncatedError)

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")


def check_sha256(text: object) -> str:
    """`text` as a lowercase sha256 hex digest; BadRequestError if it is not one."""
    if not isinstance(text, str) or not _SHA256_RE.match(text.lower()):
        raise BadRequestError(f"not a sha256 hex digest: {text!r}")
    return text.lower()


@dataclasses.dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    path: pathlib.Path


class ContentStore:
    """Files under `root`, each named by its sha256; at most `max_size` bytes each."""

    def __init__(self, root: str | pathlib.Path, max_size: int):
        self.root = pathlib.Path(root)
        self.max_size = max_size
        self.root.mkdir(parents=True, exist_ok=True)
        self.removed_temp_files = self._remove_temp_files()

    def _remove_temp_files(self) -> int:
        count = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                entry.unlink(missing_ok=True)
                count += 1
        if count:
            log.info("removed %d temp file(s) left by an earlier run in %s", count, self.root)
            _fsync_dir(self.root)
        return count

    def path(self, sha256: str) -> pathlib.Path:
        return self.root / check_sha256(sha256)

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def stat(self, sha256: str) -> StoredFile:
        """The stored file named `sha256`; NotFoundError if there is none."""
        path = self.path(sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"no stored file {sha256}") from None
        return StoredFile(sha256, size, path)

    def read(self, sha256: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of the file from `offset` (fewer at its end)."""
        if offset < 0 or length < 0:
            raise BadRequestError("offset and length must not be negative")
        try:
            with open(self.path(sha256), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise NotFoundError(f"no stored file {sha256}") from None

    def remove(self, sha256: str) -> bool:
        """Delete the file; False if it was not there."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.root)
        return True

    def hashes(self) -> Iterator[str]:
        """The sha256 of every stored file (temp files and strangers skipped)."""
        for entry in self.root.iterdir():
            if _SHA256_RE.match(entry.name) and entry.is_file():
                yield entry.name

    def begin(self, sha256: str, size: int) -> "PendingFile":
        """Start writing a file the client says has this sha256 and size."""
        sha256 = check_sha256(sha256)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequestError(f"size must be a non-negative integer, got {size!r}")
        if size > self.max_size:
            raise TooLargeError(f"declared size {size} exceeds the limit of {self.max_size} bytes")
        return PendingFile(self, sha256, size)


class PendingFile:
    """A file being written; `commit` makes it visible, `abort` forgets it."""

    def __init__(self, store: ContentStore, sha256: str, size: int):
        self.store = store
        self.sha256 = sha256
        self.size = size
        self.received = 0
        self._hash = hashlib.sha256()
        self.temp_path = store.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self._file = open(self.temp_path, "xb")
        self.closed = False

    def write(self, data: bytes) -> int:
        """Append `data`; returns the bytes received so far. Rejects (and aborts)
        when the total would exceed the declared size."""
        self._check_open()
        if self.received + len(data) > self.size:
            self.abort()
            raise TooLargeError(f"upload exceeds its declared size of {self.size} bytes")
        self._file.write(data)
        self._hash.update(data)
        self.received += len(data)
        return self.received

    def commit(self, validate: Callable[[pathlib.Path], T] | None = None) -> tuple[StoredFile, T | None]:
        """Verify size and sha256, run `validate` on the complete temp file, then
        rename it into place. Returns the stored file and what `validate` returned.
        On any failure the temp file is removed and the error re-raised."""
        self._check_open()
        try:
            if self.received != self.size:
                raise TruncatedError(f"upload has {self.received} of {self.size} declared bytes")
            digest = self._hash.hexdigest()
            if digest != self.sha256:
                raise ChecksumError(f"sha256 of the upload is {digest}, declared {self.sha256}")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            meta = validate(self.temp_path) if validate is not None else None
            final = self.store.root / self.sha256
            # Same name means same bytes, so a concurrent upload of the same file
            # winning the race is harmless: replacing it changes nothing.
            os.replace(self.temp_path, final)
            _fsync_dir(self.store.root)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return StoredFile(self.sha256, self.size, final), meta

    def abort(self) -> None:
        """Close and delete the temp file; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self._file.close()
        self.temp_path.unlink(missing_ok=True)

    def _check_open(self) -> None:
        if self.closed:
            raise BadRequestError("upload is already committed or aborted")


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Where model files come from: the `ModelSource` protocol and a local folder.

    class ModelSource(Protocol):
        async def fetch(self, model_id: str, version: str | None) -> ModelFile

`fetch` returns a local file with its sha256 and size, having checked the
digest against what the source knows (a pinned sha256); version None means the
newest version it has. It raises ModelNotFound for an unknown id/version and
ChecksumMismatch for a file whose content differs from its pin. The worker
hashes the bytes it loads once more, so a source cannot hand it other bytes.
The model manager provides a networked source (fetching from any peer that has
the file); `LocalDirectorySource` serves a folder written by
scripts/make_models.py (manifest.json) and/or topics.toml `[[models]]` entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

from ..config import ModelConfig
from ..errors import ChecksumMismatch, ConfigInvalid, ModelNotFound

CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    model_id: str
    version: str
    path: Path
    sha256: str
    size: int


@runtime_checkable
class ModelSource(Protocol):
    async def fetch(self, model_id: str, version: str | None) -> ModelFile: ...


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def version_key(version: str) -> tuple:
    """Sort key: "10" after "9", "1.10" after "1.9"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", version))


@dataclass(frozen=True)
class _Entry:
    file: str
    sha256: str | None


class LocalDirectorySource:
    """Model files in `root`, known from `root/manifest.json` and `catalog`.

    A catalog entry (topics.toml) overrides the manifest for the same id and
    version. With `require_sha256` (the default) a model without a pinned digest
    is refused, since nothing could be verified.
    """

    def __init__(self, root: str | Path, catalog: Iterable[ModelConfig] = (), *, require_sha256: bool = True):
        self.root = Path(root)
        self.require_sha256 = require_sha256
        self._entries: dict[tuple[str, str], _Entry] = {}
        manifest = self.root / "manifest.json"
        if manifest.exists():
            self._read_manifest(manifest)
        for m in catalog:
            if m.file is None and (m.id, m.version) not in self._entries:
                continue  # served from another source (e.g. the model manager)
            old = self._entries.get((m.id, m.version))
            self._entries[(m.id, m.version)] = _Entry(m.file or old.file, m.sha256 or (old.sha256 if old else None))

    def _read_manifest(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
            for e in doc["models"]:
                self._entries[(str(e["id"]), str(e["version"]))] = _Entry(str(e["file"]), e.get("sha256"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigInvalid(f"bad model manifest {path}: {e}") from e

    def known(self) -> list[tuple[str, str]]:
        return sorted(self._entries)

    def _resolve(self, model_id: str, version: str | None) -> tuple[str, _Entry]:
        versions = [v for (i, v) in self._entries if i == model_id]
        if not versions:
            raise ModelNotFound(f"model {model_id!r} is not in {self.root}",
                                details={"known": sorted({i for i, _ in self._entries})})
        if version is None:
            version = max(versions, key=version_key)
        elif version not in versions:
            raise ModelNotFound(f"model {model_id!r} has no version {version!r}; versions: {sorted(versions)}",
                                details={"expected": sorted(versions)})
        return version, self._entries[(model_id, version)]

    async def fetch(self, model_id: str, version: str | None) -> ModelFile:
        version, entry = self._resolve(model_id, version)
        path = Path(entry.file) if Path(entry.file).is_absolute() else self.root / entry.file
        if not path.is_file():
            # Not here: the caller may find it elsewhere (the network source asks the managers).
            raise ModelNotFound(f"model file {path} for {model_id!r} version {version!r} is missing")
        if entry.sha256 is None and self.require_sha256:
            raise ChecksumMismatch(f"model {model_id!r} version {version!r} has no pinned sha256 to verify")
        try:
            digest, size = await asyncio.to_thread(sha256_file, path)
        except FileNotFoundError:
            raise ModelNotFound(f"model file {path} for {model_id!r} version {version!r} is missing") from None
        if entry.sha256 is not None and digest != entry.sha256.lower():
            raise ChecksumMismatch(f"model {model_id!r} version {version!r}: expected sha256 {entry.sha256}, "
                                   f"got {digest}", details={"expected": entry.sha256, "got": digest})
        return ModelFile(model_id, version, path, digest, size)

"""Upload a model file to a model manager, with a progress bar on stderr.

    python -m workers.models.upload FILE --id ID --version V [--type onnx] [--tag T]...
        [--config topics.toml] [--namespace NS] [--bootstrap HOST:PORT]... [--timeout S]

`upload_file` is the protocol (begin, chunks, commit; abort on failure) against
any RPC peer; `connect_manager` is the one transport function: it finds a model
manager on the mesh and yields an RPC peer to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import pathlib
import sys
from typing import Any, AsyncIterator, Callable, Sequence

from mesh.topics import topic_key
from workers.config import TopicsConfig, load_topics, parse_address

from workers.errors import ConfigInvalid

from .errors import BadRequestError, FetchError
from .fetch import PEER_FAILURES, RpcPeerLike
from .uploads import MAX_CHUNK

Progress = Callable[[int, int], None]


def file_digest(path: pathlib.Path) -> tuple[str, int]:
    """(sha256 hex, size) of the file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(MAX_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


async def upload_file(peer: RpcPeerLike, path: str | pathlib.Path, model_id: str, version: str,
                      *, model_type: str = "onnx", tags: Sequence[str] = (),
                      timeout: float = 60.0, progress: Progress | None = None) -> dict[str, Any]:
    """Stream the file at `path` to the manager behind `peer`; returns the stored
    model entry. Errors from the manager propagate (as the RPC layer raises them)
    after the upload session is aborted."""
    path = pathlib.Path(path)
    sha256, size = await asyncio.to_thread(file_digest, path)
    begin = await peer.request("upload_begin", {"id": model_id, "version": version,
                                                "type": model_type, "sha256": sha256,
                                                "size": size, "tags": list(tags)}, timeout=timeout)
    if "model" in begin:
        if progress:
            progress(size, size)
        return begin["model"]
    session, offset = begin["upload"], begin["offset"]
    chunk = min(int(begin.get("chunk_size", MAX_CHUNK)), MAX_CHUNK)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while offset < size:
                data = f.read(chunk)
                if not data:
                    raise BadRequestError(f"{path} shrank while uploading")
                reply = await peer.request("upload_chunk", {"upload": session, "offset": offset,
                                                            "data": data}, timeout=timeout)
                offset = reply["received"]
                if progress:
                    progress(offset, size)
        return await peer.request("upload_commit", {"upload": session}, timeout=timeout)
    except BaseException:
        with contextlib.suppress(*PEER_FAILURES):
            await peer.request("upload_abort", {"upload": session}, timeout=timeout)
        raise


class ProgressBar:
    """A one-line text progress bar redrawn with carriage returns."""

    def __init__(self, stream=sys.stderr, width: int = 40):
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        filled = int(frac * self.width)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{frac * 100:5.1f}% {done / 2**20:.1f}/{total / 2**20:.1f} MiB")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


@contextlib.asynccontextmanager
async def connect_manager(namespace: str, bootstrap: Sequence[tuple[str, int]],
                          timeout: float) -> AsyncIterator[RpcPeerLike]:
    """The transport: join the model-manager topic as a client on a fresh mesh
    runtime (its own DHT node and Swarm) and yield an RPC peer on the first
    manager connection; FetchError when none is found within `timeout`."""
    from mesh.crypto import keypair
    from mesh.runtime import MeshRuntime, RuntimeConfig

    topic = topic_key(namespace, "model-manager")
    runtime = MeshRuntime(RuntimeConfig(keypair=keypair(), bootstrap=tuple(bootstrap)))
    try:
        await runtime.start()
        runtime.swarm.join(topic, server=False, client=True)
        try:
            conn = await runtime.connection(topic, timeout)
        except TimeoutError:
            raise FetchError(f"no model manager found in {timeout} s") from None
        yield runtime.peer(conn)
    finally:
        await runtime.stop()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers.models.upload", description=__doc__.split("\n")[0])
    p.add_argument("file", type=pathlib.Path)
    p.add_argument("--id", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--type", default="onnx")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--config", default="topics.toml", metavar="PATH",
                   help="topics.toml giving the namespace and bootstrap list (default ./topics.toml)")
    p.add_argument("--namespace", default=None, help="topic namespace (default: from --config)")
    p.add_argument("--bootstrap", action="append", default=[],
                   help="host:port (repeatable; default: from --config)")
    p.add_argument("--timeout", type=float, default=60.0)
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    topics = load_topics(args.config) if pathlib.Path(args.config).is_file() else TopicsConfig()
    namespace = args.namespace or topics.namespace
    bootstrap = [parse_address(b, "--bootstrap") for b in args.bootstrap] or list(topics.bootstrap)
    async with connect_manager(namespace, bootstrap, args.timeout) as peer:
        return await upload_file(peer, args.file, args.id, args.version, model_type=args.type,
                                 tags=args.tag, timeout=args.timeout, progress=ProgressBar())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.file.is_file():
        print(f"error: no file {args.file}", file=sys.stderr)
        return 2
    try:
        entry = asyncio.run(_main(args))
    except (*PEER_FAILURES, ConfigInvalid) as e:
        print(f"error: {getattr(e, 'code', type(e).__name__)}: {e}", file=sys.stderr)
        return 1
    print(f"stored {entry['id']} version {entry['version']} sha256 {entry['sha256']} "
          f"({entry['size']} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

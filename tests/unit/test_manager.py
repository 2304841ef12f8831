"""ModelManager RPC methods, upload sessions, replication between two managers, and
the network model source, all in one process through LocalPeer."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib

import pytest

from mesh.errors import RemoteError
from workers.models.errors import FetchError, NotFoundError
from workers.inference.source import ModelSource
from workers.models.fetch import fetch_file
from workers.models.source import NetworkModelSource
from workers.models.manager import ManagerConfig, ModelManager
from workers.models.store import TEMP_PREFIX, ContentStore
from workers.models.upload import upload_file

from .manager_peers import LocalPeer
from .model_files import big_onnx_bytes, onnx_bytes, sha256, write

LIMIT = 8 << 20


def config(tmp_path: pathlib.Path, name: str, **kw) -> ManagerConfig:
    return ManagerConfig(name=name, data_dir=str(tmp_path / name), max_model_bytes=LIMIT,
                         replicate_interval_s=0, **kw)


@pytest.fixture
async def manager(tmp_path):
    m = ModelManager(config(tmp_path, "a"))
    await m.start()
    yield m
    await m.stop()


def store_names(m: ModelManager) -> set[str]:
    return {p.name for p in m.library.store.root.iterdir()}


async def rpc_error(awaitable) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        await awaitable
    return info.value


async def test_upload_get_list_versions_and_read_back(manager, tmp_path):
    peer = LocalPeer(manager)
    big = big_onnx_bytes(1)
    seen = []
    entry = await upload_file(peer, write(tmp_path / "big.onnx", big), "big", "1",
                              tags=["demo"], progress=lambda d, t: seen.append((d, t)))
    assert entry["sha256"] == sha256(big) and entry["size"] == len(big)
    assert peer.calls.count("upload_chunk") == 3 and seen[-1] == (len(big), len(big))
    assert entry["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["N", 800]}]
    await upload_file(peer, write(tmp_path / "v2.onnx", onnx_bytes(2)), "big", "2")

    assert (await peer.request("get", {"id": "big"}, timeout=5))["version"] == "2"
    assert (await peer.request("get", {"id": "big", "version": "1"}, timeout=5)) == entry
    versions = await peer.request("versions", {"id": "big"}, timeout=5)
    assert [v["version"] for v in versions["versions"]] == ["1", "2"]
    listed = await peer.request("list", {"tag": "demo"}, timeout=5)
    assert [m["version"] for m in listed["models"]] == ["1"]
    chunk = await peer.request("read_chunk", {"sha256": sha256(big), "offset": 5, "length": 100},
                               timeout=5)
    assert chunk == {"data": big[5:105], "size": len(big)}
    stat = await peer.request("stat", {"sha256": sha256(big)}, timeout=5)
    assert stat == {"sha256": sha256(big), "size": len(big)}
    assert (await rpc_error(peer.request("get", {"id": "nope"}, timeout=5))).code == "MODEL_NOT_FOUND"


async def begin(peer, data: bytes, model_id="m", version="1", **over):
    value = {"id": model_id, "version": version, "sha256": sha256(data), "size": len(data), **over}
    return await peer.request("upload_begin", value, timeout=5)


async def test_rejections_leave_nothing(manager):
    peer = LocalPeer(manager)
    data = onnx_bytes(1)

    async def attempt(declared: bytes, sent: bytes, **over) -> str:
        up = (await begin(peer, declared, **over))["upload"]
        try:
            await peer.request("upload_chunk", {"upload": up, "offset": 0, "data": sent}, timeout=5)
            await peer.request("upload_commit", {"upload": up}, timeout=5)
        except RemoteError as e:
            return e.code
        return "OK"

    assert await attempt(onnx_bytes(2), data, size=len(data)) == "CHECKSUM_MISMATCH"
    assert await attempt(data, data[:-3]) == "UPLOAD_TRUNCATED"
    assert await attempt(data[:-3], data) == "UPLOAD_TOO_LARGE"
    junk = b"this is not an onnx file" * 10
    assert await attempt(junk, junk) == "INVALID_MODEL"
    code = (await rpc_error(begin(peer, data, size=LIMIT + 1))).code
    assert code == "UPLOAD_TOO_LARGE"
    assert (await rpc_error(begin(peer, data, sha256="xyz"))).code == "INVALID_INPUT"
    assert (await rpc_error(begin(peer, data, type="tensorflow"))).code == "INVALID_INPUT"
    assert store_names(manager) == set()
    assert manager.library.registry.list() == []
    assert len(manager.uploads) == 0


async def test_bad_chunks_are_refused_and_the_session_survives(manager):
    peer = LocalPeer(manager)
    data = onnx_bytes(1)
    up = (await begin(peer, data))["upload"]
    err = await rpc_error(peer.request("upload_chunk", {"upload": up, "offset": 7, "data": data},
                                       timeout=5))
    assert err.code == "INVALID_INPUT"
    for bad in [{"upload": up, "offset": 0, "data": "text"},
                {"upload": up, "offset": -1, "data": b""},
                {"upload": up, "offset": 0, "data": b"\0" * ((1 << 20) + 1)}, None, [1]]:
        assert (await rpc_error(peer.request("upload_chunk", bad, timeout=5))).code == "INVALID_INPUT"
    await peer.request("upload_chunk", {"upload": up, "offset": 0, "data": data}, timeout=5)
    entry = await peer.request("upload_commit", {"upload": up}, timeout=5)
    assert entry["sha256"] == sha256(data)
    for method in ["upload_chunk", "upload_commit", "upload_abort"]:
        err = await rpc_error(peer.request(method, {"upload": up, "offset": 0, "data": b""}, timeout=5))
        assert err.code == "UPLOAD_NOT_FOUND"


async def test_abort_and_expiry_leave_nothing(manager):
    peer = LocalPeer(manager)
    data = onnx_bytes(1)
    up = (await begin(peer, data))["upload"]
    await peer.request("upload_chunk", {"upload": up, "offset": 0, "data": data[:10]}, timeout=5)
    assert any(n.startswith(TEMP_PREFIX) for n in store_names(manager))
    await peer.request("upload_abort", {"upload": up}, timeout=5)
    assert store_names(manager) == set()

    up = (await begin(peer, data))["upload"]
    await peer.request("upload_chunk", {"upload": up, "offset": 0, "data": data[:10]}, timeout=5)
    loop = asyncio.get_running_loop()
    assert manager.uploads.expire(loop.time() + 1) == 0
    assert manager.uploads.expire(loop.time() + manager.config.upload_timeout_s + 1) == 1
    assert store_names(manager) == set()
    err = await rpc_error(peer.request("upload_chunk", {"upload": up, "offset": 10, "data": b"x"},
                                       timeout=5))
    assert err.code == "UPLOAD_NOT_FOUND"


async def test_stop_aborts_open_uploads(tmp_path):
    m = ModelManager(config(tmp_path, "a"))
    await m.start()
    up = (await begin(LocalPeer(m), onnx_bytes(1)))["upload"]
    await LocalPeer(m).request("upload_chunk", {"upload": up, "offset": 0, "data": b"abc"}, timeout=5)
    await m.stop()
    assert list((tmp_path / "a" / "files").iterdir()) == []


async def test_existing_content_needs_no_bytes_and_same_key_is_idempotent(manager, tmp_path):
    peer = LocalPeer(manager)
    path = write(tmp_path / "m.onnx", onnx_bytes(1))
    first = await upload_file(peer, path, "m", "1")
    again = await begin(peer, onnx_bytes(1))
    assert again == {"model": first}
    alias = await begin(peer, onnx_bytes(1), model_id="alias")
    assert alias["offset"] == len(onnx_bytes(1))
    entry = await peer.request("upload_commit", {"upload": alias["upload"]}, timeout=5)
    assert entry["sha256"] == first["sha256"] and entry["id"] == "alias"
    err = await rpc_error(begin(peer, onnx_bytes(2)))
    assert err.code == "CONFLICT"


async def test_delete_semantics(manager, tmp_path):
    peer = LocalPeer(manager)
    path = write(tmp_path / "m.onnx", onnx_bytes(1))
    await upload_file(peer, path, "m", "1")
    await upload_file(peer, path, "m", "2")
    reply = await peer.request("delete", {"id": "m", "version": "1"}, timeout=5)
    assert reply["file_removed"] is False and store_names(manager) == {sha256(onnx_bytes(1))}
    reply = await peer.request("delete", {"id": "m", "version": "2"}, timeout=5)
    assert reply["file_removed"] is True and store_names(manager) == set()
    err = await rpc_error(peer.request("delete", {"id": "m", "version": "2"}, timeout=5))
    assert err.code == "MODEL_NOT_FOUND"
    err = await rpc_error(peer.request("read_chunk", {"sha256": sha256(onnx_bytes(1)), "offset": 0,
                                                     "length": 10}, timeout=5))
    assert err.code == "MODEL_NOT_FOUND"


async def test_concurrent_uploads_of_the_same_file(manager, tmp_path):
    path = write(tmp_path / "big.onnx", big_onnx_bytes(3))
    results = await asyncio.gather(*[upload_file(LocalPeer(manager), path, "big", "1")
                                     for _ in range(3)])
    assert all(r == results[0] for r in results)
    assert store_names(manager) == {sha256(big_onnx_bytes(3))}
    assert len(manager.library.registry.list()) == 1


@pytest.fixture
async def pair(tmp_path):
    a = ModelManager(config(tmp_path, "a"), peers=lambda: [LocalPeer(b)])
    b = ModelManager(config(tmp_path, "b"), peers=lambda: [LocalPeer(a)])
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def test_two_managers_replicate_registry_and_files(pair, tmp_path):
    a, b = pair
    big = big_onnx_bytes(4)
    entry = await upload_file(LocalPeer(a), write(tmp_path / "big.onnx", big), "big", "1",
                              tags=["x"])
    await upload_file(LocalPeer(b), write(tmp_path / "s.onnx", onnx_bytes(5)), "small", "1")
    [report] = await b.replicator.sync_once()
    assert [e.key for e in report.added] == [("big", "1")]
    assert (await LocalPeer(b).request("get", {"id": "big", "version": "1"}, timeout=5)) == entry
    assert b.library.store.path(sha256(big)).read_bytes() == big
    await a.replicator.sync_once()
    assert {e.key for e in a.library.registry.list()} == {("big", "1"), ("small", "1")}
    assert (await b.replicator.sync_once())[0].added == []


async def test_replication_conflict_keeps_ours_and_counts_once(pair, tmp_path):
    a, b = pair
    ea = await upload_file(LocalPeer(a), write(tmp_path / "1.onnx", onnx_bytes(1)), "m", "1")
    eb = await upload_file(LocalPeer(b), write(tmp_path / "2.onnx", onnx_bytes(2)), "m", "1")
    for _ in range(2):
        await a.replicator.sync_once()
        await b.replicator.sync_once()
    assert a.replicator.stats.conflicts == 1 and b.replicator.stats.conflicts == 1
    assert a.library.registry.get("m", "1").to_wire() == ea
    assert b.library.registry.get("m", "1").to_wire() == eb
    assert store_names(a) == {ea["sha256"]} and store_names(b) == {eb["sha256"]}


async def test_deletes_replicate_and_are_not_pulled_back(pair, tmp_path):
    a, b = pair
    await upload_file(LocalPeer(a), write(tmp_path / "1.onnx", onnx_bytes(1)), "m", "1")
    await b.replicator.sync_once()
    await LocalPeer(a).request("delete", {"id": "m", "version": "1"}, timeout=5)
    await a.replicator.sync_once()          # b still has it: a must not take it back
    assert a.library.registry.list() == []
    await b.replicator.sync_once()
    assert b.library.registry.list() == [] and store_names(b) == set()
    await upload_file(LocalPeer(a), write(tmp_path / "1.onnx", onnx_bytes(1)), "m", "1")
    await b.replicator.sync_once()          # a re-upload after the delete wins
    assert [e.key for e in b.library.registry.list()] == [("m", "1")]


async def test_replication_survives_bad_peers(tmp_path):
    class Garbage:
        async def request(self, method, value, *, timeout):
            return {"entries": [{"id": 1}, "junk"], "tombstones": [None]} \
                if method == "registry_snapshot" else b"\0"

    class Dead:
        async def request(self, method, value, *, timeout):
            raise RemoteError("gone", code="CHANNEL_CLOSED")

    class Gateway:
        async def request(self, method, value, *, timeout):
            raise RemoteError("no such method", code="UNKNOWN_METHOD")

    m = ModelManager(config(tmp_path, "a"), peers=lambda: [Garbage(), Dead(), Gateway()])
    await m.start()
    try:
        await m.replicator.sync_once()
        stats = m.replicator.stats
        assert (stats.malformed, stats.failed_peers, stats.not_managers) == (3, 1, 1)
    finally:
        await m.stop()


async def test_network_model_source_tries_the_next_peer(manager, tmp_path):
    big = big_onnx_bytes(6)
    await upload_file(LocalPeer(manager), write(tmp_path / "big.onnx", big), "big", "1")
    cache = ContentStore(tmp_path / "cache", LIMIT)
    peers = [LocalPeer(manager, fail_reads_after=1), LocalPeer(manager, corrupt=True),
             LocalPeer(manager)]
    source = NetworkModelSource(cache, lambda: peers, chunk_size=1 << 20, window=2)
    assert isinstance(source, ModelSource)
    results = await asyncio.gather(source.fetch("big", "1"), source.fetch("big", None))
    got = results[0]
    assert results[1] == got
    assert (got.model_id, got.version, got.sha256, got.size) == ("big", "1", sha256(big), len(big))
    assert got.path.read_bytes() == big
    assert sorted(p.name for p in cache.root.iterdir()) == [sha256(big)]
    assert peers[2].calls.count("read_chunk") == 3


async def test_network_model_source_failures_leave_nothing(manager, tmp_path):
    await upload_file(LocalPeer(manager), write(tmp_path / "m.onnx", onnx_bytes(1)), "m", "1")
    cache = ContentStore(tmp_path / "cache", LIMIT)
    source = NetworkModelSource(cache, lambda: [LocalPeer(manager, corrupt=True)])
    with pytest.raises(FetchError):
        await source.fetch("m", "1")
    with pytest.raises(NotFoundError):
        await source.fetch("other", "1")
    with pytest.raises(FetchError):
        await NetworkModelSource(cache, lambda: []).fetch("m", "1")
    with pytest.raises(FetchError):
        await fetch_file([LocalPeer(manager)], "c" * 64, 10, cache)
    assert list(cache.root.iterdir()) == []


async def test_replicated_file_that_is_not_onnx_is_rejected_and_not_kept(tmp_path):
    junk = b"not a model" * 100

    class Liar:
        """Advertises a model whose file is junk with a matching sha256."""

        async def request(self, method, value, *, timeout):
            if method == "registry_snapshot":
                return {"entries": [{"id": "j", "version": "1", "type": "onnx",
                                     "sha256": sha256(junk), "size": len(junk), "inputs": [],
                                     "outputs": [], "created": 1.0, "tags": []}],
                        "tombstones": []}
            assert method == "read_chunk"
            off = value["offset"]
            return {"data": junk[off:off + value["length"]], "size": len(junk)}

    m = ModelManager(config(tmp_path, "a"), peers=lambda: [Liar()])
    await m.start()
    try:
        [report] = await m.replicator.sync_once()
        assert [type(e).__name__ for _, e in report.failed] == ["InvalidModelError"]
        assert m.library.registry.list() == [] and store_names(m) == set()
    finally:
        await m.stop()


def test_upload_cli_arguments_and_progress_bar():
    import io

    from workers.models.upload import ProgressBar, parse_args
    args = parse_args(["m.onnx", "--id", "m", "--version", "2", "--tag", "a", "--tag", "b",
                       "--bootstrap", "127.0.0.1:49737"])
    assert (args.id, args.version, args.tag, args.bootstrap) == ("m", "2", ["a", "b"],
                                                               ["127.0.0.1:49737"])
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    bar(1 << 20, 2 << 20)
    bar(2 << 20, 2 << 20)
    assert out.getvalue().endswith("[##########] 100.0% 2.0/2.0 MiB\n")
    assert "[#####.....]  50.0%" in out.getvalue()


async def test_network_model_source_serves_a_resolved_version_locally(manager, tmp_path):
    await upload_file(LocalPeer(manager), write(tmp_path / "m.onnx", onnx_bytes(1)), "m", "1")
    cache = ContentStore(tmp_path / "cache", LIMIT)
    peer = LocalPeer(manager)
    source = NetworkModelSource(cache, lambda: [peer])
    first = await source.fetch("m", "1")
    calls = len(peer.calls)
    assert await source.fetch("m", "1") == first and len(peer.calls) == calls
    await source.fetch("m", None)           # "newest" is always asked again
    assert peer.calls[calls:] == ["get"]


def test_role_config_layers_and_checks():
    from workers.errors import ConfigInvalid
    from workers.models import ROLE, role_config
    doc = {"namespace": "ns", "workers": {"models": {"data_dir": "/tmp/x", "max_uploads": 3}}}
    cfg = role_config(doc, env={"MESH_MAX_UPLOADS": "4"}, argv=["--peer-timeout-s", "2.5", "--other"])
    assert (ROLE, cfg.namespace, cfg.data_dir, cfg.max_uploads, cfg.peer_timeout_s) == \
        ("workers.models", "ns", "/tmp/x", 4, 2.5)
    with pytest.raises(ConfigInvalid):
        role_config({}, argv=["--max-uploads", "0"])


async def test_manager_announces_the_model_manager_topic(manager):
    from mesh.topics import topic_key
    assert manager.topics == ["model-manager"]
    assert manager.topic_key("model-manager") == topic_key("inference-mesh", "model-manager")
    health = manager.health()
    assert health["models"] == 0 and health["replication"]["rounds"] == 0


async def test_specs_of_the_inference_engineers_models_match_their_manifest(manager, tmp_path):
    import json

    from scripts.make_models import write_models
    write_models(tmp_path / "made", ("mlp-tiny", "conv-small"))
    manifest = json.loads((tmp_path / "made" / "manifest.json").read_text())["models"]
    for m in manifest:
        entry = await upload_file(LocalPeer(manager), tmp_path / "made" / m["file"], m["id"],
                                  m["version"])
        assert entry["sha256"] == m["sha256"] and entry["size"] == m["size"]
        assert (entry["inputs"], entry["outputs"]) == (m["inputs"], m["outputs"])


async def test_connection_peers_track_open_connections():
    from workers.models.peers import ConnectionPeers

    class Conn:
        def __init__(self):
            self.closed = asyncio.get_running_loop().create_future()

    peers = ConnectionPeers(make_peer=lambda conn: ("peer", conn))
    a, b = Conn(), Conn()
    peers.on_connection(a, None)
    peers.on_connection(b, None)
    assert peers() == [("peer", a), ("peer", b)]
    a.closed.set_result(None)
    await asyncio.sleep(0)  # let the done callback run
    assert peers() == [("peer", b)]


async def wait_until(predicate, deadline_s: float, poll_s: float = 1.0) -> None:
    """Poll `predicate` on the loop's clock until it holds; TimeoutError after the deadline."""
    async def poll():
        while not predicate():
            await asyncio.sleep(poll_s)
    await asyncio.wait_for(poll(), deadline_s)


def test_idle_uploads_expire_on_their_own(tmp_path):
    from mesh import sim

    async def main():
        m = ModelManager(config(tmp_path, "a", upload_timeout_s=60.0))
        await m.start()
        try:
            up = (await begin(LocalPeer(m), onnx_bytes(1)))["upload"]
            await LocalPeer(m).request("upload_chunk", {"upload": up, "offset": 0, "data": b"ab"},
                                       timeout=5)
            start = asyncio.get_running_loop().time()
            await wait_until(lambda: len(m.uploads) == 0, 600)
            assert asyncio.get_running_loop().time() - start >= 60.0
            assert store_names(m) == set()
        finally:
            await m.stop()

    sim.run(main())


async def test_managers_replicate_on_their_own_schedule(tmp_path):
    # Real time: replication runs ONNX checks in threads, and a virtual clock would
    # race ahead of them. The interval is short; the wait is on the condition.
    a = ModelManager(dataclasses.replace(config(tmp_path, "a"), replicate_interval_s=0.05),
                     peers=lambda: [LocalPeer(b)])
    b = ModelManager(dataclasses.replace(config(tmp_path, "b"), replicate_interval_s=0.05),
                     peers=lambda: [LocalPeer(a)])
    await a.start()
    await b.start()
    try:
        await upload_file(LocalPeer(a), write(tmp_path / "m.onnx", onnx_bytes(1)), "m", "1")
        await wait_until(lambda: b.library.registry.find("m", "1") is not None, 30, poll_s=0.01)
        assert b.library.store.has(sha256(onnx_bytes(1)))
    finally:
        await a.stop()
        await b.stop()


async def test_manager_also_looks_up_its_topic_when_it_replicates(tmp_path):
    from workers.base import Mesh

    class Swarm:
        def __init__(self):
            self.joins = []

        def join(self, topic, *, server=True, client=True):
            self.joins.append((topic, server, client))

        async def leave(self, topic):
            pass

        def on_connection(self, callback):
            pass

    swarm = Swarm()
    m = ModelManager(dataclasses.replace(config(tmp_path, "a"), replicate_interval_s=3600))
    await m.start(Mesh(swarm=swarm))
    await m.stop()
    key = m.topic_key("model-manager")
    assert swarm.joins == [(key, True, True)]  # one join: announce and look up

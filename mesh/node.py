"""`python -m mesh.node`: run a DHT node, a bootstrap node, a topic member, or a role.

    python -m mesh.node --bootstrap-node                       # persistent, 127.0.0.1:49737
    python -m mesh.node --bootstrap 127.0.0.1:49737 --topic demo --json
    python -m mesh.node --topic books                          # the role topics.toml names
    python -m mesh.node --topic mlp-mid --ops-port 0 --max-queue 4   # role options after ours

A topic names a role when topics.toml has `[topics.NAME] role = "pkg.module"` or
a `[[models]]` entry `id = NAME` with a `role`. The role module is imported by
that dotted name (mesh never imports workers) and must provide
`role_config(topics_doc, env=, argv=, [topic=])` and `async run_role(config, mesh)`;
it runs on a `mesh.runtime.MeshRuntime` (DHT, Swarm, RPC server and client) until
SIGTERM/SIGINT, drains, and the node then shuts the mesh down. Arguments this
parser does not know are the role's (`--<config-field> value`).

Argument parsing (`parse_args` -> `NodeOptions`), the plain node (`run`) and the
role runner (`mesh.node_role.run_role_node`) are separate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass

from . import crypto, eventloop
from .dht import DHT, DHTConfig
from .encoding import Address
from .swarm_cli import run_swarm
from .topics import parse_topic_hex, topic_key

DEFAULT_PORT = 49737
UNANNOUNCE_TIMEOUT = 5.0


@dataclass(frozen=True)
class NodeOptions:
    bootstrap_node: bool
    host: str
    port: int
    bootstrap: tuple[Address, ...]
    topics: tuple[tuple[str, bytes], ...]  # (label, 32-byte key)
    announce: bool
    lookup: bool
    seed: bytes | None
    key_file: str | None
    json: bool
    lookup_interval: float
    persistent: bool
    config_path: str = "topics.toml"
    config_doc: dict | None = None            # the parsed topics.toml (roles get it whole)
    role: tuple[str, str] | None = None       # (topic name, role module) when a topic names a role
    role_args: tuple[str, ...] = ()           # arguments left for the role's config layering


def _parse_addr(text: str) -> Address:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host, int(port))


def _parse_addrs(text: str) -> list[Address]:
    return [_parse_addr(p) for p in text.split(",") if p.strip()]


def _load_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"error: {path}: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mesh.node", description="Run a HyperDHT-compatible mesh node, or the worker role a topic names.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""roles:
  When a --topic NAME names a role in the config file ([topics.NAME] role = "workers.book",
  or a [[models]] entry with id = NAME and a role), the node imports that module and runs
  the role on one mesh (DHT, Swarm, RPC server on every connection, RPC client) until
  SIGTERM/SIGINT, then drains it and leaves its topics. Options this parser does not know
  go to the role's config (--<field> value; env MESH_<FIELD>; [workers.<role>] in the file):
    python -m mesh.node --topic model-manager --data-dir var/mm --ops-port 0
    python -m mesh.node --topic inference --model-dir var/models       # loads models on request
    python -m mesh.node --topic mlp-mid --max-concurrent 1 --max-queue 4
    python -m mesh.node --topic books --db-path var/books.db
  With --json, a role node prints {"event": "ready"}, "role", "announced" {topic} per topic
  it serves, "peer", "connection"/"disconnection", and "stopped".""")
    p.add_argument("--bootstrap-node", action="store_true",
                   help="run a persistent bootstrap node on --host/--port (default 127.0.0.1:49737)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help=f"UDP port to bind (default {DEFAULT_PORT} for --bootstrap-node, else any)")
    p.add_argument("--bootstrap", type=_parse_addrs, action="append", default=[], metavar="HOST:PORT[,...]",
                   help="bootstrap nodes (repeatable; default: `bootstrap` from the config file)")
    p.add_argument("--topic", action="append", default=[], metavar="NAME",
                   help="join topic NAME: key = BLAKE2b-256('<namespace>:<NAME>') (repeatable); "
                        "if the config names a role for NAME, run that role (see below)")
    p.add_argument("--topic-key", action="append", default=[], metavar="HEX",
                   help="join a raw 32-byte topic key given as 64 hex characters (repeatable)")
    p.add_argument("--no-announce", action="store_true", help="do not announce on the topics (client only)")
    p.add_argument("--no-lookup", action="store_true", help="do not look the topics up (server only)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--seed", metavar="HEX", help="32-byte key-pair seed as hex")
    key.add_argument("--key-file", metavar="PATH",
                     help="file holding the hex seed of the key pair (created with a random seed if missing)")
    p.add_argument("--config", default="topics.toml", metavar="PATH",
                   help="topics config (namespace, bootstrap, roles, models); default ./topics.toml")
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "ready", ...} once, then {"event": "peer", ...} per peer')
    p.add_argument("--lookup-interval", type=float, default=10.0, metavar="SECONDS",
                   help="re-run topic lookups this often to find late joiners (default 10)")
    p.add_argument("--persistent", action="store_true",
                   help="store records for others at once (needs a reachable address)")
    return p


def find_role(cfg: dict, name: str) -> str | None:
    """The role module topics.toml names for topic `name`, or None."""
    table = cfg.get("topics", {}).get(name) if isinstance(cfg.get("topics"), dict) else None
    if isinstance(table, dict) and isinstance(table.get("role"), str):
        return table["role"]
    for entry in cfg.get("models", []) or []:
        if isinstance(entry, dict) and entry.get("id") == name and isinstance(entry.get("role"), str):
            return entry["role"]
    return None


def parse_args(argv: list[str] | None = None) -> NodeOptions:
    parser = build_parser()
    a, rest = parser.parse_known_args(argv)
    cfg = _load_config(a.config)
    roles = [(name, role) for name in a.topic if (role := find_role(cfg, name)) is not None]
    if len(roles) > 1:
        parser.error(f"one role per node: topics {[n for n, _ in roles]} each name a role")
    if rest and not roles:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (role options need a --topic that names a role)")
    namespace = cfg.get("namespace", "inference-mesh")
    bootstrap = [addr for group in a.bootstrap for addr in group]
    if not bootstrap and not a.bootstrap_node:
        try:
            bootstrap = [_parse_addr(s) for s in cfg.get("bootstrap", [])]
        except argparse.ArgumentTypeError as e:
            parser.error(f"{a.config}: {e}")
    topics = [(name, topic_key(namespace, name)) for name in a.topic]
    try:
        topics += [(h, parse_topic_hex(h)) for h in a.topic_key]
        seed = bytes.fromhex(a.seed) if a.seed else None
    except ValueError as e:
        parser.error(str(e))
    if seed is not None and len(seed) != 32:
        parser.error("--seed must be 32 bytes (64 hex characters)")
    port = a.port if a.port is not None else (DEFAULT_PORT if a.bootstrap_node else 0)
    return NodeOptions(
        bootstrap_node=a.bootstrap_node, host=a.host, port=port, bootstrap=tuple(bootstrap),
        topics=tuple(topics), announce=not a.no_announce, lookup=not a.no_lookup, seed=seed,
        key_file=a.key_file, json=a.json, lookup_interval=a.lookup_interval,
        persistent=a.persistent or a.bootstrap_node,
        config_path=a.config, config_doc=cfg, role=roles[0] if roles else None, role_args=tuple(rest),
    )


def load_keypair(opts: NodeOptions) -> crypto.KeyPair:
    if opts.seed is not None:
        return crypto.keypair(opts.seed)
    if opts.key_file:
        try:
            with open(opts.key_file) as f:
                seed = bytes.fromhex(f.read().strip())
        except FileNotFoundError:
            seed = crypto.random_bytes(32)
            fd = os.open(opts.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(seed.hex() + "\n")
        return crypto.keypair(seed)
    return crypto.keypair()


def dht_config(opts: NodeOptions) -> DHTConfig:
    return DHTConfig(
        bootstrap=opts.bootstrap, host=opts.host, port=opts.port,
        ephemeral=False if opts.persistent else None,
        firewalled=False if opts.persistent else None,
    )


class Emitter:
    """Prints events as JSON lines or as readable text."""

    def __init__(self, as_json: bool, out=None):
        self.as_json = as_json
        self.out = out or sys.stdout

    def __call__(self, event: str, **fields) -> None:
        if self.as_json:
            line = json.dumps({"event": event, **fields})
        else:
            line = event + " " + " ".join(f"{k}={v}" for k, v in fields.items())
        print(line, file=self.out, flush=True)


async def _lookup_loop(dht: DHT, opts: NodeOptions, own: bytes, emit: Callable, stop: asyncio.Event) -> None:
    seen: set[tuple[bytes, bytes]] = set()
    while not stop.is_set():
        for _, key in opts.topics:
            async for reply in dht.lookup(key):
                for peer in reply.peers:
                    if peer.public_key != own and (key, peer.public_key) not in seen:
                        seen.add((key, peer.public_key))
                        emit("peer", topic=key.hex(), public_key=peer.public_key.hex())
        try:
            await asyncio.wait_for(stop.wait(), opts.lookup_interval)
        except asyncio.TimeoutError:
            pass


async def run(opts: NodeOptions, emit: Callable, stop: asyncio.Event) -> None:
    """Start the node, announce / look up the topics until `stop` is set, then
    unannounce and shut down."""
    keypair = load_keypair(opts)
    dht = DHT(dht_config(opts))
    tasks: list[asyncio.Task] = []
    try:
        await dht.ready()
        host, port = dht.address
        emit("ready", public_key=keypair.public_key.hex(), host=host, port=port)
        if opts.announce:
            for _, key in opts.topics:
                await dht.announce(key, keypair, [dht.address])
        if opts.lookup and opts.topics:
            tasks.append(asyncio.ensure_future(_lookup_loop(dht, opts, keypair.public_key, emit, stop)))
        if opts.topics:  # connect to the peers found: {"event": "connection", ...} (mesh.swarm_cli)
            tasks.append(asyncio.ensure_future(run_swarm(
                dht, keypair, [k for _, k in opts.topics], opts.announce, opts.lookup, emit, stop)))
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if opts.announce and dht.io.loop is not None and not dht.destroyed:
            for _, key in opts.topics:
                try:
                    await asyncio.wait_for(dht.unannounce(key, keypair), UNANNOUNCE_TIMEOUT)
                except asyncio.TimeoutError:
                    pass
        await dht.destroy()
        emit("stopped")


async def _main(opts: NodeOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if opts.role is not None:
        from .node_role import run_role_node
        await run_role_node(opts, Emitter(opts.json), stop)
    else:
        await run(opts, Emitter(opts.json), stop)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        eventloop.run(_main(opts))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Running a worker role in `python -m mesh.node` (see mesh.node's docstring).

The role module is imported by its dotted name from topics.toml, so `mesh`
has no static dependency on `workers`. Its interface:

    config = module.role_config(topics_doc, env=os.environ, argv=role_args[, topic=name])
    await module.run_role(config, mesh)   # serves until SIGTERM/SIGINT, drains, returns

`mesh` is a `mesh.runtime.RoleMesh` (`.swarm`, `.rpc`, `.peers(topic_key)`,
`.runtime`, `attach_connections=False`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable

from .runtime import MeshRuntime, RuntimeConfig, role_mesh

log = logging.getLogger("mesh.node")


class RoleError(Exception):
    """The role could not be imported, configured or started (exit status 1)."""


def load_role(module_name: str):
    """The role module; RoleError if it cannot be imported or lacks the entry points."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RoleError(f"cannot import role {module_name!r}: {e}") from e
    for name in ("role_config", "run_role"):
        if not callable(getattr(module, name, None)):
            raise RoleError(f"role {module_name!r} has no {name}()")
    return module


def build_role_config(module, opts, topic: str):
    """The role's frozen config: topics.toml < MESH_* env < the node's leftover arguments."""
    kwargs = {"env": os.environ, "argv": list(opts.role_args)}
    if "topic" in inspect.signature(module.role_config).parameters:
        kwargs["topic"] = topic
    return module.role_config(opts.config_doc or {}, **kwargs)


def _configure_logging(module, config) -> None:
    hook = getattr(module, "setup_logging", None)
    if callable(hook):  # the role formats its own logs (workers: JSON lines)
        hook(config)
        return
    level = getattr(config, "log_level", "INFO")
    root = logging.getLogger()
    if not root.handlers:  # a role that configured its own logging keeps it
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(str(level).upper())


async def run_role_node(opts, emit: Callable[..., None], stop: asyncio.Event) -> None:
    """Start the mesh and the role named by opts.role; serve until a signal."""
    from .node import _lookup_loop, load_keypair  # the node module imports us lazily

    topic, module_name = opts.role
    try:
        module = load_role(module_name)
        config = build_role_config(module, opts, topic)
    except Exception as e:  # a config error of any role type: report it at the edge and exit 1
        _fail(emit, e)
    _configure_logging(module, config)
    keypair = load_keypair(opts)
    runtime = MeshRuntime(RuntimeConfig(keypair=keypair, bootstrap=opts.bootstrap, host=opts.host,
                                        port=opts.port, persistent=opts.persistent), emit=emit)
    tasks: list[asyncio.Task] = []
    failed: BaseException | None = None
    try:
        await runtime.start()
        host, port = runtime.address
        emit("ready", public_key=keypair.public_key.hex(), host=host, port=port)
        if opts.lookup and opts.topics:
            tasks.append(asyncio.ensure_future(_lookup_loop(runtime.dht, opts, keypair.public_key, emit, stop)))
        if not stop.is_set():
            emit("role", role=module_name, topic=topic)
            failed = await _serve(module.run_role(config, role_mesh(runtime)), stop)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.stop()
        if failed is None:
            emit("stopped")
    if failed is not None:
        _fail(emit, failed)


async def _serve(coro, stop: asyncio.Event) -> BaseException | None:
    """Run the role to its end; returns the exception it failed with, if any.

    The role installs its own SIGTERM/SIGINT handlers once started (workers.base
    Worker.run); a signal that came before that set `stop`, which cancels the
    role's start-up so it unwinds what it began."""
    role = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({role, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not role.done():
            role.cancel()
        try:
            await role
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except Exception as e:  # the role failed to start or crashed: exit 1 after cleanup
            return e
        return None
    finally:
        stopped.cancel()


def _fail(emit: Callable[..., None], e: BaseException) -> None:
    code = getattr(e, "code", None) or type(e).__name__
    emit("error", code=str(code), message=str(e))
    if not isinstance(e, RoleError):
        traceback.print_exception(e, file=sys.stderr)
    print(f"error: {code}: {e}", file=sys.stderr)
    raise SystemExit(1)

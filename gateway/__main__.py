"""`python -m gateway`: serve the gateway; `python -m gateway keys ...`: manage API keys."""

from __future__ import annotations

import socket
import sys
from typing import Sequence

from aiohttp import web

from mesh import eventloop

from . import config as config_mod
from .auth import KeyStore


def serve(argv: Sequence[str]) -> int:
    config = config_mod.from_args(argv)
    try:
        from .mesh_client import MeshWorkerDirectory
    except ImportError as e:
        print(f"error: the mesh layer is not available ({e}); the gateway needs mesh.runtime and mesh.rpc",
              file=sys.stderr)
        return 2
    from .app import create_app

    try:
        # bound here, not by aiohttp: the start line then shows the real port (--port 0 picks a
        # free one, so a caller never races another process for a port it chose beforehand)
        sock = socket.create_server((config.host, config.port),
                                    family=socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    except OSError as e:
        print(f"error: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    keys = KeyStore(config.keys_db, config.key_cache_s)
    app = create_app(config, MeshWorkerDirectory(config), keys)
    web.run_app(app, sock=sock, print=lambda msg: print(msg, flush=True),
                loop=eventloop.new_event_loop(config.busy_poll_us / 1e6))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keys"]:
        from .keys_cli import main as keys_main
        return keys_main(args[1:])
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())

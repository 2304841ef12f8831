"""Role entry points for CRUD workers, in the shape `python -m mesh.node` calls
(the same as workers.inference): `role_config(...)` builds the frozen config,
`run_role(config, mesh)` serves until SIGTERM/SIGINT, `main(argv)` runs the
worker standalone. A role module binds them to its worker class:

    role_config, run_role, main = entry_points(BookWorker)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from workers.config import layered, parse_cli, read_toml
from workers.base import run_standalone

from .worker import ThingConfig, ThingWorker


def entry_points(worker_cls: type[ThingWorker]) -> tuple[Callable, Callable, Callable]:
    """(role_config, run_role, main) for `worker_cls`."""
    config_cls = worker_cls.config_class

    def role_config(topics: Mapping[str, Any] | str | Path | None = None, *, env: Mapping[str, str] | None = None,
                    argv: Sequence[str] = (), cli: Mapping[str, Any] | None = None,
                    topic: str | None = None) -> ThingConfig:
        """Config from topics.toml (parsed or a path; the `[workers.<role>]` table)
        < env MESH_* < `--<field> value` options in argv < `cli`. `topic` (the
        topic the node was started for) becomes the topic the worker announces."""
        doc = read_toml(topics) if isinstance(topics, (str, Path)) else dict(topics or {})
        overrides, _rest = parse_cli(config_cls, argv)
        overrides.update(cli or {})
        config = layered(config_cls, toml=doc, role=worker_cls.role, env=env or {}, cli=overrides)
        if topic is not None:
            config = dataclasses.replace(config, topic=topic)
        return config

    async def run_role(config: ThingConfig, mesh: Any = None) -> None:
        """Serve on `mesh` (`.swarm`, `.rpc`) until SIGTERM/SIGINT, then drain and stop."""
        await worker_cls(config).run(mesh)

    def main(argv: Sequence[str] | None = None) -> int:
        """Standalone, without a mesh: `--topics PATH` plus any config option."""
        return run_standalone(role_config, run_role, sys.argv[1:] if argv is None else list(argv))

    return role_config, run_role, main

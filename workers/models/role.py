"""Entry points of the model-manager role, shaped like workers.inference's:

    config = workers.models.role_config(topics_doc_or_path, env=os.environ, argv=rest)
    await workers.models.run_role(config, mesh, peers=peers)

`mesh` has `.swarm` and `.rpc` (see workers.base.Mesh). `peers()` returns RPC peers
(`await peer.request(method, value, timeout=...)`) for the other managers this
node is connected to on the model-manager topic; without it the manager serves
but does not replicate. `python -m workers.models` runs one standalone (no mesh).
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any, Mapping, Sequence

from mesh.topics import topic_key
from workers.base import run_standalone, setup_logging  # noqa: F401 - the role's logging hook
from workers.config import layered, parse_cli, read_toml

from .fetch import PeerList
from .manager import TOPIC, ManagerConfig, ModelManager

ROLE = "workers.models"


def role_config(topics: Mapping[str, Any] | str | pathlib.Path | None = None, *,
                env: Mapping[str, str] | None = None, argv: Sequence[str] = (),
                cli: Mapping[str, Any] | None = None) -> ManagerConfig:
    """ManagerConfig from topics.toml ([workers] and [workers.models]) < env MESH_* < CLI.
    Arguments in `argv` that name no ManagerConfig field are ignored."""
    doc = read_toml(topics) if isinstance(topics, (str, pathlib.Path)) else dict(topics or {})
    overrides, _rest = parse_cli(ManagerConfig, argv)
    overrides.update(cli or {})
    return layered(ManagerConfig, toml=doc, role=ROLE, env=env or {}, cli=overrides)


async def run_role(config: ManagerConfig, mesh: Any = None, *, peers: PeerList | None = None) -> None:
    """Run a model manager on `mesh` until SIGTERM/SIGINT, then drain and stop.
    Without `peers`, a mesh with `peers(topic_key)` (mesh.runtime.RoleMesh) gives
    the managers found on the model-manager topic."""
    peers_of = getattr(mesh, "peers", None)
    if peers is None and peers_of is not None:
        key = topic_key(config.namespace, TOPIC)
        peers = lambda: peers_of(key)  # noqa: E731
    await ModelManager(config, peers=peers).run(mesh)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone manager without a mesh: `--topics PATH` plus any config option."""
    return run_standalone(role_config, run_role, sys.argv[1:] if argv is None else list(argv))

"""Model storage and distribution.

    errors.py       the model subsystem's errors and their wire codes
    onnx_meta.py    the one importer of onnx: validates a file, reads I/O specs
    store.py        content-addressed files named by sha256; atomic, verified writes
    registry.py     SQLite rows per (id, version), tombstones, merge planning
    library.py      store + registry changed together in a crash-safe order
    uploads.py      chunked upload sessions with idle timeout
    manager.py      ModelManager: the worker role and its RPC methods
    replication.py  periodic registry merge and file pull between managers
    fetch.py        chunked, verified download of a file from peers
    source.py       NetworkModelSource: the inference worker's ModelSource on the mesh
    peers.py        ConnectionPeers: RPC peers on live swarm connections, for peers()
    upload.py       `python -m workers.models.upload`: CLI upload with progress
    role.py         ROLE, role_config, run_role, main (`python -m workers.models`)
"""

from .role import ROLE, role_config, run_role, setup_logging

__all__ = ["ROLE", "role_config", "run_role", "setup_logging"]

"""CODEC CHECK against the real @hyperswarm/rpc 3.5.0, over a TCP stand-in transport.

Runs tests/interop/node/rpc-tcp-check.js: real HyperswarmRPC Client/Server,
protomux-rpc, protomux and NoiseSecretStream in Node; mesh.rpc in Python over
tests/interop/rpc_tcp_adapter.py (hyperdht's Noise IK + secret-stream on TCP).
Not the product path: the DHT-routed version is tests/interop/test_rpc_node.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.interop


def test_node_hyperswarm_rpc_against_mesh_rpc_over_tcp(node_harness):
    proc = subprocess.run(["node", str(node_harness / "rpc-tcp-check.js"), sys.executable],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout

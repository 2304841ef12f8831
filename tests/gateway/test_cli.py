"""`python -m gateway` CLI: --help lists every option; keys create/list/revoke in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gateway.auth import KeyStore
from gateway.config import _OPTIONS, GatewayConfig, from_args
from gateway.errors import Unauthorized

ENV = {**os.environ, "PYTHONPATH": "."}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60,
                          env=ENV)


def test_help_documents_every_option():
    out = run("--help").stdout
    for _name, flag, _t, env, _h in _OPTIONS:
        assert flag in out and env in out, flag
    assert len(_OPTIONS) == len(GatewayConfig.__dataclass_fields__)


def test_config_from_env_and_cli():
    c = from_args(["--port", "3100", "--model", "a"], {"MESH_API_KEY": "k", "MESH_GATEWAY_PORT": "9",
                                                        "MESH_BOOTSTRAP": "127.0.0.1:1,127.0.0.1:2",
                                                        "MESH_STRATEGY": "random"})
    assert (c.port, c.api_key, c.models, c.strategy) == (3100, "k", ("a",), "random")
    assert c.bootstrap == (("127.0.0.1", 1), ("127.0.0.1", 2))


def test_busy_polling_defaults_on_and_can_be_turned_off():
    assert from_args([], {}).busy_poll_us == 2000
    assert from_args(["--busy-poll-us", "0"], {"MESH_BUSY_POLL_US": "900"}).busy_poll_us == 0
    assert from_args([], {"MESH_BUSY_POLL_US": "900"}).busy_poll_us == 900
    with pytest.raises(SystemExit):
        from_args(["--busy-poll-us", "-5"], {})


def test_topics_toml_under_env_under_cli(tmp_path):
    topics = tmp_path / "topics.toml"
    topics.write_text('namespace = "from-toml"\nbootstrap = ["127.0.0.1:7001", "127.0.0.1:7002"]\n')
    c = from_args(["--config", str(topics)], {})
    assert c.namespace == "from-toml" and c.bootstrap == (("127.0.0.1", 7001), ("127.0.0.1", 7002))
    c = from_args([], {"MESH_CONFIG": str(topics), "MESH_NAMESPACE": "from-env"})
    assert c.namespace == "from-env" and c.bootstrap == (("127.0.0.1", 7001), ("127.0.0.1", 7002))
    c = from_args(["--config", str(topics), "--namespace", "from-cli", "--bootstrap", "127.0.0.1:9"],
                  {"MESH_NAMESPACE": "from-env"})
    assert c.namespace == "from-cli" and c.bootstrap == (("127.0.0.1", 9),)


def test_bad_or_missing_topics_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('bootstrap = ["nowhere"]\n')
    for path in (str(bad), str(tmp_path / "missing.toml")):
        with pytest.raises(SystemExit):
            from_args(["--config", path], {})


def test_keys_create_list_revoke(tmp_path):
    db = str(tmp_path / "k.sqlite3")
    r = run("keys", "--keys-db", db, "create", "--name", "ci", "--scopes", "infer,models:read", "--rate", "5",
            "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    key = created["key"]
    assert key.startswith("mk_") and created["scopes"] == ["infer", "models:read"] and created["rate"] == 5.0
    store = KeyStore(db, cache_s=0.0)
    assert store.authenticate(key).id == created["id"]
    listed = run("keys", "--keys-db", db, "list").stdout
    assert f"{created['id']}\tactive\tinfer,models:read\tci" in listed and key not in listed
    r = run("keys", "--keys-db", db, "revoke", created["id"])
    assert r.returncode == 0 and "revoked" in r.stdout
    assert json.loads(run("keys", "--keys-db", db, "list", "--json").stdout)[0]["revoked"] is not None
    assert run("keys", "--keys-db", db, "revoke", created["id"]).returncode == 1
    r = run("keys", "--keys-db", db, "create", "--name", "x", "--scopes", "root")
    assert r.returncode == 2 and "scopes must be" in r.stderr
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(key)
    store.close()
    # read the file only now: closing any descriptor of it drops this process's SQLite locks
    with open(db, "rb") as f:
        assert key.encode() not in f.read()   # stored hashed only


def test_a_port_in_use_is_a_clear_error(tmp_path):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = run("--port", str(port), "--keys-db", str(tmp_path / "keys.sqlite3"), "--bootstrap", "127.0.0.1:9")
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr

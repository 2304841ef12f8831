"""`python -m mesh.node` argument handling for roles (no processes, no network)."""

from __future__ import annotations

import pytest

from mesh.node import find_role, parse_args
from mesh.node_role import RoleError, build_role_config, load_role

CONFIG = '''
namespace = "roles-test"
bootstrap = ["127.0.0.1:49999"]
[topics.books]
role = "workers.book"
[topics.model-manager]
role = "workers.models"
[topics.inference]
role = "workers.inference"
[workers.inference]
ops_port = 0
[[models]]
id = "digits"
role = "workers.inference"
file = "digits-1.onnx"
'''


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "topics.toml"
    path.write_text(CONFIG)
    return str(path)


def test_topics_name_roles_by_table_or_model_entry(config):
    import tomllib
    doc = tomllib.loads(CONFIG)
    assert find_role(doc, "books") == "workers.book"
    assert find_role(doc, "model-manager") == "workers.models"
    assert find_role(doc, "digits") == "workers.inference"
    assert find_role(doc, "demo") is None


def test_unknown_arguments_go_to_the_role(config):
    opts = parse_args(["--config", config, "--topic", "books", "--db-path", "x.db", "--ops-port=0"])
    assert opts.role == ("books", "workers.book")
    assert opts.role_args == ("--db-path", "x.db", "--ops-port=0")
    assert opts.bootstrap == (("127.0.0.1", 49999),)
    role = load_role("workers.book")
    cfg = build_role_config(role, opts, "books")
    assert (cfg.db_path, cfg.ops_port, cfg.topic, cfg.namespace) == ("x.db", 0, "books", "roles-test")


def test_inference_by_model_id_or_pool_topic(config):
    role = load_role("workers.inference")
    by_model = build_role_config(role, parse_args(["--config", config, "--topic", "digits"]), "digits")
    assert by_model.serve == ("digits",) and by_model.pool_topic == ""
    pool = build_role_config(role, parse_args(["--config", config, "--topic", "inference", "--max-queue", "3"]),
                             "inference")
    assert pool.pool_topic == "inference" and pool.serve == () and not pool.preload and pool.max_queue == 3
    manager = load_role("workers.models")  # its role_config takes no topic
    assert build_role_config(manager, parse_args(["--config", config, "--topic", "model-manager"]),
                             "model-manager").name == "model-manager"


def test_plain_nodes_refuse_unknown_arguments_and_two_roles(config, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--config", config, "--topic", "demo", "--db-path", "x"])
    assert "role options need a --topic that names a role" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--config", config, "--topic", "books", "--topic", "inference"])
    assert parse_args(["--config", config, "--topic", "demo"]).role is None


def test_a_role_module_must_exist_and_have_entry_points():
    with pytest.raises(RoleError, match="cannot import"):
        load_role("workers.no_such_role")
    with pytest.raises(RoleError, match="has no role_config"):
        load_role("workers.errors")

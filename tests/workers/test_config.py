"""Layered configuration: defaults < topics.toml < MESH_* env < CLI."""

from __future__ import annotations

import dataclasses

import pytest

from workers.config import (ModelConfig, WorkerConfig, layered, load_topics, parse_cli, read_toml)
from workers.errors import ConfigInvalid

TOML = """
namespace = "ns1"
bootstrap = ["127.0.0.1:49737", "127.0.0.1:49738"]

[workers]
drain_timeout_s = 5
log_level = "DEBUG"

[workers.inference]
ops_port = 8001
name = "inf"

[[models]]
id = "digits"
version = "2"
file = "digits-2.onnx"
sha256 = "ab"
batching = false
max_queue = 10
"""


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "topics.toml"
    p.write_text(TOML)
    return read_toml(p)


def test_defaults_only():
    c = layered(WorkerConfig)
    assert c == WorkerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "x"


def test_layers_override_in_order(doc):
    c = layered(WorkerConfig, toml=doc, role="workers.inference", env={}, cli={})
    assert (c.namespace, c.name, c.ops_port, c.drain_timeout_s, c.log_level) == ("ns1", "inf", 8001, 5.0, "DEBUG")
    assert c.bootstrap == (("127.0.0.1", 49737), ("127.0.0.1", 49738))
    env = {"MESH_OPS_PORT": "9001", "MESH_NAME": "from-env", "MESH_BOOTSTRAP": "127.0.0.2:1", "OTHER": "x"}
    c = layered(WorkerConfig, toml=doc, role="workers.inference", env=env)
    assert (c.ops_port, c.name, c.bootstrap) == (9001, "from-env", (("127.0.0.2", 1),))
    cli, rest = parse_cli(WorkerConfig, ["--ops-port", "0", "--topic", "digits", "--drain_timeout_s=1.5"])
    assert rest == ["--topic", "digits"]
    c = layered(WorkerConfig, toml=doc, role="workers.inference", env=env, cli=cli)
    assert (c.ops_port, c.name, c.drain_timeout_s) == (0, "from-env", 1.5)


def test_other_roles_do_not_see_inference_table(doc):
    c = layered(WorkerConfig, toml=doc, role="workers.models")
    assert c.ops_port == 0 and c.name == "worker" and c.drain_timeout_s == 5.0


def test_bad_values_name_field_and_layer(doc):
    with pytest.raises(ConfigInvalid, match=r"ops_port \(environment\)"):
        layered(WorkerConfig, env={"MESH_OPS_PORT": "eighty"})
    with pytest.raises(ConfigInvalid, match="bad address"):
        layered(WorkerConfig, cli={"bootstrap": "127.0.0.1:99999"})
    with pytest.raises(ConfigInvalid, match="needs a value"):
        parse_cli(WorkerConfig, ["--ops-port"])


def test_busy_polling_is_layered_and_never_negative():
    assert WorkerConfig().busy_poll_us == 2000
    c = layered(WorkerConfig, env={"MESH_BUSY_POLL_US": "0"}, cli={"busy_poll_us": "500"})
    assert c.busy_poll_us == 500
    with pytest.raises(ConfigInvalid, match="busy_poll_us"):
        layered(WorkerConfig, env={"MESH_BUSY_POLL_US": "-1"})


def test_cuda_options_are_layered_and_checked():
    from workers.inference import InferenceConfig
    c = layered(InferenceConfig, toml={"cudnn_conv_algo_search": "EXHAUSTIVE"},
                env={"MESH_CUDA_TF32": "true"}, cli={"cuda_device_id": "1"})
    assert c.runner().cuda_options() == {"device_id": "1", "use_tf32": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"}
    assert InferenceConfig().runner().cuda_options() == {"device_id": "0", "use_tf32": "0",
                                                         "cudnn_conv_algo_search": "HEURISTIC"}
    with pytest.raises(ConfigInvalid, match="cudnn_conv_algo_search must be one of HEURISTIC, EXHAUSTIVE, DEFAULT"):
        layered(InferenceConfig, cli={"cudnn_conv_algo_search": "fastest"})
    with pytest.raises(ConfigInvalid, match="cuda_device_id must be >= 0"):
        layered(InferenceConfig, env={"MESH_CUDA_DEVICE_ID": "-1"})
    limited = layered(InferenceConfig, cli={"cuda_mem_limit_bytes": str(2 << 30)})
    assert limited.runner().cuda_options() == {"device_id": "0", "use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC",
                                               "gpu_mem_limit": str(2 << 30),
                                               "arena_extend_strategy": "kSameAsRequested"}
    with pytest.raises(ConfigInvalid, match="cuda_mem_limit_bytes must be >= 0"):
        layered(InferenceConfig, toml={"cuda_mem_limit_bytes": -1})


def test_models_section(doc):
    t = load_topics(doc)
    assert t.namespace == "ns1"
    assert t.models == (ModelConfig(id="digits", version="2", file="digits-2.onnx", sha256="ab",
                                    batching=False, max_queue=10),)
    assert t.model("digits").role == "workers.inference"
    assert t.models_for("workers.inference") == t.models


def test_models_section_rejects_unknown_keys_and_duplicates():
    with pytest.raises(ConfigInvalid, match="unknown keys"):
        load_topics({"models": [{"id": "a", "batchsize": 3}]})
    with pytest.raises(ConfigInvalid, match="twice"):
        load_topics({"models": [{"id": "a"}, {"id": "a"}]})
    with pytest.raises(ConfigInvalid):
        load_topics({"models": [{"version": "1"}]})


def test_bad_toml_file(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text("namespace = ")
    with pytest.raises(ConfigInvalid):
        read_toml(p)


def test_example_topics_file_loads():
    import pathlib

    from workers.inference import role_config

    path = pathlib.Path(__file__).resolve().parents[2] / "topics.toml"
    t = load_topics(path)
    assert [m.id for m in t.models] == ["digits", "mlp-tiny", "mlp-mid", "conv-small"]
    c = role_config(path, env={"MESH_OPS_PORT": "0"}, argv=["--topic", "mlp-mid", "--max-queue", "7"],
                    topic="mlp-mid")
    assert c.ops_port == 0 and c.max_queue == 7 and c.serve == ("mlp-mid",)
    assert c.serving("mlp-mid").max_batch_size == 32 and c.serving("mlp-mid").max_queue == 7
    assert c.drain_timeout_s == 30 and c.namespace == "inference-mesh"
    assert layered(WorkerConfig, toml=read_toml(path), role="workers.models").ops_port == 8002
    doc = read_toml(path)
    assert doc["topics"]["books"]["role"] == "workers.book"
    assert doc["topics"]["model-manager"]["role"] == "workers.models"
    from workers.models import role_config as manager_config
    assert manager_config(doc, env={}).data_dir == "var/model-manager"
    pool = role_config(doc, env={}, topic="inference")
    assert pool.pool_topic == "inference" and pool.serve == () and not pool.preload

"""Fixtures for worker tests: small real ONNX models built on the fly."""

from __future__ import annotations

import json

import pytest

from scripts.make_models import write_models

TEST_MODELS = ("digits", "mlp-tiny", "conv-small")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A folder with digits, mlp-tiny and conv-small plus manifest.json (built once)."""
    folder = tmp_path_factory.mktemp("models")
    write_models(folder, TEST_MODELS, digits_steps=60)
    return folder


@pytest.fixture(scope="session")
def manifest(model_dir):
    return {e["id"]: e for e in json.loads((model_dir / "manifest.json").read_text())["models"]}

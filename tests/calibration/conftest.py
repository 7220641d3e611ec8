"""Fixtures for the calibration tests: a private cache dir, the tiny model, its spec, a folder of images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
from calib_helpers import build_tiny_model, tiny_spec, write_images  # noqa: E402

from heatdeploy.spec import ModelSpec  # noqa: E402


@pytest.fixture()
def spec() -> ModelSpec:
    return tiny_spec()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tinymodel") / "tiny.onnx")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibimages")
    write_images(root, 24)
    return root

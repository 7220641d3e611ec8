"""Fixtures for the OpenVINO tests: the tiny bundle (built once) and per-test copies of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
from ov_helpers import copy_bundle, make_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="building the tiny model needs onnx")
    return make_tiny_bundle(tmp_path_factory.mktemp("ovtiny") / "bundle")


@pytest.fixture()
def tiny_bundle(tiny_bundle_src: Path, tmp_path: Path) -> Path:
    return copy_bundle(tiny_bundle_src, tmp_path / "bundle")


@pytest.fixture(scope="session")
def tiny_ov_bundle(tiny_bundle_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with openvino-fp32 added once (read-only for the tests that use it)."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'heatdeploy[openvino]')")
    from heatdeploy.exporters.openvino import add_openvino_artifact

    root = copy_bundle(tiny_bundle_src, tmp_path_factory.mktemp("ovtinyfp32") / "bundle")
    add_openvino_artifact(root, "fp32")
    return root

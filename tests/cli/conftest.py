"""Fixtures for the CLI tests: private copies of the random-weight reference bundle and a model that differs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def negate_first_conv(src: Path, dst: Path) -> Path:
    """The same graph (spec embedded) with its first Conv's weights negated: a different model, same shapes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits)
    weight = inits[conv.input[1]]
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="session")
def other_onnx(random_reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different model with the reference's spec embedded (re-export over a bundle: its artifacts are stale)."""
    pytest.importorskip("onnx")
    return negate_first_conv(random_reference_bundle / "model.onnx",
                             tmp_path_factory.mktemp("other") / "other.onnx")


@pytest.fixture(scope="session")
def gate_bundle(random_reference_bundle: Path, other_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle copy with two candidates: ``onnx-fp32-copy`` (parity passes) and ``onnx-wrong`` (it fails)."""
    from heatdeploy.bundle import Bundle

    root = tmp_path_factory.mktemp("gate") / "bundle"
    shutil.copytree(random_reference_bundle, root)
    b = Bundle.load(root)
    b.add_file(b.path_of(b.artifact("onnx-fp32")), "model-copy.onnx", name="onnx-fp32-copy", format="onnx",
               precision="fp32", backend="onnxruntime")
    b.add_file(other_onnx, "model-wrong.onnx", name="onnx-wrong", format="onnx", precision="int8",
               backend="onnxruntime")
    b.save()
    return root


@pytest.fixture()
def bundle_copy(random_reference_bundle: Path, tmp_path: Path) -> Path:
    """A copy this test may change (the session bundle is shared)."""
    return Path(shutil.copytree(random_reference_bundle, tmp_path / "bundle"))

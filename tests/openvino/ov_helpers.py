"""Helpers for the OpenVINO tests: a tiny heatmap + existence ONNX model in a bundle (64x48 input, seeded
weights, built with onnx.helper), so export, NNCF and parity run in seconds on two cores.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from heatdeploy.bundle import Bundle
from heatdeploy.spec import ModelSpec

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # the shared tiny model lives in tests/
    sys.path.insert(0, str(_TESTS))
from tiny_onnx import H, K, W  # noqa: E402
from tiny_onnx import build_tiny_onnx as _build  # noqa: E402
from tiny_onnx import tiny_spec as _tiny_spec  # noqa: E402

__all__ = ["H", "K", "W", "build_tiny_onnx", "copy_bundle", "make_tiny_bundle", "tiny_spec"]


def tiny_spec() -> ModelSpec:
    return _tiny_spec("tiny-ov")


def build_tiny_onnx(path: Path, seed: int = 0) -> Path:
    """image [N,3,64,48] -> heatmaps [N,3,16,12] (sigmoid) and existence logits [N,3] (two-Gemm head)."""
    return _build(path, seed, existence_hidden=16, graph_name="tiny-ov")


def make_tiny_bundle(root: Path, seed: int = 0) -> Path:
    """A bundle holding only the tiny model as ``onnx-fp32`` (what 'heatdeploy export' would write)."""
    root.mkdir(parents=True, exist_ok=True)
    src = build_tiny_onnx(root / "src.onnx", seed)
    bundle = Bundle.create(root, tiny_spec())
    bundle.add_file(src, "model.onnx", name="onnx-fp32", format="onnx", precision="fp32", backend="onnxruntime")
    bundle.info["source"] = "tests/openvino tiny model"
    bundle.save()
    src.unlink()
    return root


def copy_bundle(src: Path, dest: Path) -> Path:
    """Tests add artifacts: never to a session-wide bundle that other tests read."""
    shutil.copytree(src, dest)
    return dest

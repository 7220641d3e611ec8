"""ONNX Runtime backend: numerics against numpy, loud provider failures, metadata without onnx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from heatdeploy.runtime.backends import load_backend
from heatdeploy.runtime.backends import onnxruntime as backend_mod
from heatdeploy.runtime.backends.base import BackendError

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(2, 3, 3, 3)).astype(np.float32)
BIAS = RNG.normal(size=(2,)).astype(np.float32)
SPEC_JSON = '{"keypoints": ["a", "b"]}'


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv(3->2, 3x3, pad 1) -> Sigmoid as 'heatmaps', and its spatial mean as 'existence' [N, 2]."""
    nodes = [
        helper.make_node("Conv", ["image", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["conv"], ["heatmaps"]),
        helper.make_node("ReduceMean", ["conv", "axes"], ["existence"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 2, 8, 8]),
            helper.make_tensor_value_info("existence", TensorProto.FLOAT, ["N", 2]),
        ],
        initializer=[
            numpy_helper.from_array(WEIGHT, "W"),
            numpy_helper.from_array(BIAS, "B"),
            numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {"heatdeploy.spec": SPEC_JSON})
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _numpy_conv(x: np.ndarray) -> np.ndarray:
    """Reference 3x3 'same' convolution: nine shifted einsums, no loop over pixels."""
    n, _, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, 2, h, w))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("oc,nchw->nohw", WEIGHT[:, :, dy, dx], padded[:, :, dy : dy + h, dx : dx + w])
    return out + BIAS[None, :, None, None]


def test_infer_matches_numpy(model_path: Path) -> None:
    be = backend_mod.load(model_path, {})
    assert be.input_names == ["image"] and be.output_names == ["heatmaps", "existence"]
    assert be.input_shapes == {"image": ["N", 3, 8, 8]}
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = be.infer({"image": x})
    conv = _numpy_conv(x)
    np.testing.assert_allclose(out["heatmaps"], 1 / (1 + np.exp(-conv)), atol=1e-5)
    np.testing.assert_allclose(out["existence"], conv.mean(axis=(2, 3)), atol=1e-5)


def test_options_are_applied_and_float64_feeds_are_cast(model_path: Path) -> None:
    be = backend_mod.load(
        model_path,
        {
            "providers": ["CPUExecutionProvider"],
            "intra_op_threads": 1,
            "inter_op_threads": 1,
            "graph_optimization": "disable",
            "provider_options": {"CPUExecutionProvider": {}},
        },
    )
    out = be.infer({"image": np.zeros((1, 3, 8, 8))})
    assert out["heatmaps"].dtype == np.float32 and out["existence"].shape == (1, 2)


def test_describe_reports_providers_and_tensors(model_path: Path) -> None:
    info = backend_mod.load(model_path, {}).describe()
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["inputs"] == [{"name": "image", "shape": ["N", 3, 8, 8], "dtype": "float32"}]
    assert [o["name"] for o in info["outputs"]] == ["heatmaps", "existence"]
    assert info["outputs"][1]["shape"] == ["N", 2]


def test_metadata_is_read_without_onnx(model_path: Path) -> None:
    assert backend_mod.read_metadata(model_path)["heatdeploy.spec"] == SPEC_JSON
    assert backend_mod.load(model_path, {}).metadata()["heatdeploy.spec"] == SPEC_JSON


def test_registry_loads_this_backend(model_path: Path) -> None:
    be = load_backend("onnxruntime", str(model_path))
    assert isinstance(be, backend_mod.OnnxRuntimeBackend)


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "NoSuchExecutionProvider"])
def test_unavailable_provider_fails_loudly(model_path: Path, provider: str) -> None:
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here")
    with pytest.raises(BackendError, match=f"{provider} not available"):
        backend_mod.load(model_path, {"providers": [provider, "CPUExecutionProvider"]})


def test_silent_cpu_fallback_is_caught(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT drops a provider whose libraries fail to load and runs on the CPU; we must refuse that."""
    real_session = ort.InferenceSession

    class FallbackSession(real_session):  # type: ignore[misc, valid-type]
        def __init__(self, path, sess_options=None, providers=None, provider_options=None, **kw):
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", FallbackSession)
    with pytest.raises(BackendError, match="did not engage CUDAExecutionProvider"):
        backend_mod.load(model_path, {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(BackendError, match=r"broken.onnx: not a loadable ONNX model .*re-export it"):
        backend_mod.load(path, {})
    with pytest.raises(BackendError, match="broken.onnx"):
        backend_mod.read_metadata(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="missing.onnx: not a loadable ONNX model \\(file not found\\)"):
        backend_mod.load(tmp_path / "missing.onnx", {})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"provider": ["CPUExecutionProvider"]}, "unknown option"),
        ({"graph_optimization": "max"}, "graph_opt"),
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"providers": []}, "non-empty"),
        ({"provider_options": {"CUDAExecutionProvider": {}}}, "not in providers"),
    ],
)
def test_bad_options_are_rejected(model_path: Path, options: dict, match: str) -> None:
    with pytest.raises(BackendError, match=match):
        backend_mod.load(model_path, options)


def test_bad_feeds_raise_backend_error(model_path: Path) -> None:
    be = backend_mod.load(model_path, {})
    with pytest.raises(BackendError, match="inputs \\['image'\\]; missing \\['image'\\], unknown \\['input'\\]"):
        be.infer({"input": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(BackendError, match="failed to run"):
        be.infer({"image": np.zeros((1, 3, 9, 8), np.float32)})


def test_runtime_modules_import_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, heatdeploy.runtime.preprocess, heatdeploy.runtime.draw, "
        "heatdeploy.runtime.backends.onnxruntime; "
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

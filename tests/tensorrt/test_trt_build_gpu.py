"""Real TensorRT builds and runs: wherever ``import tensorrt`` works and a GPU is visible; skipped elsewhere.

Each precision is built from a tiny bundle, run through the TensorRT backend and compared with ONNX Runtime
FP32; the second build is a cache hit; a corrupted plan is refused by the backend and rebuilt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heatdeploy.exporters.tensorrt import tensorrt_status

_OK, _WHY = tensorrt_status()
pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu,
              pytest.mark.skipif(not _OK, reason=f"needs TensorRT and an NVIDIA GPU: {_WHY}")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parents[1] / "calibration"))
    from calib_helpers import build_tiny_model, tiny_spec, write_images

    from heatdeploy.bundle import Bundle
    from heatdeploy.calibration.quantize import quantize_onnx_int8
    from heatdeploy.calibration.sources import ImageFolderSource

    root = tmp_path_factory.mktemp("trtgpu")
    spec = tiny_spec()
    fp32 = build_tiny_model(root / "tiny.onnx")
    write_images(root / "imgs", 16)
    rep = quantize_onnx_int8(fp32, root / "q.onnx", spec, ImageFolderSource(spec, root / "imgs", size=16),
                             keep_fp32="base", use_cache=False, activation_type="int8", sensitivity_batches=0)
    b = Bundle.create(root / "bundle", spec)
    b.add_file(fp32, "model.onnx", name="onnx-fp32", format="onnx", precision="fp32", backend="onnxruntime")
    b.add_file(root / "q.onnx", "model.int8.onnx", name="onnx-int8", format="onnx", precision="int8",
               backend="onnxruntime", calibration=rep.to_manifest())
    b.save()
    x = next(iter(ImageFolderSource(spec, root / "imgs", size=6).batches(6)))
    from heatdeploy.runtime.backends.onnxruntime import load as ort_load

    ref = ort_load(fp32).infer({"image": x})
    return {"root": root / "bundle", "x": x, "ref": ref}


@pytest.mark.parametrize("precision, mode, atol", [("fp32", None, 1e-3), ("fp16", None, 2e-2),
                                                   ("int8", "implicit", 0.1), ("int8", "explicit", 0.1)])
def test_build_and_run(bundle: dict[str, Any], precision: str, mode: str | None, atol: float,
                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heatdeploy.devices.profiles import load_profile
    from heatdeploy.exporters.tensorrt import build_engine, prepare_tensorrt, trt_major
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.backends.tensorrt import load

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    import tensorrt as trt

    if mode == "implicit" and trt_major(trt.__version__) >= 11:
        pytest.skip(f"TensorRT {trt.__version__} has no implicit INT8")
    root = bundle["root"]
    prepare_tensorrt(root, precision, load_profile("jetson-orin-nano"), **({"int8_mode": mode} if mode else {}))
    first = build_engine(root, precision, force=True)
    assert not first.cache_hit and first.engine.is_file() and first.artifact == f"tensorrt-{precision}"
    if precision != "fp32":
        assert "head_sigmoid" in first.record["fp32_layers"] or trt_major(trt.__version__) >= 11
    again = build_engine(root, precision)
    assert again.cache_hit and again.engine == first.engine and again.key == first.key

    backend = load(first.engine)
    got = backend.infer({"image": bundle["x"]})  # 6 > the profile's max batch 4: run in chunks
    assert backend.chunked_calls == 1
    for name in ("heatmaps", "existence"):
        assert got[name].dtype == np.float32 and got[name].shape == bundle["ref"][name].shape
        assert np.max(np.abs(got[name] - bundle["ref"][name])) < atol * (10 if name == "existence" else 1)
    pipe = Pipeline.load(root, artifact=f"tensorrt-{precision}")  # registered in the manifest
    assert pipe.backend_name == "tensorrt"


def test_corrupt_engine_is_refused_then_rebuilt(bundle: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from heatdeploy.devices.profiles import load_profile
    from heatdeploy.exporters.tensorrt import build_engine, prepare_tensorrt
    from heatdeploy.runtime.backends.base import BackendError
    from heatdeploy.runtime.backends.tensorrt import load

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    root = bundle["root"]
    prepare_tensorrt(root, "fp16", load_profile("jetson-orin-nano"))
    plan = build_engine(root, "fp16").engine
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="stale or corrupt TensorRT engine, not run"):
        load(plan)
    rebuilt = build_engine(root, "fp16")
    assert not rebuilt.cache_hit and rebuilt.engine == plan
    load(plan)

"""The QDQ model TensorRT consumes, checked in ONNX Runtime; and prepare_tensorrt on a real (tiny) bundle.

TensorRT is not installable here, so what can be checked without it is: the rewritten QDQ model is one
TensorRT's rules accept (int8 symmetric, no int32 bias DQ), computes the same values as the ORT model it came
from, keeps the heads float, and the prepared bundle holds exactly what the device build reads.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

sys.path.insert(0, str(Path(__file__).parents[1] / "calibration"))
from calib_helpers import build_tiny_model, tiny_spec, write_images  # noqa: E402

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.calibration.quantize import quantize_onnx_int8  # noqa: E402
from heatdeploy.calibration.ranges import parse_trt_cache  # noqa: E402
from heatdeploy.calibration.sources import ImageFolderSource  # noqa: E402
from heatdeploy.devices.profiles import load_profile, profile_from_document  # noqa: E402
from heatdeploy.exporters.tensorrt import (  # noqa: E402
    BUILD_CONFIG,
    CALIB_CACHE,
    QDQ_MODEL,
    TensorRTError,
    build_engine,
    check_qdq_for_tensorrt,
    export_tensorrt,
    load_build_config,
    prepare_tensorrt,
    tensorrt_qdq,
)
from heatdeploy.fsutil import sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny FP32 model, its ORT QDQ in uint8 (x86 default) and int8 activations, and sample inputs."""
    root = tmp_path_factory.mktemp("trtqdq")
    spec = tiny_spec()
    fp32 = build_tiny_model(root / "tiny.onnx")
    write_images(root / "imgs", 12)
    out: dict[str, Any] = {"root": root, "fp32": fp32, "spec": spec}
    for act in ("uint8", "int8"):
        rep = quantize_onnx_int8(fp32, root / f"q_{act}.onnx", spec, ImageFolderSource(spec, root / "imgs", size=12),
                                 keep_fp32="base", use_cache=False, activation_type=act, sensitivity_batches=0,
                                 symmetric_activations=True,  # what --format tensorrt asks for
                                 cache_dir=root / "cache")
        out[act], out[f"{act}_report"] = root / f"q_{act}.onnx", rep
    out["x"] = next(iter(ImageFolderSource(spec, root / "imgs", size=8).batches(8)))
    return out


def _run(model: onnx.ModelProto | Path, x: np.ndarray, optimize: bool) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(["heatmaps", "existence"], {"image": x})


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_tensorrt_qdq_is_accepted_and_computes_the_same(work: dict[str, Any], act: str) -> None:
    original = onnx.load(str(work[act]))
    problems = check_qdq_for_tensorrt(original)
    assert any("int32 DequantizeLinear" in p for p in problems)  # ORT quantizes biases to int32
    assert any("uint8 zero point" in p for p in problems) == (act == "uint8")
    fixed, notes = tensorrt_qdq(original)
    assert check_qdq_for_tensorrt(fixed) == []
    assert any("bias" in n for n in notes) and any("uint8 zero points" in n for n in notes) == (act == "uint8")
    onnx.checker.check_model(fixed)
    assert {o.domain for o in fixed.opset_import} <= {"", "ai.onnx"}
    # the same values: Q/DQ simulated literally (no fusion) must agree to float rounding
    for a, b in zip(_run(original, work["x"], False), _run(fixed, work["x"], False), strict=True):
        assert np.max(np.abs(a - b)) < 1e-5
    # and against FP32, the INT8 simulation stays close on the heatmaps (what TensorRT will approximate)
    ref = _run(work["fp32"], work["x"], True)
    got = _run(fixed, work["x"], True)
    assert np.max(np.abs(ref[0] - got[0])) < 0.1 and np.mean(np.abs(ref[0] - got[0])) < 0.01
    assert np.max(np.abs(ref[1] - got[1])) < 0.5


def test_heads_stay_float_in_the_tensorrt_qdq(work: dict[str, Any]) -> None:
    fixed, _ = tensorrt_qdq(onnx.load(str(work["uint8"])))
    producer = {o: n for n in fixed.graph.node for o in n.output}
    inits = {t.name: t for t in fixed.graph.initializer}
    for out in ("heatmaps", "existence"):
        assert producer[out].op_type in ("Sigmoid", "Gemm")
    head = next(n for n in fixed.graph.node if n.name == "head_conv")
    # float weights, no DQ on them: TensorRT quantizes a conv only when both its data and weights are Q/DQ'd,
    # so the head conv computes in float (its input is the INT8 deconv's output, dequantized)
    assert head.input[1] in inits and inits[head.input[1]].data_type == TensorProto.FLOAT
    assert head.input[1] not in producer
    fc = next(n for n in fixed.graph.node if n.name == "exist_fc")
    assert all(i in inits and inits[i].data_type == TensorProto.FLOAT for i in fc.input[1:])
    sig = next(n for n in fixed.graph.node if n.op_type == "Sigmoid")
    assert producer[sig.input[0]].name == "head_conv"


def test_asymmetric_qdq_is_refused(work: dict[str, Any]) -> None:
    model = onnx.load(str(work["uint8"]))
    zp_names = {n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for t in model.graph.initializer:
        if t.name in zp_names:
            t.CopyFrom(numpy_helper.from_array(np.array(100, np.uint8), t.name))
            break
    with pytest.raises(TensorRTError, match="asymmetric uint8.*--symmetric"):
        tensorrt_qdq(model)


# --- prepare on a bundle --------------------------------------------------------------------------------
def _bundle(work: dict[str, Any], dest: Path, *, int8: bool = True) -> Path:
    b = Bundle.create(dest, work["spec"])
    b.add_file(work["fp32"], "model.onnx", name="onnx-fp32", format="onnx", precision="fp32", backend="onnxruntime")
    if int8:
        b.add_file(work["uint8"], "model.int8.onnx", name="onnx-int8", format="onnx", precision="int8",
                   backend="onnxruntime", calibration=work["uint8_report"].to_manifest())
    b.save()
    return dest


def test_prepare_int8_for_jetpack5_and_6(work: dict[str, Any], tmp_path: Path) -> None:
    root = _bundle(work, tmp_path / "b")
    xavier = prepare_tensorrt(root, None, load_profile("jetson-xavier-nx"))
    assert xavier.precision == "int8" and xavier.files == {"fp32": "model.onnx", "qdq": QDQ_MODEL,
                                                            "calibration_cache": CALIB_CACHE}
    assert xavier.command == f"heatdeploy build-engine {root} --precision int8"
    assert "--int8" in xavier.trtexec and f"--calib={root / CALIB_CACHE}" in xavier.trtexec
    header, scales = parse_trt_cache((root / CALIB_CACHE).read_text())
    assert header == "TRT-8502-EntropyCalibration2"  # tagged for JetPack 5's TensorRT 8.5.2
    ranges = work["uint8_report"].ranges["tensors"]
    assert scales.keys() == ranges.keys() and "image" in scales
    for name, s in scales.items():
        assert s == pytest.approx(ranges[name]["scale"], rel=1e-6)  # the same numbers ORT quantized with

    nano = prepare_tensorrt(root, "int8", load_profile("jetson-orin-nano"))
    assert parse_trt_cache((root / CALIB_CACHE).read_text())[0] == "TRT-100300-EntropyCalibration2"
    assert "--builderOptimizationLevel=3" in nano.trtexec
    data = load_build_config(root)
    entry = data["builds"]["int8"]
    assert entry["config"]["profile"] == "jetson-orin-nano" and entry["input"] == {"name": "image",
                                                                                    "dims": [-1, 3, 64, 48]}
    for item in entry["sources"].values():
        assert sha256_file(root / item["path"]) == item["sha256"]
    assert set(entry["fp32_layers"]) == {"head_conv", "head_sigmoid", "exist_fc"}
    assert check_qdq_for_tensorrt(onnx.load(str(root / QDQ_MODEL))) == []
    Bundle.load(root)  # the manifest is untouched and still verifies


def test_prepare_without_calibration_or_with_too_new_opset(work: dict[str, Any], tmp_path: Path) -> None:
    root = _bundle(work, tmp_path / "b", int8=False)
    with pytest.raises(TensorRTError, match="neither an INT8 ONNX nor calibration.json"):
        prepare_tensorrt(root, "int8", load_profile("jetson-orin-nano"))
    fp16 = prepare_tensorrt(root, "fp16", load_profile("jetson-orin-nano"))
    assert fp16.files == {"fp32": "model.onnx"} and "--fp16" in fp16.trtexec
    old = profile_from_document({"schema_version": 1, "name": "old", "kind": "jetson", "backend": "tensorrt",
                                 "precision": "fp16", "max_opset": 13, "tensorrt": {"version": "7.1"}}, "old.toml")
    with pytest.raises(TensorRTError, match="opset 17 but old reads opset <= 13; re-export with --opset 13"):
        prepare_tensorrt(root, None, old)
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps(work["uint8_report"].ranges))
    with_cal = prepare_tensorrt(root, "int8", load_profile("jetson-xavier-nx"), calibration=cal)
    assert with_cal.files == {"fp32": "model.onnx", "calibration_cache": CALIB_CACHE}  # implicit only


def test_build_detects_changed_inputs_before_tensorrt(work: dict[str, Any], tmp_path: Path) -> None:
    root = _bundle(work, tmp_path / "b")
    prepare_tensorrt(root, "int8", load_profile("jetson-xavier-nx"))
    with pytest.raises(TensorRTError, match="not prepared for a fp16 TensorRT build"):
        build_engine(root, "fp16")
    cache = root / CALIB_CACHE
    cache.write_text(cache.read_text().replace("image:", "image :"))
    with pytest.raises(TensorRTError, match="changed since the TensorRT build was prepared"):
        build_engine(root, "int8")
    (root / BUILD_CONFIG).write_text("{broken")
    with pytest.raises(TensorRTError, match="build_config.json: unreadable"):
        build_engine(root, "int8")


def test_changed_model_and_corrupt_old_engine(work: dict[str, Any], tmp_path: Path) -> None:
    from heatdeploy.exporters.tensorrt import tensorrt_status
    from heatdeploy.runtime.backends.base import BackendError

    root = _bundle(work, tmp_path / "b")
    prepare_tensorrt(root, "fp16", load_profile("jetson-orin-nano"))
    # an engine registered by an earlier build, since corrupted: it must not block preparing or rebuilding
    b = Bundle.load(root)
    old = root / "tensorrt" / "engines" / "fp16-old.plan"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"plan")
    b.add_file(old, "tensorrt/engines/fp16-old.plan", name="tensorrt-fp16", format="tensorrt-plan",
               precision="fp16", backend="tensorrt")
    b.save()
    old.write_bytes(b"corrupted plan")
    prepare_tensorrt(root, "fp16", load_profile("jetson-orin-nano"))
    if not tensorrt_status()[0]:
        with pytest.raises(BackendError, match=r"^tensorrt: "):  # got as far as needing TensorRT
            build_engine(root, "fp16")
    model = root / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(TensorRTError, match="model.onnx: missing or changed since the bundle was written"):
        prepare_tensorrt(root, "fp16", load_profile("jetson-orin-nano"))


def test_export_tensorrt_here_prepares_and_prints_the_device_command(work: dict[str, Any], tmp_path: Path) -> None:
    from heatdeploy.exporters.tensorrt import tensorrt_status

    ok, why = tensorrt_status()
    if ok:
        pytest.skip(f"TensorRT works here ({why}): the GPU tests cover the build")
    root = _bundle(work, tmp_path / "b")
    result = export_tensorrt(root, None, load_profile("jetson-orin-nano"))
    assert result.built is None and result.status == why
    text = "\n".join(result.lines())
    assert f"heatdeploy build-engine {root} --precision int8" in text and "trtexec --onnx=" in text
    assert "not built here: tensorrt" in text
    shutil.rmtree(root / "tensorrt")
    assert export_tensorrt(root, "fp32", load_profile("jetson-orin-nano"), build="never").built is None

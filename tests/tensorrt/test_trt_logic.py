"""TensorRT decisions tested without TensorRT: profile -> builder plan, cache keys and invalidation, layer
precision, shapes, calibration-cache header, command lines, and the backend's refusal to run stale engines."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from heatdeploy.devices.profiles import load_profile
from heatdeploy.exporters.tensorrt import (
    BuildConfig,
    LayerInfo,
    TensorRTError,
    build_engine_command,
    builder_plan,
    cache_coverage,
    engine_cache_key,
    engine_options,
    engine_path,
    engine_record,
    find_cached_engine,
    fp32_layers,
    profile_shapes,
    resolve_int8_mode,
    retag_calibration_cache,
    trt_tag,
    trtexec_command,
)
from heatdeploy.runtime.backends.base import BackendError
from heatdeploy.runtime.backends.tensorrt import (
    check_engine_record,
    load,
    sidecar_path,
    verify_engine,
    version_triple,
)


# --- profile -> builder configuration -------------------------------------------------------------------
def test_build_config_from_profiles() -> None:
    nano = BuildConfig.from_profile(load_profile("jetson-orin-nano"))
    assert (nano.precision, nano.workspace_mb, nano.max_batch, nano.dla_core) == ("int8", 1024, 4, None)
    assert nano.profile == "jetson-orin-nano" and nano.target_tensorrt == "10.3" and nano.fp32_heads
    agx = BuildConfig.from_profile(load_profile("jetson-agx-orin"), "fp16")
    assert (agx.precision, agx.opt_batch, agx.max_batch, agx.workspace_mb) == ("fp16", 4, 16, 4096)
    assert BuildConfig.from_profile(None).precision == "fp32"
    assert BuildConfig.from_profile(load_profile("jetson-xavier-nx"), dla_core=1).dla_core == 1
    with pytest.raises(TensorRTError, match="DLA runs FP16 or INT8 only"):
        BuildConfig.from_profile(load_profile("jetson-xavier-nx"), "fp32", dla_core=0)
    with pytest.raises(TensorRTError, match="precision 'int4'"):
        BuildConfig(precision="int4").validate()
    with pytest.raises(TensorRTError, match="unknown build option"):
        BuildConfig.from_dict({"precision": "fp16", "workspace": 1})
    assert BuildConfig.from_dict(nano.to_dict()) == nano


def test_int8_mode_per_tensorrt_version() -> None:
    assert resolve_int8_mode("auto", "8.5.2")[0] == "implicit"
    assert resolve_int8_mode("auto", "10.3.0.30")[0] == "implicit"
    assert resolve_int8_mode("auto", "10.3.0", have_cache=False)[0] == "explicit"
    assert resolve_int8_mode("explicit", "8.5.2")[0] == "explicit"
    mode, why = resolve_int8_mode("auto", "11.0.0")
    assert mode == "explicit" and "strongly typed" in why
    with pytest.raises(TensorRTError, match="no implicit"):
        resolve_int8_mode("implicit", "11.1")
    with pytest.raises(TensorRTError, match="needs explicit INT8"):
        resolve_int8_mode("auto", "11.1", have_qdq=False)
    with pytest.raises(TensorRTError, match="needs a QDQ model"):
        resolve_int8_mode("explicit", "10.3", have_qdq=False)
    with pytest.raises(TensorRTError, match="needs the calibration cache"):
        resolve_int8_mode("implicit", "10.3", have_cache=False)


def test_builder_plan_per_version_and_precision() -> None:
    nx = load_profile("jetson-orin-nx")
    fp16 = builder_plan(BuildConfig.from_profile(nx, "fp16"), "8.5.2")
    assert fp16.network_flags == ("EXPLICIT_BATCH",) and fp16.source == "fp32"
    assert fp16.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and fp16.clear_flags == ("TF32",)
    assert fp16.precision_constraints and not fp16.calibration_cache

    implicit = builder_plan(BuildConfig.from_profile(nx), "10.3.0", int8_mode="implicit")
    assert implicit.network_flags == () and implicit.source == "fp32" and implicit.calibration_cache
    assert implicit.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
    explicit = builder_plan(BuildConfig.from_profile(nx), "10.3.0", int8_mode="explicit")
    assert explicit.source == "qdq" and not explicit.calibration_cache and "INT8" in explicit.builder_flags

    strong = builder_plan(BuildConfig.from_profile(nx), "11.0.1", int8_mode="explicit")
    assert strong.network_flags == ("STRONGLY_TYPED",) and strong.source == "qdq"
    assert strong.builder_flags == () and not strong.precision_constraints  # not allowed when strongly typed
    strong16 = builder_plan(BuildConfig.from_profile(nx, "fp16"), "11.0")
    assert strong16.source == "fp16" and strong16.builder_flags == ()

    fp32 = builder_plan(BuildConfig.from_profile(nx, "fp32"), "10.3")
    assert fp32.builder_flags == () and not fp32.precision_constraints and fp32.clear_flags == ("TF32",)
    assert builder_plan(BuildConfig.from_profile(nx, "fp32", tf32=True), "10.3").clear_flags == ()
    no_pins = builder_plan(BuildConfig.from_profile(nx, "fp16", fp32_heads=False), "10.3")
    assert no_pins.builder_flags == ("FP16",) and not no_pins.precision_constraints

    dla = builder_plan(BuildConfig.from_profile(nx, "int8", dla_core=0), "10.3", int8_mode="implicit")
    assert dla.dla_core == 0 and "GPU_FALLBACK" in dla.builder_flags and any("DLA needs static" in n for n in dla.notes)
    with pytest.raises(TensorRTError, match="resolved"):
        builder_plan(BuildConfig.from_profile(nx), "10.3")  # int8 with the mode still 'auto'


# --- cache key, path, invalidation ----------------------------------------------------------------------
def _key(**change: object) -> str:
    cfg = BuildConfig.from_profile(load_profile("jetson-orin-nano"))
    plan = builder_plan(cfg, str(change.get("trt", "10.3.0.30")), int8_mode="implicit")
    opts = engine_options(cfg, plan, str(change.get("cal", "c" * 64)))
    opts.update(change.get("opts", {}))  # type: ignore[call-overload]
    return engine_cache_key(model_sha256=str(change.get("model", "a" * 64)), trt_version=str(change.get("trt",
                            "10.3.0.30")), gpu_name=str(change.get("gpu", "Orin")),
                            precision=str(change.get("precision", "int8")), options=opts)


def test_cache_key_changes_with_every_input() -> None:
    base = _key()
    assert base == _key() and len(base) == 64
    assert _key(trt="10.3.0.26") == base  # same major.minor.patch: the build number does not matter
    changed = [_key(model="b" * 64), _key(trt="10.4.0"), _key(trt="8.6.2"), _key(gpu="Xavier"),
               _key(precision="fp16"), _key(cal="d" * 64), _key(opts={"workspace_mb": 2048}),
               _key(opts={"max_batch": 8}), _key(opts={"dla_core": 0})]
    assert len({base, *changed}) == len(changed) + 1


def test_profile_name_is_not_part_of_the_key() -> None:
    a = BuildConfig.from_profile(load_profile("jetson-orin-nx"), "fp16")
    b = replace(a, profile="my-copy", target_tensorrt="10.4")
    pa, pb = builder_plan(a, "10.3"), builder_plan(b, "10.3")
    assert engine_options(a, pa) == engine_options(b, pb)
    c = BuildConfig.from_profile(load_profile("jetson-orin-nx"), "fp16", builder_optimization_level=5)
    assert engine_options(c, builder_plan(c, "10.3")) != engine_options(a, pa)


def _write_engine(bundle: Path, key: str, *, trt: str = "10.3.0.30", gpu: str = "Orin",
                  data: bytes = b"\x00plan-bytes" * 100) -> Path:
    plan = engine_path(bundle, key, "int8")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(data)
    record = engine_record(key=key, precision="int8", int8_mode="implicit", trt_version=trt, gpu_name=gpu,
                           compute_capability="8.7", model_sha256="a" * 64, engine=data, options={"x": 1},
                           inputs=["image"], outputs=["heatmaps", "existence"], fp32_layers={"head": "why"},
                           build_seconds=12.0, profile="jetson-orin-nano")
    sidecar_path(plan).write_text(json.dumps(record))
    return plan


def test_engine_path_and_cache_hit(tmp_path: Path) -> None:
    key = _key()
    plan = engine_path(tmp_path, key, "int8")
    assert plan == tmp_path / "tensorrt" / "engines" / f"int8-{key[:16]}.plan"
    assert sidecar_path(plan).name == plan.name + ".json"
    found, why = find_cached_engine(tmp_path, key, "int8", trt_version="10.3.0.30", gpu_name="Orin")
    assert found is None and why == ["no engine built yet for these inputs"]
    _write_engine(tmp_path, key)
    found, why = find_cached_engine(tmp_path, key, "int8", trt_version="10.3.0.30", gpu_name="Orin")
    assert found == plan and why == []


@pytest.mark.parametrize("what, expect", [
    ("corrupt", "the file is corrupt or was replaced"),
    ("truncated", "the file is corrupt or was replaced"),
    ("tensorrt", "built with TensorRT 10.3.0.30, this machine has 10.4.0"),
    ("gpu", "built for GPU 'Orin', this is 'NVIDIA H100'"),
    ("sidecar", "no engine record"),
    ("garbage", "unreadable engine record"),
])
def test_stale_or_corrupt_engine_is_detected(tmp_path: Path, what: str, expect: str) -> None:
    key = _key()
    plan = _write_engine(tmp_path, key)
    trt, gpu = "10.3.0.30", "Orin"
    if what == "corrupt":
        data = bytearray(plan.read_bytes())
        data[5] ^= 0xFF
        plan.write_bytes(bytes(data))
    elif what == "truncated":
        plan.write_bytes(plan.read_bytes()[:-10])
    elif what == "tensorrt":
        trt = "10.4.0"
    elif what == "gpu":
        gpu = "NVIDIA H100"
    elif what == "sidecar":
        sidecar_path(plan).unlink()
    else:
        sidecar_path(plan).write_text("{not json")
    found, why = find_cached_engine(tmp_path, key, "int8", trt_version=trt, gpu_name=gpu)
    assert found is None and any(expect in w for w in why)
    with pytest.raises(BackendError, match=r"not run|no engine record|unreadable") as info:
        verify_engine(plan, trt_version=trt, gpu_name=gpu, key=key)
    assert "heatdeploy build-engine" in str(info.value) and "\n" not in str(info.value)


def test_check_engine_record_key_and_format() -> None:
    rec = {"format": "heatdeploy-tensorrt-engine", "schema": 1, "key": "k1", "tensorrt": "8.5.2.2", "gpu": "Xavier",
           "engine_sha256": "e" * 64}
    assert check_engine_record(rec, engine_sha256="e" * 64, trt_version="8.5.2", gpu_name="Xavier", key="k1") == []
    assert "another model" in check_engine_record(rec, key="k2")[0]
    assert "not a heatdeploy engine record" in check_engine_record({**rec, "format": "x"})[0]
    assert "schema" in check_engine_record({**rec, "schema": 2})[0]
    assert version_triple("10.3.0.30") == (10, 3, 0) and version_triple("8.5") == (8, 5, 0)


def test_backend_refuses_without_tensorrt(tmp_path: Path) -> None:
    """Here TensorRT is absent (or only its stubs): load fails with a reason, never a traceback from deep inside."""
    plan = _write_engine(tmp_path, _key())
    try:
        import tensorrt

        real = isinstance(getattr(tensorrt, "__version__", None), str)
    except ImportError:
        real = False
    if real:
        pytest.skip("TensorRT is installed: the GPU tests cover load()")
    with pytest.raises(BackendError, match=r"tensorrt: .*(not importable|empty namespace)") as info:
        load(plan)
    assert "install" in str(info.value)
    with pytest.raises(BackendError, match="unknown option"):
        load(plan, {"providers": ["x"]})
    with pytest.raises(BackendError, match="no such TensorRT engine"):
        load(tmp_path / "missing.plan")


# --- layer precision and shapes -------------------------------------------------------------------------
def test_fp32_layers_pins_saturating_ops_and_head_tails() -> None:
    layers = [
        LayerInfo("conv1", "conv", ("image",), ("c1",)),
        LayerInfo("gate", "sigmoid", ("c1",), ("g1",)),  # a sigmoid mid-network: pinned too
        LayerInfo("dq", "dequantize", ("g1",), ("g1q",)),
        LayerInfo("deconv", "deconv", ("g1q",), ("d1",)),
        LayerInfo("head_conv", "conv", ("d1",), ("logits",)),
        LayerInfo("head_sigmoid", "sigmoid", ("logits",), ("heatmaps",)),
        LayerInfo("pool", "other", ("c1",), ("pooled",)),
        LayerInfo("flat", "other", ("pooled",), ("flat",)),
        LayerInfo("w", "constant", (), ("w6",)),
        LayerInfo("fc", "matmul", ("flat", "w6"), ("mm",)),
        LayerInfo("b", "constant", (), ("b6",)),
        LayerInfo("bias", "other", ("mm", "b6"), ("existence",)),
    ]
    pins = fp32_layers(layers, ["heatmaps", "existence"])
    assert set(pins) == {"gate", "head_conv", "head_sigmoid", "fc", "bias"}
    assert "last conv of head 'heatmaps'" in pins["head_conv"] and "saturating" in pins["head_sigmoid"]
    assert "conv1" not in pins and "deconv" not in pins and "w" not in pins and "pool" not in pins


def test_profile_shapes() -> None:
    cfg = BuildConfig.from_profile(load_profile("jetson-agx-orin"), "fp16")
    lo, opt, hi, notes = profile_shapes([-1, 3, 256, 192], cfg, "image")
    assert (lo, opt, hi, notes) == ((1, 3, 256, 192), (4, 3, 256, 192), (16, 3, 256, 192), [])
    lo, opt, hi, notes = profile_shapes([2, 3, 256, 192], cfg, "image")
    assert lo == opt == hi == (2, 3, 256, 192) and "static batch 2" in notes[0]
    with pytest.raises(TensorRTError, match="dynamic non-batch dims"):
        profile_shapes([-1, 3, -1, -1], cfg, "image")


# --- calibration cache header, commands -----------------------------------------------------------------
def test_trt_tag_matches_ranges_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx", reason="the calibration side's trt_version_tag (the reference) needs onnx")
    from heatdeploy.calibration.ranges import trt_version_tag

    versions = ["8.5.2", "8.6.1.6", "10.3.0.30", "10.13.0", "11.0"]
    assert [trt_tag(v) for v in versions] == [trt_version_tag(v) for v in versions]
    monkeypatch.setitem(sys.modules, "heatdeploy.calibration.ranges", None)  # a device without onnx
    assert [trt_tag(v) for v in versions] == [trt_version_tag(v) for v in versions]
    assert trt_tag("8.5.2") == "8502" and trt_tag("10.3") == "100300"


def test_retag_calibration_cache() -> None:
    text = "TRT-8XXX-EntropyCalibration2\nimage: 3caa4a56\nr1: 3d627d7a\n"
    out = retag_calibration_cache(text, "10.3.0.30")
    assert out.splitlines() == ["TRT-100300-EntropyCalibration2", "image: 3caa4a56", "r1: 3d627d7a"]
    with pytest.raises(TensorRTError, match="first line"):
        retag_calibration_cache("image: 3caa4a56\n", "10.3")
    with pytest.raises(TensorRTError, match="MinMaxCalibration"):
        retag_calibration_cache("TRT-8502-MinMaxCalibration\n", "10.3")
    assert cache_coverage(["image", "r1", "gone"], ["image", "r1", "c1"]) == (["image", "r1"], ["gone"])


def _entry(profile: str, precision: str, sources: tuple[str, ...]) -> dict[str, object]:
    cfg = BuildConfig.from_profile(load_profile(profile), precision)
    paths = {"fp32": "model.onnx", "qdq": "tensorrt/model.int8.qdq.onnx", "fp16": "model.fp16.onnx",
             "calibration_cache": "tensorrt/calibration.cache"}
    return {"config": cfg.to_dict(), "sources": {s: {"path": paths[s], "sha256": "0"} for s in sources},
            "fp32_layers": {"head_conv": "x", "head_sigmoid": "y"}}


def test_trtexec_and_build_engine_commands() -> None:
    want = "heatdeploy build-engine 'bundles/pose v2' --precision int8"  # quoted for the shell
    assert build_engine_command("bundles/pose v2", "int8") == want
    line = trtexec_command("b", _entry("jetson-xavier-nx", "int8", ("fp32", "qdq", "calibration_cache")),
                           input_name="image", input_dims=[-1, 3, 256, 192])
    for part in ("trtexec --onnx=b/model.onnx", "--int8", "--fp16", "--calib=b/tensorrt/calibration.cache",
                 "--minShapes=image:1x3x256x192", "--maxShapes=image:4x3x256x192", "--memPoolSize=workspace:512",
                 "--precisionConstraints=obey", "--layerPrecisions=head_conv:fp32,head_sigmoid:fp32", "--noTF32"):
        assert part in line
    strong = trtexec_command("b", _entry("jetson-orin-nano", "int8", ("fp32", "qdq")), input_name="image",
                             input_dims=[-1, 3, 256, 192], trt_version="11.0")
    assert "--onnx=b/tensorrt/model.int8.qdq.onnx" in strong and "--stronglyTyped" in strong
    assert "--int8" not in strong and "--precisionConstraints" not in strong and "--calib" not in strong
    static = trtexec_command("b", _entry("jetson-orin-nano", "fp16", ("fp32",)), input_name="image",
                             input_dims=[1, 3, 256, 192])
    assert "--minShapes" not in static and "--fp16" in static and "--builderOptimizationLevel=3" in static
    dla = _entry("jetson-xavier-nx", "fp16", ("fp32",))
    dla["config"] = {**dla["config"], "dla_core": 1}  # type: ignore[dict-item]
    assert "--useDLACore=1 --allowGPUFallback" in trtexec_command("b", dla, input_name="image",
                                                                  input_dims=[1, 3, 64, 48])


# --- Jetson review: module identity, cuda-python without a driver, trtexec for 8.5 ----------------------
ORIN_NANO_8GB = {"compute_capability": "8.7", "sm_count": 8, "memory_gib": 7,
                 "board": "NVIDIA Jetson Orin Nano Developer Kit"}
ORIN_NX_16GB = {"compute_capability": "8.7", "sm_count": 8, "memory_gib": 15, "board": "NVIDIA Jetson Orin NX"}
AGX_ORIN = {"compute_capability": "8.7", "sm_count": 16, "memory_gib": 61, "board": "Jetson AGX Orin"}


def test_cache_key_tells_jetson_modules_apart() -> None:
    """All Orin modules report GPU name "Orin" and compute 8.7: SM count, memory and board model decide."""
    cfg = BuildConfig.from_profile(load_profile("jetson-orin-nano"), "fp16")
    opts = engine_options(cfg, builder_plan(cfg, "10.3"))

    def key(device: dict[str, object] | None) -> str:
        return engine_cache_key(model_sha256="a" * 64, trt_version="10.3.0.30", gpu_name="Orin", precision="fp16",
                                options=opts, device=device)

    keys = {key(d) for d in (ORIN_NANO_8GB, ORIN_NX_16GB, AGX_ORIN, None)}
    assert len(keys) == 4
    assert key(dict(ORIN_NANO_8GB)) == key(ORIN_NANO_8GB)


def test_engine_from_another_module_or_compute_capability_is_refused(tmp_path: Path) -> None:
    data = b"\x00plan" * 50
    plan = engine_path(tmp_path, "k" * 64, "fp16")
    plan.parent.mkdir(parents=True)
    plan.write_bytes(data)
    record = engine_record(key="k" * 64, precision="fp16", int8_mode=None, trt_version="10.3.0.30", gpu_name="Orin",
                           compute_capability="8.7", model_sha256="a" * 64, engine=data, options={}, inputs=["image"],
                           outputs=["heatmaps"], fp32_layers={}, build_seconds=1.0, profile="jetson-orin-nx",
                           device=ORIN_NX_16GB)
    assert record["device"] == ORIN_NX_16GB
    sidecar_path(plan).write_text(json.dumps(record))
    ok = dict(trt_version="10.3.0.30", gpu_name="Orin")
    assert check_engine_record(record, **ok, device=ORIN_NX_16GB) == []
    why = check_engine_record(record, **ok, device=ORIN_NANO_8GB)
    assert any("GPU memory (GiB) 15, this device has 7" in w for w in why)
    assert any("board NVIDIA Jetson Orin NX, this device has NVIDIA Jetson Orin Nano" in w for w in why)
    other_cc = {**ORIN_NX_16GB, "compute_capability": "7.2"}
    with pytest.raises(BackendError, match="compute capability 8.7, this device has 7.2") as info:
        verify_engine(plan, **ok, device=other_cc)
    assert "\n" not in str(info.value)
    # a record written before the device identity was recorded: its compute capability is still checked
    old = {k: v for k, v in record.items() if k != "device"}
    assert any("compute capability" in w for w in check_engine_record(old, **ok, device=other_cc))
    assert check_engine_record(old, **ok, device=ORIN_NANO_8GB) == []


def test_board_model_reads_the_device_tree(tmp_path: Path) -> None:
    from heatdeploy.runtime.backends.tensorrt import board_model

    node = tmp_path / "model"
    node.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert board_model(node) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert board_model(tmp_path / "absent") == ""


def test_cuda_python_without_libcuda_is_not_available(tmp_path: Path) -> None:
    """cuda-python installed in a container without the NVIDIA runtime raises RuntimeError (no libcuda.so.1):
    that is "not available" in one line, not a traceback. The package here stands in for cuda-python and
    fails the way it does when the driver library is absent."""
    import subprocess

    pkg = tmp_path / "cuda" / "bindings"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime.py").write_text("raise RuntimeError('Failed to dlopen libcuda.so.1')\n")
    code = ("from heatdeploy.runtime.backends.base import BackendError\n"
            "from heatdeploy.runtime.backends.tensorrt import cuda_api\n"
            "try:\n    cuda_api('cuda-python')\nexcept BackendError as e:\n    print('BackendError:', e)\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("BackendError: tensorrt: cuda-python cannot reach the CUDA driver (Failed to dlopen")
    assert "--runtime nvidia" in line and "\n" not in line


def test_trtexec_line_for_tensorrt_8_5_has_no_builder_optimization_level() -> None:
    """trtexec 8.5.2 (JetPack 5) does not know --builderOptimizationLevel (added in 8.6): leave it out there."""
    entry = _entry("jetson-orin-nano", "fp16", ("fp32",))
    assert "--builderOptimizationLevel=3" in trtexec_command("b", entry, input_name="image", input_dims=[1, 3, 64, 48],
                                                              trt_version="10.3")
    for old in ("8.5.2", "8.5.2.2"):
        line = trtexec_command("b", entry, input_name="image", input_dims=[1, 3, 64, 48], trt_version=old)
        assert "--builderOptimizationLevel" not in line and "--fp16" in line
    assert "--builderOptimizationLevel=3" in trtexec_command("b", entry, input_name="image",
                                                              input_dims=[1, 3, 64, 48], trt_version="8.6.1")


def test_device_build_module_needs_no_onnx_calibration_or_exporters() -> None:
    """The build runs on the Jetson: importing it loads no onnx, torch, calibration or exporters."""
    import subprocess

    code = ("import sys\nimport heatdeploy.runtime.backends.tensorrt_build\n"
            "print('\\n'.join(sorted(sys.modules)))")
    mods = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert not {m.split(".")[0] for m in mods} & {"onnx", "torch", "onnxruntime", "openvino"}
    assert not [m for m in mods if m.startswith(("heatdeploy.calibration", "heatdeploy.exporters",
                                                 "heatdeploy.models", "heatdeploy.parity"))]

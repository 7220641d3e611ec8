"""The OpenVINO backend: explicit precision (never the CPU's silent bf16), devices, options, async, pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.runtime.backends.base import BackendError, load_backend  # noqa: E402
from heatdeploy.runtime.backends.openvino import (  # noqa: E402
    OpenVinoBackend,
    available_devices,
    core,
    load,
)

XML = Path("openvino") / "model.fp32.xml"


def _caps() -> list[str]:
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (80, 60, 3), dtype=np.uint8) for _ in range(n)]


def test_fp32_artifact_compiles_with_f32_hint(tiny_ov_bundle: Path) -> None:
    backend = load(tiny_ov_bundle / XML)
    # On a bf16 CPU OpenVINO's default here would be bf16; heatdeploy's FP32 means f32.
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert backend.inference_precision == "f32"
    assert "rt_info" in backend.precision_source
    assert backend.describe()["properties"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_bare_ir_without_heatdeploy_rt_info_still_runs_f32(tiny_bundle: Path, tmp_path: Path) -> None:
    model = ov.convert_model(str(tiny_bundle / "model.onnx"))
    ov.save_model(model, str(tmp_path / "plain.xml"), compress_to_fp16=False)
    backend = load(tmp_path / "plain.xml")
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert backend.precision_source.startswith("default f32")


def test_absent_device_lists_the_available_ones(tiny_ov_bundle: Path) -> None:
    have = {d.split(".")[0] for d in available_devices()}
    absent = next((d for d in ("GPU", "NPU") if d not in have), None)
    if absent is None:
        pytest.skip("this machine has both a GPU and an NPU")
    with pytest.raises(BackendError, match=rf"device '{absent}' is not available.*available: .*CPU"):
        load(tiny_ov_bundle / XML, {"device": absent})


def test_virtual_devices_are_refused(tiny_ov_bundle: Path) -> None:
    with pytest.raises(BackendError, match="picks a device by itself"):
        load(tiny_ov_bundle / XML, {"device": "AUTO"})


def test_unknown_option_is_refused(tiny_ov_bundle: Path) -> None:
    with pytest.raises(BackendError, match="unknown option.*threads"):
        load(tiny_ov_bundle / XML, {"threads": 1})


def test_precision_the_cpu_lacks_is_an_error(tiny_ov_bundle: Path) -> None:
    if "FP16" in _caps():
        pytest.skip("this CPU runs f16")
    # OpenVINO would silently compile bf16 here; the backend refuses instead.
    with pytest.raises(BackendError, match="cannot run f16"):
        load(tiny_ov_bundle / XML, {"inference_precision": "f16"})


def test_options_reach_the_compiled_model(tiny_ov_bundle: Path) -> None:
    backend = load(tiny_ov_bundle / XML, {"performance_hint": "THROUGHPUT", "num_streams": 2, "num_threads": 2,
                                          "inference_precision": "fp32"})
    props = backend.properties()
    assert props["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert props["NUM_STREAMS"] == "2"
    assert props["INFERENCE_NUM_THREADS"] == "2"
    assert props["INFERENCE_PRECISION_HINT"] == "f32"
    assert backend.adjusted == {}
    # OpenVINO caps streams to threads; the backend reports that instead of hiding it
    capped = load(tiny_ov_bundle / XML, {"num_streams": 2, "num_threads": 1})
    assert capped.adjusted == {"NUM_STREAMS": ("2", "1")}
    assert capped.describe()["adjusted_by_openvino"]["NUM_STREAMS"] == {"asked": "2", "got": "1"}
    with pytest.raises(BackendError, match="performance_hint must be one of"):
        load(tiny_ov_bundle / XML, {"performance_hint": "FAST"})
    with pytest.raises(BackendError, match="num_streams must be an integer"):
        load(tiny_ov_bundle / XML, {"num_streams": -1})


def test_infer_many_matches_infer(tiny_ov_bundle: Path) -> None:
    backend = load(tiny_ov_bundle / XML, {"performance_hint": "THROUGHPUT", "num_requests": 3})
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal((n, 3, 64, 48)).astype(np.float32)} for n in (1, 2, 1, 3, 1)]
    many = backend.infer_many(feeds)
    assert len(many) == len(feeds)
    for feed, got in zip(feeds, many, strict=True):
        want = backend.infer(feed)
        for name in backend.output_names:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_results_outlive_the_next_call_and_inputs_are_read_not_changed(tiny_ov_bundle: Path) -> None:
    backend = load(tiny_ov_bundle / XML)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((1, 3, 64, 48)).astype(np.float32) for _ in range(2))
    kept = a.copy()
    first = backend.infer({"image": a})
    snapshot = {k: v.copy() for k, v in first.items()}
    second = backend.infer({"image": b})
    np.testing.assert_array_equal(a, kept)  # inputs are shared with the engine, never written
    for name in backend.output_names:
        np.testing.assert_array_equal(first[name], snapshot[name])  # not a view the next call overwrote
        assert not np.array_equal(first[name], second[name])


def test_feeds_must_name_the_inputs(tiny_ov_bundle: Path) -> None:
    backend = load(tiny_ov_bundle / XML)
    with pytest.raises(BackendError, match="missing \\['image'\\], unknown \\['x'\\]"):
        backend.infer({"x": np.zeros((1, 3, 64, 48), np.float32)})


def test_missing_weights_and_wrong_files(tiny_ov_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "lonely.xml").write_text((tiny_ov_bundle / XML).read_text())
    with pytest.raises(BackendError, match="weights lonely.bin are missing"):
        load(tmp_path / "lonely.xml")
    with pytest.raises(BackendError, match="reads IR"):
        load(tiny_ov_bundle / "model.bin")


def test_bare_onnx_runs_on_openvino_when_asked(tiny_ov_bundle: Path, tmp_path: Path) -> None:
    """OpenVINO reads ONNX itself: backend="openvino" on a bare .onnx is honoured, spec from its metadata."""
    import onnx

    from heatdeploy.bundle import Bundle
    from heatdeploy.exporters.onnx import embed_spec
    from heatdeploy.runtime import Pipeline
    from heatdeploy.spec import SpecError

    spec = Bundle.load(tiny_ov_bundle).spec
    proto = onnx.load(str(tiny_ov_bundle / "model.onnx"))
    with pytest.raises(SpecError, match="carries no heatdeploy spec"):
        Pipeline.load(tiny_ov_bundle / "model.onnx", backend="openvino")
    embed_spec(proto, spec)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    pipe = Pipeline.load(bare, backend="openvino")
    assert pipe.backend_name == "openvino" and isinstance(pipe.backend, OpenVinoBackend)
    assert pipe.spec == spec
    ort_pipe = Pipeline.load(bare)
    assert ort_pipe.backend_name == "onnxruntime"
    np.testing.assert_allclose(pipe.predict(_images(2)).keypoints, ort_pipe.predict(_images(2)).keypoints, atol=1e-3)


def test_pipeline_picks_the_openvino_backend(tiny_ov_bundle: Path) -> None:
    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(tiny_ov_bundle, artifact="openvino-fp32")
    assert pipe.backend_name == "openvino"
    assert isinstance(pipe.backend, OpenVinoBackend)
    pred = pipe.predict(_images(3))
    assert pred.keypoints.shape == (3, 3, 2)
    ort_pipe = Pipeline.load(tiny_ov_bundle, artifact="onnx-fp32")
    np.testing.assert_allclose(pred.keypoints, ort_pipe.predict(_images(3)).keypoints, atol=1e-3)


def test_bare_xml_pipeline_reads_the_spec_from_rt_info(tiny_ov_bundle: Path) -> None:
    from heatdeploy.bundle import Bundle
    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(tiny_ov_bundle / XML)
    assert pipe.backend_name == "openvino"
    assert pipe.spec == Bundle.load(tiny_ov_bundle).spec
    assert pipe.predict(_images(2)).present.shape == (2, 3)


def test_registered_with_load_backend(tiny_ov_bundle: Path) -> None:
    backend = load_backend("openvino", str(tiny_ov_bundle / XML), {"num_threads": 1})
    assert backend.output_names == ["heatmaps", "existence"]


def test_openvino_pipeline_pulls_no_torch_onnx_or_nncf(tiny_ov_bundle: Path) -> None:
    import subprocess
    import sys

    code = ("import sys\nimport numpy as np\nfrom heatdeploy.runtime import Pipeline\n"
            f"p = Pipeline.load({str(tiny_ov_bundle)!r}, artifact='openvino-fp32')\n"
            "p.predict([np.zeros((100, 80, 3), np.uint8)])\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    roots = {m.split(".")[0] for m in out.split()}
    assert "openvino" in roots
    assert not roots & {"torch", "onnx", "onnxruntime", "nncf"}

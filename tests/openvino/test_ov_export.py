"""ONNX -> OpenVINO IR export into a bundle: artifacts, rt_info spec, hashes, dynamic batch, fp16 and bf16."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.bundle import Bundle, BundleError  # noqa: E402
from heatdeploy.exporters.openvino import (  # noqa: E402
    OpenVinoExportError,
    add_openvino_artifact,
    read_ir_spec,
    summary_line,
)
from heatdeploy.runtime.backends.base import BackendError  # noqa: E402
from heatdeploy.runtime.backends.openvino import (  # noqa: E402
    RT_INFERENCE,
    RT_PRECISION,
    core,
    load,
    read_model,
    rt_text,
)


def _caps() -> list[str]:
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def test_ir_round_trip_carries_the_spec_in_rt_info(tiny_bundle: Path) -> None:
    art = add_openvino_artifact(tiny_bundle, "fp32")
    assert (art.name, art.format, art.precision, art.backend) == ("openvino-fp32", "openvino", "fp32", "openvino")
    assert art.path == "openvino/model.fp32.xml"
    b = Bundle.load(tiny_bundle)  # verifies the .xml and the .bin against the manifest
    a = b.artifact("openvino-fp32")
    assert set(a.extra_files) == {"openvino/model.fp32.bin"}
    xml = b.path_of(a)
    assert read_ir_spec(xml) == b.spec
    model = read_model(xml)
    assert rt_text(model, RT_PRECISION) == "fp32"
    assert rt_text(model, RT_INFERENCE) == "f32"
    assert a.notes["dynamic_batch"] is True
    assert max(a.notes["check"]["max_abs_diff"].values()) < 1e-4  # f32 IR vs ORT FP32
    assert "openvino" in a.tools
    assert b.artifact("onnx-fp32").sha256  # the source artifact is still there
    assert not list(tiny_bundle.glob(".openvino-*"))  # no temporary folder left behind
    assert "openvino-fp32" in summary_line(a)


def test_bin_hash_is_verified_by_bundle_load(tiny_ov_bundle: Path, tmp_path: Path) -> None:
    import shutil

    root = Path(shutil.copytree(tiny_ov_bundle, tmp_path / "tampered"))
    binary = root / "openvino" / "model.fp32.bin"
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    b = Bundle.load(root)  # hashes are checked for the artifact that is used
    with pytest.raises(BundleError, match=r"model\.fp32\.bin.*sha256"):
        b.path_of(b.artifact("openvino-fp32"))


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch(tiny_ov_bundle: Path, batch: int) -> None:
    backend = load(tiny_ov_bundle / "openvino" / "model.fp32.xml")
    assert backend.input_shapes["image"][0] is None
    x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 48)).astype(np.float32)
    out = backend.infer({"image": x})
    assert out["heatmaps"].shape == (batch, 3, 16, 12)
    assert out["existence"].shape == (batch, 3)
    single = backend.infer({"image": x[-1:]})  # rows are independent of the batch they run in
    np.testing.assert_allclose(out["heatmaps"][-1:], single["heatmaps"], atol=1e-5)


def test_fp16_compresses_weights_and_never_runs_bf16(tiny_bundle: Path) -> None:
    add_openvino_artifact(tiny_bundle, "fp32")
    art = add_openvino_artifact(tiny_bundle, "fp16")
    b = Bundle.load(tiny_bundle)
    size16 = b.path_of("openvino/model.fp16.bin").stat().st_size
    size32 = b.path_of("openvino/model.fp32.bin").stat().st_size
    assert size16 < 0.6 * size32
    assert rt_text(read_model(b.path_of(art)), RT_INFERENCE) == "f16,f32"
    backend = load(b.path_of(art))
    assert backend.inference_precision == ("f16" if "FP16" in _caps() else "f32")
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") != ov.Type.bf16


def test_bf16_is_its_own_artifact(tiny_bundle: Path) -> None:
    art = add_openvino_artifact(tiny_bundle, "bf16")
    xml = Bundle.load(tiny_bundle).path_of(art)
    assert rt_text(read_model(xml), RT_INFERENCE) == "bf16"
    if "BF16" in _caps():
        backend = load(xml)
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
        assert max(art.notes["check"]["max_abs_diff"].values()) > 0  # bf16 is not f32
    else:  # a CPU without bf16 must say so rather than run f32 under the bf16 name
        with pytest.raises(BackendError, match="cannot run bf16"):
            load(xml)


def test_both_artifacts_kept_in_one_manifest(tiny_bundle: Path) -> None:
    add_openvino_artifact(tiny_bundle, "fp32")
    add_openvino_artifact(tiny_bundle, "fp16")
    add_openvino_artifact(tiny_bundle, "fp32")  # re-export replaces its own entry only
    names = [a.name for a in Bundle.load(tiny_bundle).artifacts]
    assert sorted(names) == ["onnx-fp32", "openvino-fp16", "openvino-fp32"]


def test_unknown_precision_is_rejected(tiny_bundle: Path) -> None:
    with pytest.raises(OpenVinoExportError, match="choose one of fp32, fp16, bf16, int8"):
        add_openvino_artifact(tiny_bundle, "int4")


def test_spec_names_must_match_the_ir(tiny_bundle: Path) -> None:
    b = Bundle.load(tiny_bundle)
    b.spec = dataclasses.replace(b.spec, heatmap=dataclasses.replace(b.spec.heatmap, name="hm"))
    b.save()
    with pytest.raises(OpenVinoExportError, match=r"spec output\(s\) hm not among the IR outputs"):
        add_openvino_artifact(tiny_bundle, "fp32")
    assert [a.name for a in Bundle.load(tiny_bundle).artifacts] == ["onnx-fp32"]  # nothing recorded


def test_reexport_repairs_a_broken_artifact_but_not_a_changed_onnx(tiny_bundle: Path) -> None:
    add_openvino_artifact(tiny_bundle, "fp32")
    (tiny_bundle / "openvino" / "model.fp32.bin").write_bytes(b"broken")
    add_openvino_artifact(tiny_bundle, "fp32")  # only the source ONNX has to be intact
    Bundle.load(tiny_bundle)
    onnx_file = tiny_bundle / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model.onnx: missing or changed"):
        add_openvino_artifact(tiny_bundle, "fp16")

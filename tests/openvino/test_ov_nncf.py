"""NNCF INT8 for OpenVINO: FakeQuantize in the graph, float outputs, the shared data path, accuracy control."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.calibration.nncf_quantize import (  # noqa: E402
    SampleStream,
    float_scope,
    layer_precisions,
    output_tails,
    quantized_inputs,
)
from heatdeploy.calibration.sources import CalibrationError, open_source  # noqa: E402
from heatdeploy.exporters.openvino import add_openvino_artifact  # noqa: E402
from heatdeploy.runtime.backends.openvino import load, read_model  # noqa: E402

CALIB = {"calib": "synthetic", "calib_size": 32}


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(shutil.copytree(tiny_bundle_src, tmp_path_factory.mktemp("ovint8") / "bundle"))
    add_openvino_artifact(root, "int8", keep_fp32="base", **CALIB)  # the base float scope, nothing measured
    return root


def _xml(root: Path) -> Path:
    b = Bundle.load(root)
    return b.path_of(b.artifact("openvino-int8"))


def test_int8_ir_has_fakequantize_but_float_outputs(int8_bundle: Path) -> None:
    model = read_model(_xml(int8_bundle))
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("FakeQuantize") >= 4
    tails = output_tails(model)
    assert {"heatmaps", "existence", "head_conv", "head_conv/WithoutBiases"} <= set(tails)
    assert not any(quantized_inputs(model, tails).values()), "an output's producer reads a FakeQuantize"
    for result in model.get_results():  # what produces each output is a float op
        producer = result.input(0).get_source_output().get_node()
        assert producer.get_type_name() != "FakeQuantize"
        assert producer.get_friendly_name() in tails
    layers = layer_precisions(model)
    assert layers["head_conv/WithoutBiases"] == "float" and layers["existence"] == "float"
    assert all(layers[n] == "int8" for n in ("conv1/WithoutBiases", "conv2/WithoutBiases", "conv3/WithoutBiases"))


def test_only_decoded_outputs_keep_their_last_conv_float(tiny_bundle: Path) -> None:
    """NNCF quantizes op inputs: ignoring what follows a head's last conv keeps its values float either way."""
    model = ov.convert_model(str(tiny_bundle / "model.onnx"))
    both = float_scope(model)
    assert "head_conv/WithoutBiases" in both and "last Convolution" in both["head_conv/WithoutBiases"]
    only_existence = float_scope(model, decoded=["existence"])
    assert "head_conv/WithoutBiases" not in only_existence  # the undecoded map's last conv may run INT8 ...
    assert {"head_conv", "heatmaps"} <= set(only_existence)  # ... but what follows it stays float
    assert "existence" in only_existence
    assert "head_conv/WithoutBiases" not in output_tails(model, last_compute=False)


def test_int8_ir_runs_f32_outside_the_int8_layers(int8_bundle: Path) -> None:
    backend = load(_xml(int8_bundle))
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 48)).astype(np.float32)
    out = backend.infer({"image": x})
    assert out["heatmaps"].shape == (2, 3, 16, 12) and np.isfinite(out["heatmaps"]).all()
    assert ((out["heatmaps"] >= 0) & (out["heatmaps"] <= 1)).all()  # the Sigmoid stayed float


def test_int8_manifest_records_tools_data_and_float_scope(int8_bundle: Path) -> None:
    art = Bundle.load(int8_bundle).artifact("openvino-int8")
    assert (art.format, art.precision, art.backend) == ("openvino", "int8", "openvino")
    assert "nncf" in art.tools and "openvino" in art.tools
    cal = art.calibration
    assert cal["tool"] == "nncf" and cal["preset"] == "mixed"
    assert cal["calibration"]["kind"] == "synthetic" and cal["calibration"]["count"] == 32
    assert cal["options"]["subset_size"] == 32
    assert "last Convolution" in cal["excluded"]["head_conv/WithoutBiases"]
    assert "produces graph output" in cal["excluded"]["existence"]
    assert cal["accuracy_control"] is None
    assert "NNCF INT8 (mixed) on 32 synthetic samples" in cal["summary"]


def test_nncf_reads_the_same_data_path_as_ort(tiny_bundle: Path) -> None:
    spec = Bundle.load(tiny_bundle).spec
    batched = np.concatenate(list(open_source(spec, "synthetic", size=10, seed=3).batches(4)))
    stream = SampleStream(open_source(spec, "synthetic", size=10, seed=3), batch_size=8)
    singles = list(stream)
    assert len(stream) == 10 and all(s.shape == (1, 3, 64, 48) for s in singles)
    np.testing.assert_array_equal(np.concatenate(singles), batched)


def test_keep_fp32_names_are_checked(tiny_bundle: Path) -> None:
    model = ov.convert_model(str(tiny_bundle / "model.onnx"))
    assert "conv2/WithoutBiases" in float_scope(model, ["conv2/WithoutBiases"])
    assert set(float_scope(model, "none")) <= set(float_scope(model, "base"))
    with pytest.raises(CalibrationError, match="did you mean 'conv2/WithoutBiases'"):
        float_scope(model, ["conv2/WithoutBias"])
    with pytest.raises(CalibrationError, match=r"and 15 more of the 20 given") as err:  # a long wrong list: short
        float_scope(model, [f"nope_{i}" for i in range(20)])
    assert "nope_4" in str(err.value) and "nope_5" not in str(err.value) and len(str(err.value)) < 400


def test_user_model_needs_calibration_data(tiny_bundle: Path) -> None:
    with pytest.raises(CalibrationError, match="needs calibration data"):
        add_openvino_artifact(tiny_bundle, "int8")
    with pytest.raises(CalibrationError, match="preset 'fast'"):
        add_openvino_artifact(tiny_bundle, "int8", preset="fast", **CALIB)
    assert [a.name for a in Bundle.load(tiny_bundle).artifacts] == ["onnx-fp32"]


def test_accuracy_control_reverts_layers_and_names_them(tiny_bundle: Path) -> None:
    # A zero budget on a strict PCK (alpha 0.002 of the diagonal: about 0.16 px) forces NNCF to revert
    # layers; the iterations and ranking images are capped so it stays a few seconds.
    art = add_openvino_artifact(tiny_bundle, "int8", **CALIB, accuracy_control=0.0, accuracy_data="synthetic:24",
                                pck_alpha=0.002, max_iterations=3, ranking_subset_size=12)
    ac = art.calibration["accuracy_control"]
    assert ac["mode"] == "fp32" and ac["fp32"] == 100.0  # no ground truth for 3 keypoints: PCK vs FP32
    assert ac["drop_before"] > 0 and ac["nncf_ran"]
    reverted = ac["reverted_to_fp32"]
    assert reverted, "the budget should have forced layers back to float"
    layers = layer_precisions(read_model(_xml(tiny_bundle)))
    assert all(layers[name] == "float" for name in reverted)
    assert all(name in art.calibration["summary"] for name in reverted)
    assert ac["final"] >= ac["int8_before"]


def test_validator_scores_against_ground_truth_when_labelled(tiny_bundle: Path) -> None:
    from heatdeploy.calibration.nncf_quantize import KeypointValidator, compile_f32
    from heatdeploy.datasets import Dataset, Truth

    model = ov.convert_model(str(tiny_bundle / "model.onnx"))
    spec = Bundle.load(tiny_bundle).spec
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 48, 3), dtype=np.uint8) for _ in range(6)]
    data = Dataset(kind="synthetic", source="test", names=[str(i) for i in range(6)], arrays=images)
    by_fp32 = KeypointValidator(spec, data, model)
    assert by_fp32.mode == "fp32" and by_fp32.evaluate(compile_f32(model)) == 100.0
    # Truth = the FP32 model's own keypoints, with one keypoint moved far away: FP32 scores 17/18 visible.
    kps = by_fp32.keypoints(compile_f32(model)).coords_img.astype(np.float32)
    kps[0, 0] += 40.0
    visible = np.ones((6, 3), bool)
    labelled = Dataset(kind="labelled", source="test", names=data.names, arrays=images,
                          truth=Truth(kps, visible, visible), truth_sizes=np.tile([[64, 48]], (6, 1)))
    by_truth = KeypointValidator(spec, labelled, model)
    assert by_truth.mode == "truth" and "ground truth" in by_truth.name
    metric, per_item = by_truth(compile_f32(model), range(6))
    assert metric == pytest.approx(100.0 * 17 / 18)
    assert per_item[0] == pytest.approx(100.0 * 2 / 3) and per_item[1:] == [100.0] * 5


def test_stock_nncf_baseline_quantizes_the_output_producers(int8_bundle: Path) -> None:
    """The baseline is what a user gets from ``nncf.quantize(model, dataset)``: its head conv is INT8 (ours keeps
    it float), it is recorded beside ours, and parity can compare both on the same inputs."""
    from heatdeploy.calibration.stock import NNCF_STOCK_NAME, add_stock_nncf
    from heatdeploy.parity import run_parity

    art = add_stock_nncf(int8_bundle, "synthetic:32")
    b = Bundle.load(int8_bundle)
    assert b.artifact(NNCF_STOCK_NAME).sha256 == art.sha256 and art.backend == "openvino"
    layers = layer_precisions(read_model(b.path_of(art)))
    assert layers["head_conv/WithoutBiases"] == "int8"
    assert load(b.path_of(art)).compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    result = run_parity(int8_bundle, NNCF_STOCK_NAME, data="synthetic:4")
    assert result.keypoints.keypoints_total > 0 and np.isfinite(result.keypoints.mean_displacement_hm)

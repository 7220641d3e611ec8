"""INT8 quantization of the tiny heatmap model: outputs stay float, exclusions hold, it runs, failures leave nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from calib_helpers import build_tiny_model

from heatdeploy.calibration import collect as collect_mod
from heatdeploy.calibration import quantize as quant_mod
from heatdeploy.calibration.collect import CalibOptions, collect_ranges
from heatdeploy.calibration.graph import (
    PASS_THROUGH_OPS,
    float_islands,
    output_tails,
    saturating_nodes,
)
from heatdeploy.calibration.quantize import quantize_onnx_int8
from heatdeploy.calibration.ranges import extract_ranges
from heatdeploy.calibration.sources import CalibrationError, ImageFolderSource, open_source
from heatdeploy.spec import METADATA_KEY, ModelSpec

FAST = {"method": "minmax", "keep_fp32": "base", "use_cache": False}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _weight_is_quantized(model: onnx.ModelProto, node_name: str) -> bool:
    prod = _producers(model)
    node = next(n for n in model.graph.node if n.name == node_name)
    return node.input[1] in prod and prod[node.input[1]].op_type == "DequantizeLinear"


@pytest.fixture(scope="module")
def quantized(tiny_model: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[Path, quant_mod.QuantizeReport]:
    from calib_helpers import tiny_spec

    spec = tiny_spec()
    out = tmp_path_factory.mktemp("q") / "tiny.int8.onnx"
    report = quantize_onnx_int8(tiny_model, out, spec, ImageFolderSource(spec, image_dir), **FAST)
    return out, report


def test_qdq_model_keeps_outputs_float_and_runs(quantized: tuple[Path, quant_mod.QuantizeReport],
                                                 tiny_model: Path, spec: ModelSpec) -> None:
    out, report = quantized
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    prod = _producers(model)
    for name in ("heatmaps", "existence"):
        assert prod[name].op_type not in ("QuantizeLinear", "DequantizeLinear"), name
    assert prod["heatmaps"].op_type == "Sigmoid"
    assert prod[prod["heatmaps"].input[0]].op_type == "Conv"  # the head conv itself is float
    assert not _weight_is_quantized(model, "head_conv") and not _weight_is_quantized(model, "exist_fc")
    assert _weight_is_quantized(model, "conv2")
    assert [o.name for o in model.graph.output] == ["heatmaps", "existence"]  # still separate tensors
    meta = {p.key: p.value for p in model.metadata_props}
    assert ModelSpec.from_json(meta[METADATA_KEY]) == spec

    x = np.random.default_rng(0).standard_normal((2, 3, 64, 48)).astype(np.float32)
    ref = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert np.abs(got[0] - ref[0]).max() < 0.2  # INT8, but the same function

    assert report.ops["convs_int8"] >= 2 and "convs INT8" in report.ops["summary"]
    assert report.calibration["count"] == 24 and report.cache == "miss"
    assert set(report.excluded) >= {"head_sigmoid", "head_conv", "exist_fc"}
    json.dumps(report.to_manifest())  # goes into the bundle manifest as is


def test_exclusion_rules_on_the_tiny_graph(tiny_model: Path) -> None:
    model = onnx.load(str(tiny_model))
    assert set(output_tails(model)) == {"head_sigmoid", "head_conv", "exist_fc"}
    assert set(output_tails(model, through=PASS_THROUGH_OPS)) == {"head_sigmoid", "exist_fc"}
    assert set(saturating_nodes(model)) == {"head_sigmoid"}
    everything = {n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")}
    islands = float_islands(model, everything, collect_mod.calibrated_op_types())
    assert {"relu1", "relu2", "relu3", "pool", "flatten"} <= set(islands)
    assert float_islands(model, set(), collect_mod.calibrated_op_types()) == {}


def test_a_node_reading_an_output_stays_float(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(onnx.helper.make_node("Relu", ["existence"], ["ex_relu"], "reads_output"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("ex_relu", onnx.TensorProto.FLOAT, None))
    assert "reads_output" in output_tails(model)


def test_keep_fp32_names_are_checked_and_honoured(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                   tmp_path: Path) -> None:
    source = ImageFolderSource(spec, image_dir, size=8)
    with pytest.raises(CalibrationError, match=r"no node named 'conv_2' .*did you mean 'conv2'"):
        quantize_onnx_int8(tiny_model, tmp_path / "x.onnx", spec, source, **{**FAST, "keep_fp32": ["conv_2"]})
    report = quantize_onnx_int8(tiny_model, tmp_path / "y.onnx", spec, source,
                                **{**FAST, "keep_fp32": ["conv2"]})
    assert report.excluded["conv2"] == "requested (keep_fp32)"
    assert "head_conv" in report.excluded  # the base rule still applies
    assert not _weight_is_quantized(onnx.load(str(tmp_path / "y.onnx")), "conv2")


def test_none_mode_only_protects_outputs(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                         tmp_path: Path) -> None:
    source = ImageFolderSource(spec, image_dir, size=8)
    report = quantize_onnx_int8(tiny_model, tmp_path / "n.onnx", spec, source, **{**FAST, "keep_fp32": "none"})
    model = onnx.load(str(tmp_path / "n.onnx"))
    assert _weight_is_quantized(model, "head_conv")
    assert _producers(model)["heatmaps"].op_type == "Sigmoid"
    assert set(report.excluded) == {"head_sigmoid", "exist_fc"}


def test_entropy_needs_more_bins_than_ort_default(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                  tmp_path: Path) -> None:
    """ORT's Entropy defaults (128/128) have one candidate threshold: on one batch it *is* MinMax."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    batch = next(ImageFolderSource(spec, image_dir).batches(16))

    def thresholds(method: CalibrationMethod, extra: dict) -> dict[str, tuple[float, float]]:
        cal = create_calibrator(tiny_model, collect_mod.calibrated_op_types(),
                                augmented_model_path=str(tmp_path / f"aug{method.value}.onnx"),
                                calibrate_method=method, extra_options=extra)
        cal.collect_data(collect_mod._OneBatch({"image": batch}))
        return {k: tuple(float(np.ravel(v)[0]) for v in td.range_value) for k, td in cal.compute_data().items()}

    minmax = thresholds(CalibrationMethod.MinMax, {})
    assert thresholds(CalibrationMethod.Entropy, {}) == minmax  # the trap
    ours = CalibOptions("entropy", num_bins=512, num_quantized_bins=128)
    assert thresholds(CalibrationMethod.Entropy, ours.calibrator_options()) != minmax
    with pytest.raises(CalibrationError, match="one candidate threshold"):
        CalibOptions("entropy", num_bins=128, num_quantized_bins=128).validate()

    scales = {}
    for method in ("minmax", "entropy"):
        out = tmp_path / f"{method}.onnx"
        quantize_onnx_int8(tiny_model, out, spec, ImageFolderSource(spec, image_dir), method=method,
                           num_bins=512, num_quantized_bins=128, keep_fp32="base", use_cache=False)
        scales[method] = {k: v["scale"] for k, v in extract_ranges(out, method=method, data={})["tensors"].items()}
    assert scales["minmax"].keys() == scales["entropy"].keys()
    assert any(abs(scales["minmax"][k] - scales["entropy"][k]) > 1e-6 * scales["minmax"][k] for k in scales["minmax"])


def test_percentile_and_distribution_run(tiny_model: Path, spec: ModelSpec, tmp_path: Path) -> None:
    batches = [np.random.default_rng(i).standard_normal((4, 3, 64, 48)).astype(np.float32) for i in range(2)]
    for method in ("percentile", "distribution"):
        got = collect_ranges(tiny_model, "image", iter(batches), CalibOptions(method, percentile=99.0),
                             tmp_path / f"{method}.json", tmp_path)
        assert got.batches == 2 and got.samples == 8 and "r1" in got.observed


def test_mean_minmax_is_the_mean_of_per_sample_ranges(tiny_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((3, 3, 64, 48)).astype(np.float32) * s for s in (1.0, 4.0)]
    got = collect_ranges(tiny_model, "image", iter(batches), CalibOptions("mean_minmax"), tmp_path / "m.json",
                         tmp_path)
    per = [collect_ranges(tiny_model, "image", iter([b[i:i + 1]]), CalibOptions("minmax"),
                          tmp_path / f"{j}-{i}.json", tmp_path).observed
           for j, b in enumerate(batches) for i in range(len(b))]
    whole = collect_ranges(tiny_model, "image", iter(batches), CalibOptions("minmax"), tmp_path / "w.json", tmp_path)
    assert got.samples == 6 and got.observed.keys() == whole.observed.keys()
    for name, (lo, hi) in got.observed.items():
        assert lo == pytest.approx(np.mean([r[name][0] for r in per]), rel=1e-5, abs=1e-6)
        assert hi == pytest.approx(np.mean([r[name][1] for r in per]), rel=1e-5, abs=1e-6)
    assert any(got.observed[n][1] < 0.9 * whole.observed[n][1] for n in got.observed)  # narrower than global


def test_auto_method_measures_both_and_keeps_the_closer(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                         tmp_path: Path) -> None:
    report = quantize_onnx_int8(tiny_model, tmp_path / "auto.onnx", spec, ImageFolderSource(spec, image_dir),
                                keep_fp32="base", use_cache=False)
    choice = report.options["method_choice"]
    assert set(choice["candidates"]) == {"minmax", "mean_minmax"}
    scores = {k: v["score"] for k, v in choice["candidates"].items()}
    assert report.method == choice["chosen"] == min(scores, key=lambda k: (scores[k], k != "minmax"))
    assert report.options["method"] == "auto" and report.ranges["method"] == report.method
    import onnx

    graph_outputs = {o.name for o in onnx.load(str(tiny_model)).graph.output}
    for figures in choice["candidates"].values():  # every graph output is measured, not only the decoded ones
        assert set(figures["output_rmse"]) == graph_outputs and all(v >= 0 for v in figures["output_rmse"].values())


def test_choice_scores_weigh_every_output_as_a_ratio() -> None:
    """12% closer keypoints do not buy 6x the existence drift: errors compare as ratios, term by term."""
    from heatdeploy.calibration.quantize import choice_scores, output_rmse

    # the MobileNet-style model's sample figures, then BlazePose's (flip cost counted in "keypoints")
    terms = {"minmax": {"keypoints": 0.0406, "existence": 6.5e-5},
             "mean_minmax": {"keypoints": 0.0356, "existence": 4.0e-4}}
    scores = choice_scores(terms)
    assert scores["minmax"] < scores["mean_minmax"] and min(scores.values()) >= 0
    bp = choice_scores({"minmax": {"keypoints": 11.3, "existence": 0.424},
                        "mean_minmax": {"keypoints": 9.1, "existence": 0.176}})
    assert bp["mean_minmax"] == 0.0 < bp["minmax"]
    terms["mean_minmax"]["existence"] = 6.5e-5  # now better on one term, equal on the other
    scores = choice_scores(terms)
    assert scores["mean_minmax"] == 0.0 < scores["minmax"]
    same = choice_scores({"a": {"x": 0.0}, "b": {"x": 0.0}})
    assert same == {"a": 0.0, "b": 0.0}
    ref = [{"a": np.zeros((2, 3), np.float32), "b": np.ones((2, 1), np.float32)}]
    got = output_rmse(ref, [{"a": np.full((2, 3), 2.0, np.float32), "b": np.ones((2, 1), np.float32)}])
    assert got == {"a": pytest.approx(2.0), "b": 0.0}


def test_calibration_streams_one_batch_per_call(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each collect_data call sees one batch, so ORT never holds more than one batch of activations."""
    sizes: list[int] = []
    real = collect_mod.create_calibrator

    def counting(*args: object, **kwargs: object) -> object:
        cal = real(*args, **kwargs)
        inner = cal.collect_data

        def collect(reader: object) -> None:
            feeds = list(iter(reader.get_next, None))  # type: ignore[attr-defined]
            sizes.append(len(feeds))
            it = iter(feeds)
            reader.get_next = lambda: next(it, None)  # type: ignore[attr-defined]
            inner(reader)

        cal.collect_data = collect
        return cal

    monkeypatch.setattr(collect_mod, "create_calibrator", counting)
    quantize_onnx_int8(tiny_model, tmp_path / "s.onnx", spec, ImageFolderSource(spec, image_dir),
                       calib_batch=5, method="percentile", keep_fp32="base", use_cache=False)
    assert sizes == [1, 1, 1, 1, 1]  # 24 images in batches of 5: five calls, one feed each


def test_sensitivity_pass_decides_and_records(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                              tmp_path: Path) -> None:
    source = ImageFolderSource(spec, image_dir, size=8)
    common = {"method": "minmax", "use_cache": False, "sensitivity_batches": 1, "search": False}  # the rule alone
    lax = quantize_onnx_int8(tiny_model, tmp_path / "a.onnx", spec, source, keep_fp32="auto",
                             sensitivity_threshold=1e9, sensitivity_flip_rate=1.0, **common)
    tested = [r for r in lax.sensitivity if r["tested"]]
    # the compute layers and the ops ORT re-quantizes with a scale of their own (the existence head's pooling)
    assert {r["node"] for r in tested} == {"conv1", "conv2", "conv3", "deconv", "pool"}
    assert {r["op_type"] for r in tested if r["node"] == "pool"} == {"GlobalAveragePool"}
    assert not any(r["kept_fp32"] for r in tested) and all(r["mean_px"] >= 0 for r in tested)
    assert lax.final is not None and "tested 5/5 layers" in lax.sensitivity_note

    strict = quantize_onnx_int8(tiny_model, tmp_path / "b.onnx", spec, source, keep_fp32="auto",
                                sensitivity_threshold=-1.0, **common)
    assert all(r["kept_fp32"] for r in strict.sensitivity)
    assert all(n in strict.excluded for n in ("conv1", "conv2", "conv3", "deconv", "pool"))
    assert strict.final == {"mean_px": 0.0, "max_px": 0.0, "flip_rate": 0.0, "keypoints": strict.final["keypoints"],
                            "existence_error": 0.0}
    assert strict.ops["convs_int8"] == 0 and strict.ops["quantize"] == 0  # every layer FP32: no Q/DQ left

    capped = quantize_onnx_int8(tiny_model, tmp_path / "c.onnx", spec, source, keep_fp32="auto",
                                sensitivity_max_layers=2, **common)
    assert sum(r["tested"] for r in capped.sensitivity) == 2 and "capped at 2 layers" in capped.sensitivity_note


def test_fixed_batch_model(tmp_path: Path, image_dir: Path, spec: ModelSpec) -> None:
    model = build_tiny_model(tmp_path / "b1.onnx", batch=1)
    report = quantize_onnx_int8(model, tmp_path / "b1.int8.onnx", spec, ImageFolderSource(spec, image_dir, size=3),
                                calib_batch=8, **FAST)
    assert report.options["calib_batch"] == 1


def test_spec_that_does_not_fit_the_model(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                          tmp_path: Path) -> None:
    bad = ModelSpec.from_dict({**spec.to_dict(), "input": {**spec.to_dict()["input"], "name": "pixels"}})
    with pytest.raises(CalibrationError, match="input 'pixels' is not a model input"):
        quantize_onnx_int8(tiny_model, tmp_path / "x.onnx", bad, open_source(bad, "synthetic:2"), **FAST)


class _Exploding(ImageFolderSource):
    """Yields one batch, then fails as a disk or a decoder might."""

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        gen = super()._batches(batch_size)
        yield next(gen)
        raise OSError("disk went away")


def test_interrupted_quantization_leaves_no_file(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out" / "model.int8.onnx"
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="disk went away"):
        quantize_onnx_int8(tiny_model, out, spec, _Exploding(spec, image_dir), method="minmax",
                           keep_fp32="base", cache_dir=cache)
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary left behind either
    assert not (cache / "ranges").exists() or not list((cache / "ranges").iterdir())

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(quant_mod, "quantize_static", boom)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        quantize_onnx_int8(tiny_model, out, spec, ImageFolderSource(spec, image_dir), method="minmax",
                           keep_fp32="base", cache_dir=cache)
    assert not out.exists()
    assert not (cache / "results").exists()

"""QAT by distillation (heatdeploy.calibration.qat) on the tiny calibration model (convs, a deconv, a Gemm
head): the torch interpreter runs the ONNX as ORT does, fine-tuning lowers the distillation loss and the
engine's error vs PTQ under the same quantizers, and the OpenVINO INT8 path records it and yields an
artifact the Pipeline runs. The shipped reference runs too (its interpreter check)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.openvino
torch = pytest.importorskip("torch", reason="QAT needs torch (the export extra)")
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")
ort = pytest.importorskip("onnxruntime", reason="the teacher is ONNX Runtime FP32")

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.calibration import qat  # noqa: E402
from heatdeploy.calibration.sources import open_source  # noqa: E402

FRAMES = 32


@pytest.fixture(scope="module")
def ref_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a bundle (spec embedded), exported through the ONNX path."""
    from calib_helpers import build_tiny_model, tiny_spec

    from heatdeploy.api import export_bundle

    root = tmp_path_factory.mktemp("qattiny")
    tiny_spec().save(root / "spec.json")
    onnx_path = build_tiny_model(root / "tiny.onnx")
    return Path(export_bundle(str(onnx_path), root / "bundle", spec_path=str(root / "spec.json")))


@pytest.fixture(scope="module")
def shipped_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heatdeploy.api import export_bundle

    return Path(export_bundle("reference", tmp_path_factory.mktemp("qatref") / "bundle"))


def _onnx(root: Path) -> Path:
    b = Bundle.load(root)
    return b.path_of(b.artifact("onnx-fp32"))


def _frames(root: Path, size: int, seed: int) -> np.ndarray:
    return np.concatenate(list(open_source(Bundle.load(root).spec, "synthetic", size=size, seed=seed).batches(8)))


@pytest.mark.parametrize("which", ["ref_bundle", "shipped_bundle"])
def test_interpreter_matches_onnxruntime(which: str, request: pytest.FixtureRequest) -> None:
    import onnx

    ref_bundle = request.getfixturevalue(which)
    graph = qat.TorchGraph(onnx.load(str(_onnx(ref_bundle))))
    x = _frames(ref_bundle, 4, 3)
    sess = ort.InferenceSession(str(_onnx(ref_bundle)), providers=["CPUExecutionProvider"])
    want = dict(zip(graph.outputs, sess.run(graph.outputs, {graph.input: x}), strict=True))
    with torch.no_grad():
        got = graph.run(torch.from_numpy(x))
    for name in graph.outputs:
        scale = float(np.abs(want[name]).max()) + 1e-6
        assert float(np.abs(got[name].numpy() - want[name]).max()) <= 1e-4 * scale, name


def _engine_error(tuned: qat.Finetuned, tmp: Path, spec: object, frames: np.ndarray, reference: dict) -> float:
    """Mean |OpenVINO INT8 - ORT FP32| of every decoded output, relative to FP32's mean magnitude."""
    compiled = ov.Core().compile_model(qat.qat_openvino(tuned, tmp), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(frames)
    return float(np.mean([np.abs(out[compiled.output(n)] - reference[n]).mean() / np.abs(reference[n]).mean()
                          for n in reference]))


def test_finetuning_beats_ptq_under_the_same_quantizers(ref_bundle: Path, tmp_path: Path) -> None:
    """Step 0 is the PTQ model (min/max ranges, the same quantizer sites); training must lower the held-out
    distillation loss and the engine's own error on frames it never saw."""
    spec = Bundle.load(ref_bundle).spec
    train, unseen = _frames(ref_bundle, FRAMES, 0), _frames(ref_bundle, 8, 11)
    names = list(spec.output_names)
    sess = ort.InferenceSession(str(_onnx(ref_bundle)), providers=["CPUExecutionProvider"])
    reference = dict(zip(names, sess.run(names, {spec.input.name: unseen}), strict=True))
    ptq = qat.finetune(_onnx(ref_bundle), spec, train, qat.QatOptions(steps=0))
    tuned = qat.finetune(_onnx(ref_bundle), spec, train, qat.QatOptions(steps=40, batch=8, budget_s=30))
    assert ptq.report.loss_before == pytest.approx(tuned.report.loss_before, rel=1e-6)  # the same start
    assert tuned.report.steps >= 8  # 40 unless a loaded box hits the time budget first
    assert tuned.report.loss_after < 0.95 * tuned.report.loss_before
    assert tuned.report.activation_quantizers > 0 and tuned.report.weight_quantizers > 0
    assert _engine_error(tuned, tmp_path, spec, unseen, reference) < _engine_error(ptq, tmp_path, spec, unseen,
                                                                                   reference)


def test_qdq_keeps_the_float_scope_float(ref_bundle: Path, tmp_path: Path) -> None:
    """The QDQ ONNX quantizes no input of a float-scope node (head tails, saturating ops), and OpenVINO
    compiles the rest INT8."""
    import onnx

    from heatdeploy.calibration.nncf_quantize import layer_precisions

    spec = Bundle.load(ref_bundle).spec
    tuned = qat.finetune(_onnx(ref_bundle), spec, _frames(ref_bundle, 8, 0), qat.QatOptions(steps=0))
    path = qat.write_qdq(tuned, tmp_path / "q.onnx")
    model = onnx.load(str(path))
    _, _, scope = qat.quant_sites(onnx.load(str(_onnx(ref_bundle))), spec)
    assert scope
    for node in model.graph.node:
        if node.name in scope:
            assert not any(i.endswith("__qat_dq") for i in node.input), node.name
    layers = layer_precisions(ov.convert_model(str(path)))
    assert sum(v == "int8" for v in layers.values()) >= len(layers) - len(scope)


def test_openvino_int8_with_qat_is_recorded_and_runs(ref_bundle: Path, tmp_path: Path) -> None:
    from heatdeploy.exporters.openvino import add_openvino_artifact
    from heatdeploy.runtime import Pipeline

    root = Path(shutil.copytree(ref_bundle, tmp_path / "bundle"))
    art = add_openvino_artifact(root, "int8", calib="synthetic", calib_size=16, keep_fp32="base", qat="on",
                                budget_s=20)
    rec = Bundle.load(root).artifact("openvino-int8").calibration["qat"]
    assert rec["steps"] >= 1 and rec["frames"] == 16 and rec["seconds"] > 0
    assert np.isfinite(rec["loss_before"]) and np.isfinite(rec["loss_after"])
    assert isinstance(rec["chosen"], bool) and rec["why"]
    assert art.calibration["qat"]["chosen"] == rec["chosen"]
    pipe = Pipeline.load(root, artifact="openvino-int8")
    image = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    pred = pipe.predict([image])
    assert pred.keypoints.shape == (1, len(Bundle.load(root).spec.keypoints), 2)
    assert pred.outputs and all(np.isfinite(v).all() for v in pred.outputs.values())


def test_qat_off_leaves_no_record(ref_bundle: Path, tmp_path: Path) -> None:
    from heatdeploy.exporters.openvino import OpenVinoExportError, add_openvino_artifact

    root = Path(shutil.copytree(ref_bundle, tmp_path / "bundle"))
    art = add_openvino_artifact(root, "int8", calib="synthetic", calib_size=8, keep_fp32="base", qat="off")
    assert "qat" not in art.calibration
    with pytest.raises(OpenVinoExportError, match="qat"):
        add_openvino_artifact(root, "int8", calib="synthetic", calib_size=8, keep_fp32="base", qat="maybe")

"""heatdeploy spec infer/check on the reference architecture's ONNX."""

from typer.testing import CliRunner

from heatdeploy.cli import app
from heatdeploy.models.evalset import SAMPLES_DIR
from heatdeploy.spec import ModelSpec


def test_infer_then_check_reference_onnx(random_reference_bundle, tmp_path):
    onnx_path = random_reference_bundle / "model.onnx"
    out = tmp_path / "spec.json"
    res = CliRunner().invoke(app, ["spec", "infer", str(onnx_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    spec = ModelSpec.load(out)
    assert (spec.input.layout, spec.heatmap.layout, spec.heatmap.stride, spec.num_keypoints) == ("NCHW", "NCHW", 4, 17)
    assert spec.existence is not None and spec.existence.per == "keypoint"
    res = CliRunner().invoke(app, ["spec", "check", str(onnx_path), "--spec", str(out),
                                   "--image", str(SAMPLES_DIR / "0000.jpg")])
    assert res.exit_code == 0, res.output
    assert "keypoints [1, 17, 2]" in res.output


def test_check_reports_what_the_graph_has(random_reference_bundle, tmp_path):
    import json

    data = json.loads((random_reference_bundle / "manifest.json").read_text())["spec"]
    data["existence"]["name"] = "presence"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["spec", "check", str(random_reference_bundle / "model.onnx"),
                                   "--spec", str(tmp_path / "bad.json")])
    assert res.exit_code == 2
    assert "presence" in res.output and "existence [N,17]" in res.output

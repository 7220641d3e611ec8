"""The CLI end to end on a random-weight reference bundle, and its handling of bad input."""

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy.cli import app
from heatdeploy.models.evalset import SAMPLES_DIR

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_shows_examples():
    res = _invoke("--help")
    assert res.exit_code == 0 and "heatdeploy export reference" in res.output


def test_run_writes_json_and_overlays(random_reference_bundle, tmp_path):
    out = tmp_path / "preds"
    res = _invoke("run", random_reference_bundle, SAMPLES_DIR, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    records = json.loads((out / "predictions.json").read_text())
    n = len(list(SAMPLES_DIR.glob("*.jpg")))
    assert len(records) == n
    assert len(records[0]["keypoints"]) == 17
    assert {"x", "y", "score", "presence", "present", "name"} <= set(records[0]["keypoints"][0])
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == n
    img = cv2.imread(str(overlays[0]))
    assert img.shape[:2] == (records[0]["height"], records[0]["width"])


def test_inspect_bundle_and_onnx(random_reference_bundle):
    res = _invoke("inspect", random_reference_bundle, "--json")
    assert res.exit_code == 0, res.output
    assert "heatmaps" in res.output and "sha256" in res.output
    res = _invoke("inspect", random_reference_bundle / "model.onnx", "--json")
    assert res.exit_code == 0, res.output
    assert "heatdeploy-reference-pose" in res.output


def test_run_on_bare_onnx_reads_embedded_spec(random_reference_bundle, tmp_path):
    res = _invoke("run", random_reference_bundle / "model.onnx", SAMPLES_DIR / "0000.jpg", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["keypoints"][0]["name"] == "nose"


def test_non_image_file_is_a_clear_error(random_reference_bundle, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = tmp_path / "out"
    res = _invoke("run", random_reference_bundle, bad, "--out", out)
    assert res.exit_code == 2
    assert "notes.jpg: not a readable image" in res.output
    assert not out.exists()


def test_unreadable_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    res = _invoke("inspect", bad)
    assert res.exit_code == 2 and "broken.onnx" in res.output
    res = _invoke("export", bad, "--out", tmp_path / "b")
    assert res.exit_code == 2 and "broken.onnx" in res.output
    assert not (tmp_path / "b").exists()


def test_spec_naming_missing_output_is_refused(random_reference_bundle, tmp_path):
    spec = json.loads((random_reference_bundle / "manifest.json").read_text())["spec"]
    spec["heatmap"]["name"] = "heatmap_out"
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    res = _invoke("export", random_reference_bundle / "model.onnx", "--spec", tmp_path / "spec.json",
                  "--out", tmp_path / "b")
    assert res.exit_code == 2
    assert "heatmap_out" in res.output and "heatmaps" in res.output  # names what the graph has
    assert not (tmp_path / "b").exists()


def test_hash_mismatch_exits_nonzero(random_reference_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(random_reference_bundle, dst)
    data = bytearray((dst / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (dst / "model.onnx").write_bytes(bytes(data))
    res = _invoke("run", dst, SAMPLES_DIR / "0000.jpg")
    assert res.exit_code == 2 and "does not match the manifest" in res.output
    res = _invoke("inspect", dst)
    assert res.exit_code == 2


def test_eval_reports_pck_on_labelled_split(random_reference_bundle):
    res = _invoke("eval", random_reference_bundle, "--data", SAMPLES_DIR, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert 0.0 <= report["pck@0.05_visible"] <= 1.0
    assert report["images"] == len(list(SAMPLES_DIR.glob("*.jpg")))


def test_python_api_predicts_arrays(random_reference_bundle):
    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(random_reference_bundle)
    pred = pipe.predict([np.zeros((300, 200, 3), np.uint8), np.zeros((120, 160, 3), np.uint8)])
    assert pred.keypoints.shape == (2, 17, 2)
    assert pred.present.dtype == bool


@pytest.mark.parametrize("missing", ["does-not-exist.png"])
def test_missing_image(random_reference_bundle, tmp_path, missing):
    res = _invoke("run", random_reference_bundle, tmp_path / missing)
    assert res.exit_code == 2 and missing in res.output


def test_openvino_int8_keep_fp32_reaches_nncf(random_reference_bundle, tmp_path):
    """--keep-fp32 names go to the OpenVINO INT8 float scope too; an unknown one is a one-line error, exit 2."""
    pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")
    res = _invoke("export", random_reference_bundle / "model.onnx", "--format", "openvino", "--precision", "int8",
                  "--calib", "synthetic:4", "--keep-fp32", "no_such_op", "--out", tmp_path / "b")
    assert res.exit_code == 2, res.output
    assert "no op named 'no_such_op'" in res.output and "friendly names" in res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert not any(a["format"] == "openvino" for a in manifest["artifacts"])  # nothing half added

"""``heatdeploy add``: more artifacts, and the stock INT8 baselines, into an existing bundle, side by side.

One bundle per module (the random-weight reference with ORT INT8), then OpenVINO INT8 and both stock
baselines added to it; the OpenVINO parts skip when openvino/nncf are not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heatdeploy.bundle import Bundle
from heatdeploy.cli import app
from heatdeploy.models.evalset import SAMPLES_DIR

pytest.importorskip("onnxruntime")
runner = CliRunner()
HAVE_OV = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
CALIB = ("--calib", "synthetic:8")


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _files(bundle: Path) -> dict[str, dict[str, str]]:
    """artifact name -> {path: sha256} of every file it has, from the manifest."""
    arts = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    return {a["name"]: {a["path"]: a["sha256"], **a["extra_files"]} for a in arts}


@pytest.fixture(scope="module")
def grown(random_reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An ONNX bundle with INT8, then (OpenVINO INT8 and) the stock baselines added; the manifest at each step."""
    bundle = tmp_path_factory.mktemp("add") / "bundle"
    res = _invoke("export", random_reference_bundle / "model.onnx", "--precision", "int8", *CALIB,
                  "--keep-fp32", "base", "--out", bundle)
    assert res.exit_code == 0, res.output
    steps = {"export": _files(bundle)}
    if HAVE_OV:
        res = _invoke("add", bundle, "--format", "openvino", "--precision", "int8", *CALIB, "--keep-fp32", "base")
        assert res.exit_code == 0, res.output
        assert "added to" in res.output and "openvino-int8" in res.output
        steps["openvino"] = _files(bundle)
    res = _invoke("add", bundle, "--stock", *CALIB)
    assert res.exit_code == 0, res.output
    steps["stock"] = _files(bundle)
    return {"bundle": bundle, "steps": steps, "stock_output": res.output}


def test_added_beside_the_old_ones(grown: dict) -> None:
    """Each add keeps every artifact already there, byte for byte, and every artifact still loads and runs."""
    from heatdeploy.runtime import Pipeline

    steps = grown["steps"]
    assert set(steps["export"]) == {"onnx-fp32", "onnx-int8"}
    want = {"onnx-fp32", "onnx-int8", "onnx-int8-stock"}
    if HAVE_OV:
        assert set(steps["openvino"]) == {"onnx-fp32", "onnx-int8", "openvino-int8", "openvino-fp32"}
        want |= {"openvino-int8", "openvino-fp32", "openvino-int8-stock"}
    else:
        assert "openvino-int8-stock skipped" in grown["stock_output"]
    final = steps["stock"]
    assert set(final) == want
    for earlier in steps.values():
        for name, files in earlier.items():
            assert final[name] == files, name  # same files, same hashes: not rebuilt, not dropped
    bundle = Bundle.load(grown["bundle"])
    bundle.verify()
    for name in final:
        pred = Pipeline.load(grown["bundle"], artifact=name).predict([str(SAMPLES_DIR / "0000.jpg")])
        assert pred.keypoints.shape[-1] == 2, name
    stock = bundle.artifact("onnx-int8-stock")
    assert stock.precision == "int8" and "quantize_static" in stock.notes["recipe"]


@pytest.mark.parametrize("candidate", ["onnx-int8-stock", "openvino-int8-stock"])
def test_parity_of_a_stock_candidate_runs(grown: dict, candidate: str, tmp_path: Path) -> None:
    if candidate.startswith("openvino") and not HAVE_OV:
        pytest.skip("openvino/nncf not installed: pip install 'heatdeploy[openvino]'")
    res = _invoke("parity", grown["bundle"], "--candidate", candidate, "--data", SAMPLES_DIR, "--limit", 4,
                  "--no-floor", "--out", tmp_path)
    assert res.exit_code in (0, 1), res.output  # a verdict either way, not an error
    report = json.loads((tmp_path / "parity.json").read_text())
    assert candidate in json.dumps(report)
    assert set(_files(grown["bundle"])) == set(grown["steps"]["stock"])  # recording the verdict drops nothing


def test_bench_times_them_side_by_side(grown: dict) -> None:
    res = _invoke("bench", grown["bundle"], "--batch", 1, "--threads", 1, "--iters", 1, "--warmup", 0, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["artifact"] for r in rows} == set(grown["steps"]["stock"])


@pytest.mark.parametrize("args, says", [
    (("--format", "tflite"), "--format tflite: choose onnx or openvino"),
    (("--format", "tensorrt"), "build-engine"),
    (("--format", "openvino", "--precision", "int4"), "--precision int4: choose one of fp32, fp16, bf16, int8"),
    (("--format", "onnx", "--precision", "fp16"), "--precision fp16: choose one of int8 for onnx"),
    (("--format", "onnx", "--precision", "fp32"), "heatdeploy export"),
    (("--format", "openvino", "--precision", "int8"), "needs --calib"),
    (("--stock", "--precision", "fp16", *CALIB), "baselines are INT8"),
    (("--stock",), "--stock needs --calib"),
    ((), "--format: choose onnx or openvino"),
])
def test_bad_options_are_one_line_exit_2(bundle_copy: Path, args: tuple, says: str) -> None:
    before = (bundle_copy / "manifest.json").read_bytes()
    res = _invoke("add", bundle_copy, *args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], res.output
    assert (bundle_copy / "manifest.json").read_bytes() == before


def test_an_artifact_already_there_needs_replace(grown: dict) -> None:
    res = _invoke("add", grown["bundle"], "--stock", "--format", "onnx", *CALIB)
    assert res.exit_code == 2 and "already has onnx-int8-stock; pass --replace" in res.output, res.output


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    for target in (mine, tmp_path / "missing"):
        res = _invoke("add", target, "--stock", *CALIB)
        assert res.exit_code == 2 and "no manifest.json" in res.output, res.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "missing").exists()


def test_library_add_and_no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """``heatdeploy.add`` is the api's; without openvino, --stock alone plans only the ORT baseline (and says so)."""
    import heatdeploy
    from heatdeploy import api

    assert heatdeploy.add is api.add and "add" in heatdeploy.__all__
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("openvino", "nncf") else real(n, *a))
    said: list[str] = []
    steps = api._add_steps(None, None, "synthetic:8", True, api.Hooks(log=said.append))
    assert [name for name, _ in steps] == ["onnx-int8-stock"]
    assert said and "openvino-int8-stock skipped" in said[0]


def test_stock_baseline_of_a_fixed_batch_graph(tmp_path: Path) -> None:
    """tf2onnx writes batch 1: the stock ORT baseline is calibrated in batches of exactly that."""
    import sys

    pytest.importorskip("onnx")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared tiny model lives in tests/
    from tiny_onnx import build_tiny_onnx, tiny_spec

    model = build_tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    (tmp_path / "spec.json").write_text(tiny_spec("fixed").to_json())
    bundle = tmp_path / "bundle"
    assert _invoke("export", model, "--spec", tmp_path / "spec.json", "--out", bundle).exit_code == 0
    res = _invoke("add", bundle, "--stock", "--format", "onnx", "--calib", "synthetic:5")
    assert res.exit_code == 0, res.output
    assert set(_files(bundle)) == {"onnx-fp32", "onnx-int8-stock"}

"""The library API mirrors the CLI: heatdeploy.export / calibrate / parity / evaluate, called directly."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import heatdeploy
from heatdeploy.models.evalset import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_import_heatdeploy_stays_light():
    code = ("import sys, heatdeploy; heatdeploy.export; heatdeploy.calibrate; heatdeploy.add; "
            "heatdeploy.parity; heatdeploy.evaluate; heatdeploy.choose; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnx', 'openvino', 'nncf', 'onnxruntime')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_api_names_are_callable():
    for name in ("export", "calibrate", "add", "parity", "evaluate", "choose"):
        assert callable(getattr(heatdeploy, name)), name
    with pytest.raises(AttributeError):
        heatdeploy.no_such_thing  # noqa: B018


def test_nothing_imports_the_cli():
    """The CLI is a face: library code and benchmarks use heatdeploy.api, never heatdeploy.cli."""
    pattern = re.compile(r"^\s*(from heatdeploy\.cli import|import heatdeploy\.cli\b|from heatdeploy import cli\b)",
                         re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("heatdeploy", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py") if p.name != "cli.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_export_evaluate_calibrate_parity(random_reference_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    result = heatdeploy.export(str(random_reference_bundle / "model.onnx"), bundle)
    assert result.bundle == bundle and result.made == ["onnx-fp32"] and (bundle / "manifest.json").is_file()

    report = heatdeploy.evaluate(bundle, SAMPLES_DIR)
    cli_like = heatdeploy.api.eval_bundle(bundle, SAMPLES_DIR)
    assert report == cli_like and report["artifact"] == "onnx-fp32" and 0.0 <= report["pck@0.05_visible"] <= 1.0

    calib = heatdeploy.calibrate(bundle, "synthetic:4", keep_fp32="base")
    assert calib.summary()
    from heatdeploy.bundle import Bundle

    art = Bundle.load(bundle).artifact("onnx-int8")
    assert art.calibration is not None and (bundle / "model.int8.onnx").is_file()

    par = heatdeploy.parity(bundle, "onnx-int8", data=str(SAMPLES_DIR), limit=4, floor=False,
                            out=tmp_path / "parity")
    assert par.exit_code in (0, 1) and par.passed == (par.exit_code == 0)
    assert (tmp_path / "parity" / "parity.json").is_file()


def test_export_refuses_a_foreign_folder(random_reference_bundle, tmp_path):
    from heatdeploy.errors import HeatdeployError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(HeatdeployError, match="not a heatdeploy bundle"):
        heatdeploy.export(str(random_reference_bundle / "model.onnx"), tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
    shutil.rmtree(tmp_path / "mine")


def test_hooks_report_progress(random_reference_bundle):
    from heatdeploy.api import Hooks

    seen: list[tuple[str, int, int | None]] = []
    hooks = Hooks(progress=lambda d, n, t: seen.append((d, n, t)))
    heatdeploy.evaluate(random_reference_bundle, SAMPLES_DIR, hooks=hooks)
    assert seen and seen[-1][1] == seen[-1][2] == len(list(SAMPLES_DIR.glob("*.jpg")))


def test_symmetric_activations_default_is_one_constant():
    """Every INT8 entry point takes its default from heatdeploy.calibration.SYMMETRIC_ACTIVATIONS (asymmetric)."""
    import dataclasses
    import inspect

    pytest.importorskip("onnxruntime")
    from heatdeploy.api import Int8Options, calibrate
    from heatdeploy.calibration import SYMMETRIC_ACTIVATIONS
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.calibration.quantize import quantize_onnx_int8

    assert SYMMETRIC_ACTIVATIONS is False
    defaults = [inspect.signature(quantize_onnx_int8).parameters["symmetric_activations"].default,
                inspect.signature(add_onnx_int8).parameters["symmetric_activations"].default,
                inspect.signature(calibrate).parameters["symmetric"].default,
                {f.name: f.default for f in dataclasses.fields(Int8Options)}["symmetric_activations"]]
    assert defaults == [SYMMETRIC_ACTIVATIONS] * 4

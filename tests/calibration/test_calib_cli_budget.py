"""``heatdeploy calibrate --budget-s``: the budget reaches the sensitivity pass and the search; its hit is shown."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from heatdeploy.cli import app
from heatdeploy.spec import ModelSpec


def test_budget_option_is_used_and_its_hit_is_printed(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                      tmp_path: Path) -> None:
    from heatdeploy.api import export_bundle

    spec.save(tmp_path / "spec.json")
    bundle = export_bundle(str(tiny_model), tmp_path / "bundle", spec_path=str(tmp_path / "spec.json"))
    res = CliRunner().invoke(app, ["calibrate", str(bundle), "--data", str(image_dir), "--method", "minmax",
                                   "--budget-s", "0.01"])
    assert res.exit_code == 0, res.output
    assert "sensitivity: tested 1/" in res.output and "time budget 0 s reached" in res.output
    assert "search:" in res.output  # progress lines of the mix search
    record = json.loads((Path(bundle) / "manifest.json").read_text())
    calib = next(a for a in record["artifacts"] if a["name"] == "onnx-int8")["calibration"]
    assert calib["options"]["search"]["budget_s"] == 0.01
    assert calib["search"]["points"] and calib["search"]["recommended"] in ("int8", "fp32")

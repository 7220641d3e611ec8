"""The deployment choice: only what holds the gate competes, the rule prefers FP32 within timing noise, the
recorded choice is what a plain ``Pipeline.load`` runs, and it is dropped once its file changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heatdeploy.bundle import Bundle
from heatdeploy.runtime.choice import MIN_GAIN, ChoiceError, choose, decide, deployed, holds_gate, record_choice
from heatdeploy.runtime.pipeline import Pipeline


@pytest.fixture
def bundle(runtime_bundle: Path, tmp_path: Path) -> Path:
    """The FP32 runtime bundle plus a second ONNX artifact labelled int8 (the same file, so equally fast)."""
    root = tmp_path / "b"
    shutil.copytree(runtime_bundle, root)
    b = Bundle.load(root)
    fp32 = b.artifact("onnx-fp32")
    b.add_file(b.path_of(fp32), "model.copy.onnx", name="onnx-int8", format="onnx", precision="int8",
               backend="onnxruntime")
    return root


def _pass(root: Path, name: str, passed: bool = True, sha: str | None = None) -> None:
    b = Bundle.load(root)
    art = b.artifact(name)
    art.parity = {"passed": passed, "candidate_sha256": sha or art.sha256}
    b.save()


def test_decide_prefers_fp32_within_noise_and_lower_precision_when_faster() -> None:
    fp32 = {"onnx-fp32", "openvino-fp32"}
    assert decide({"onnx-fp32": 10.0, "openvino-fp32": 8.0}, fp32)[0] == "openvino-fp32"
    # INT8 1% faster than the fastest FP32: noise, FP32 is deployed and the reason says why
    best, why = decide({"onnx-fp32": 10.0, "openvino-fp32": 8.0, "openvino-int8": 8.0 / 1.01}, fp32)
    assert best == "openvino-fp32" and "not faster by more than" in why
    best, why = decide({"onnx-fp32": 10.0, "openvino-fp32": 8.0, "openvino-int8": 8.0 / (MIN_GAIN + 0.1)}, fp32)
    assert best == "openvino-int8" and "openvino-fp32" in why
    assert decide({"onnx-int8": 3.0}, set())[0] == "onnx-int8"


def test_only_a_current_passed_verdict_competes(bundle: Path) -> None:
    b = Bundle.load(bundle)
    assert holds_gate(b.artifact("onnx-fp32")) == (True, "")
    ok, why = holds_gate(b.artifact("onnx-int8"))
    assert not ok and "heatdeploy parity" in why
    _pass(bundle, "onnx-int8", passed=False)
    assert holds_gate(Bundle.load(bundle).artifact("onnx-int8"))[1] == "failed the parity gate"
    _pass(bundle, "onnx-int8", sha="0" * 64)
    assert "another file" in holds_gate(Bundle.load(bundle).artifact("onnx-int8"))[1]
    c = choose(Bundle.load(bundle), seconds=0.2)
    assert set(c.measured_ms) == {"onnx-fp32"} and "onnx-int8" in c.excluded
    _pass(bundle, "onnx-int8")
    c = choose(Bundle.load(bundle), seconds=0.2)
    assert set(c.measured_ms) == {"onnx-fp32", "onnx-int8"}
    assert all(v > 0 for v in c.measured_ms.values())


def test_recorded_choice_is_what_a_plain_load_runs_until_its_file_changes(bundle: Path) -> None:
    assert Pipeline.load(bundle).artifact.name == "onnx-fp32"  # no choice recorded: FP32 first
    _pass(bundle, "onnx-int8")
    c = choose(Bundle.load(bundle), seconds=0.2)
    c.artifact, c.sha256 = "onnx-int8", Bundle.load(bundle).artifact("onnx-int8").sha256  # as if it were faster
    record_choice(bundle, c)
    assert Pipeline.load(bundle).artifact.name == "onnx-int8"
    assert Pipeline.load(bundle, precision="fp32").artifact.name == "onnx-fp32"  # asking for something overrides it
    assert Pipeline.load(bundle, artifact="onnx-fp32").artifact.name == "onnx-fp32"
    b = Bundle.load(bundle)
    b.artifact("onnx-int8").sha256 = "f" * 64  # the file the choice was measured on is gone
    assert deployed(b) is None


def test_nothing_timeable_is_one_error_naming_why(bundle: Path) -> None:
    with pytest.raises(ChoiceError, match="no artifact can be timed here.*onnx-int8: no parity verdict"):
        choose(Bundle.load(bundle), names=["onnx-int8"], seconds=0.1)


def test_cli_choose_records_and_run_uses_it(bundle: Path) -> None:
    import json

    typer_testing = pytest.importorskip("typer.testing")
    from heatdeploy.cli import app

    _pass(bundle, "onnx-int8")
    r = typer_testing.CliRunner().invoke(app, ["choose", str(bundle), "--seconds", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert set(rec["measured_ms"]) == {"onnx-fp32", "onnx-int8"} and rec["artifact"] in rec["measured_ms"]
    assert Bundle.load(bundle).info["deploy"]["artifact"] == rec["artifact"]
    assert Pipeline.load(bundle).artifact.name == rec["artifact"]
    r = typer_testing.CliRunner().invoke(app, ["choose", str(bundle / "nope")])
    assert r.exit_code == 2 and "nope" in r.output

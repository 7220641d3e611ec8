"""Export never deletes what it did not make: files and foreign folders refused, --force, bundles kept whole."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from heatdeploy.cli import app
from heatdeploy.errortext import EXIT_INPUT

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _artifacts(bundle) -> dict[str, str]:
    return {a["name"]: a["sha256"] for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]}


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_out_that_is_a_file_is_refused_and_kept(random_reference_bundle, tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF mine")
    res = _invoke("export", random_reference_bundle / "model.onnx", "--out", target)
    assert res.exit_code == EXIT_INPUT
    assert "report.pdf: exists and is not a folder" in " ".join(res.output.split()) and "--force" in res.output
    assert target.read_bytes() == b"%PDF mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]  # nothing staged left behind


def test_foreign_folder_is_refused_and_untouched(random_reference_bundle, tmp_path):
    project = tmp_path / "project"
    (project / "photos").mkdir(parents=True)
    (project / "notes.txt").write_text("my notes")
    (project / "photos" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    before = _tree(project)
    res = _invoke("export", random_reference_bundle / "model.onnx", "--out", project)
    assert res.exit_code == EXIT_INPUT
    line = " ".join(res.output.split())
    assert "not a heatdeploy bundle" in line and "--force" in line
    assert _tree(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_force_replaces_a_file_and_a_foreign_folder(random_reference_bundle, tmp_path):
    target = tmp_path / "was-a-file"
    target.write_text("x")
    res = _invoke("export", random_reference_bundle / "model.onnx", "--out", target, "--force")
    assert res.exit_code == 0, res.output
    assert set(_artifacts(target)) == {"onnx-fp32"}
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("replace me")
    res = _invoke("export", random_reference_bundle / "model.onnx", "--out", project, "--force")
    assert res.exit_code == 0, res.output
    assert not (project / "notes.txt").exists() and (project / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "was-a-file"]


def test_failed_forced_export_puts_the_folder_back(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me if the export fails")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    res = _invoke("export", bad, "--out", project, "--force")
    assert res.exit_code == EXIT_INPUT and "broken.onnx" in res.output
    assert (project / "notes.txt").read_text() == "keep me if the export fails"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx", "project"]


def test_empty_folder_is_fine(random_reference_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    assert _invoke("export", random_reference_bundle / "model.onnx", "--out", tmp_path / "empty").exit_code == 0
    assert set(_artifacts(tmp_path / "empty")) == {"onnx-fp32"}


def test_re_export_keeps_int8_and_drops_it_for_another_model(random_reference_bundle, other_onnx, tmp_path):
    from heatdeploy.api import add_int8

    model = random_reference_bundle / "model.onnx"
    bundle = tmp_path / "bundle"
    assert _invoke("export", model, "--out", bundle).exit_code == 0
    add_int8(bundle, "synthetic:4", keep_fp32="base")
    before = _artifacts(bundle)
    int8_files = {n: (bundle / n).read_bytes() for n in ("model.int8.onnx", "calibration.json")}
    assert set(before) == {"onnx-fp32", "onnx-int8"}

    res = _invoke("export", model, "--out", bundle)  # the same model again: INT8 still belongs to it
    assert res.exit_code == 0, res.output
    assert "kept from the old bundle" in res.output and "onnx-int8" in res.output
    assert _artifacts(bundle) == before
    assert {n: (bundle / n).read_bytes() for n in int8_files} == int8_files
    from heatdeploy.bundle import Bundle

    assert Bundle.load(bundle).artifact("onnx-int8").sha256 == before["onnx-int8"]  # loads, hashes match

    res = _invoke("export", other_onnx, "--out", bundle)  # another model: its INT8 is stale
    assert res.exit_code == 0, res.output
    assert "dropped from the old bundle" in " ".join(res.output.split()) and "onnx-int8" in res.output
    assert set(_artifacts(bundle)) == {"onnx-fp32"}
    assert _artifacts(bundle)["onnx-fp32"] != before["onnx-fp32"]
    assert not (bundle / "model.int8.onnx").exists()

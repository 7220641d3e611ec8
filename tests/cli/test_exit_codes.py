"""Exit codes a CI job can act on (0 ok, 1 gate failed, 2 bad input, 3 bug), one-line errors, --debug, --version."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy import __version__
from heatdeploy.cli import app
from heatdeploy.errortext import EXIT_GATE, EXIT_INPUT, EXIT_INTERNAL, describe
from heatdeploy.models.evalset import SAMPLES_DIR

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_version():
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"heatdeploy {__version__}"


def test_help_documents_the_exit_codes():
    res = _invoke("--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "0 ok; 1 a gate failed" in text and "2 bad input or usage; 3 internal error" in text


def test_parity_pass_is_0_and_gate_failure_is_1(gate_bundle, tmp_path):
    common = ["--data", SAMPLES_DIR, "--limit", "4", "--no-floor"]
    res = _invoke("parity", gate_bundle, "--candidate", "onnx-fp32-copy", *common)
    assert res.exit_code == 0, res.output
    res = _invoke("parity", gate_bundle, "--candidate", "onnx-wrong", *common, "--out", tmp_path / "rep")
    assert res.exit_code == EXIT_GATE, res.output
    assert not json.loads((tmp_path / "rep" / "parity.json").read_text())["passed"]


def test_bad_path_is_2_not_the_gate_code(tmp_path):
    res = _invoke("parity", tmp_path / "nope", "--candidate", "onnx-int8")
    assert res.exit_code == EXIT_INPUT
    assert "nope" in _one_error_line(res)


def test_usage_error_is_2():
    assert _invoke("export", "reference", "--out", "x", "--format", "tflite").exit_code == 2
    assert _invoke("parity", "--no-such-option").exit_code == 2


def test_bad_qat_mode_is_refused_before_any_work(tmp_path, random_reference_bundle):
    res = _invoke("export", "reference", "--out", tmp_path / "b", "--qat", "always")
    assert res.exit_code == EXIT_INPUT and "--qat always: choose one of off, auto, on" in _one_error_line(res)
    assert not (tmp_path / "b").exists()  # refused before the export started
    res = _invoke("add", random_reference_bundle, "--format", "openvino", "--precision", "int8", "--calib",
                  "synthetic:8", "--qat", "sometimes")
    assert res.exit_code == EXIT_INPUT and "--qat sometimes" in _one_error_line(res)


def test_internal_error_is_3_one_line_and_debug_shows_the_traceback(random_reference_bundle, monkeypatch):
    from heatdeploy import api

    def boom(*_a, **_k):
        raise ZeroDivisionError("division by zero in a helper")

    monkeypatch.setattr(api, "eval_bundle", boom)
    res = _invoke("eval", random_reference_bundle)
    assert res.exit_code == EXIT_INTERNAL
    line = _one_error_line(res)
    assert "internal error (a bug): ZeroDivisionError: division by zero in a helper" in line
    assert "--debug" in line and "Traceback" not in res.output
    res = _invoke("--debug", "eval", random_reference_bundle)
    assert res.exit_code == EXIT_INTERNAL
    assert "Traceback" in res.output and "boom" in res.output
    _invoke("eval", "--help")  # --debug does not stick to later invocations in one process
    assert "Traceback" not in _invoke("inspect", "/no/such/bundle").output


def test_runtime_output_mismatch_is_a_one_line_error(bundle_copy):
    """The engine's 17 heatmaps against a spec that says 16 keypoints: a ModelOutputError, exit 2."""
    mpath = bundle_copy / "manifest.json"
    data = json.loads(mpath.read_text())
    spec = data["spec"]
    spec["keypoints"] = spec["keypoints"][:16]
    spec["skeleton"] = [e for e in spec.get("skeleton", []) if max(e) < 16]
    spec.pop("flip_pairs", None)
    mpath.write_text(json.dumps(data))
    res = _invoke("run", bundle_copy, SAMPLES_DIR / "0000.jpg", "--json")
    assert res.exit_code == EXIT_INPUT, res.output
    line = _one_error_line(res)
    assert "17 keypoint channels" in line and "the spec has 16 keypoints" in line


def test_export_into_a_path_below_a_file_names_it(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = _invoke("export", "reference", "--out", tmp_path / "notes.txt" / "bundle")
    assert res.exit_code == EXIT_INPUT
    assert "notes.txt: is a file" in _one_error_line(res)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_too_long_output_name_is_a_one_line_error(random_reference_bundle, tmp_path):
    res = _invoke("export", random_reference_bundle / "model.onnx", "--out", tmp_path / ("b" * 300))
    assert res.exit_code == EXIT_INPUT
    assert "file name too long" in _one_error_line(res)


def test_unwritable_output_folder(random_reference_bundle, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: chmod cannot make a folder unwritable (the errno table is tested below)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = _invoke("export", random_reference_bundle / "model.onnx", "--out", ro / "bundle")
    finally:
        ro.chmod(0o700)
    assert res.exit_code == EXIT_INPUT and "permission denied" in _one_error_line(res)


@pytest.mark.parametrize(("err", "words"), [
    (PermissionError(errno.EACCES, "Permission denied", "/out/b"), "/out/b: permission denied"),
    (OSError(errno.EPERM, "Operation not permitted", "/out/b"), "/out/b: operation not permitted"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/b/model.onnx"), "no space left"),
    (OSError(errno.EFBIG, "File too large", "/out/b/model.onnx"), "ulimit -f"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/b"), "/f/b: a part of this path is a file"),
    (FileExistsError(errno.EEXIST, "File exists", "/out"), "/out: already exists"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/x.json"), "/x.json: is a folder"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/" + "a" * 6000), "file name too long"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/b"), "read-only file system"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), "broken pipe"),
])
def test_os_errors_become_one_line_with_the_path_and_a_fix(err, words):
    code, line = describe(err)
    assert code == EXIT_INPUT and words in line and "\n" not in line and len(line) < 300


def test_input_faults_become_one_line():
    import cv2

    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (4, 4))
    except cv2.error as exc:
        code, line = describe(exc)
        assert code == EXIT_INPUT and line.startswith("OpenCV refused an input") and "\n" not in line
    else:
        pytest.fail("OpenCV accepted an empty image")
    try:
        json.loads("[" * 100_000 + "]" * 100_000)
    except RecursionError as exc:
        assert describe(exc)[0] == EXIT_INPUT and "nested too deeply" in describe(exc)[1]
    assert describe(OverflowError("cannot convert float infinity to integer")) == (
        EXIT_INPUT, "a number in the input is out of range (cannot convert float infinity to integer); use a "
                    "finite, reasonable value")
    assert describe(MemoryError())[0] == EXIT_INPUT


def test_missing_extra_names_it():
    code, line = describe(ModuleNotFoundError("No module named 'openvino'", name="openvino"))
    assert code == EXIT_INPUT and "pip install 'heatdeploy[openvino]'" in line
    code, line = describe(ModuleNotFoundError("No module named 'onnx'", name="onnx"))
    assert "pip install 'heatdeploy[export]'" in line
    code, _ = describe(ImportError("cannot import name 'x' from 'heatdeploy.runtime.decode'", name="heatdeploy"))
    assert code == EXIT_INTERNAL  # our own broken import is a bug, not a missing extra


@pytest.mark.parametrize("absent", ["onnx", "openvino", "torch"])
def test_runtime_only_install_gets_the_extra_not_a_traceback(random_reference_bundle, bundle_copy, tmp_path,
                                                            monkeypatch, absent):
    """Each command that needs an extra says which, with the export/tooling modules not importable."""
    import sys

    for name in [m for m in sys.modules if m == absent or m.startswith(absent + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, absent, None)  # import <absent> -> ModuleNotFoundError
    for mod in [m for m in sys.modules if m.startswith(("heatdeploy.exporters", "heatdeploy.spec_infer",
                                                        "heatdeploy.calibration", "heatdeploy.models"))]:
        monkeypatch.delitem(sys.modules, mod)  # re-imported under the missing package
    onnx_file = random_reference_bundle / "model.onnx"
    cmds = {"onnx": [["export", onnx_file, "--out", tmp_path / "b"], ["spec", "infer", onnx_file],
                     ["calibrate", bundle_copy, "--data", "synthetic:2"]],
            "openvino": [["export", onnx_file, "--format", "openvino", "--out", tmp_path / "b"]],
            "torch": [["export", "reference", "--out", tmp_path / "b"]]}[absent]
    before = sorted(p.name for p in bundle_copy.iterdir())
    for cmd in cmds:
        res = _invoke(*cmd)
        assert res.exit_code == EXIT_INPUT, (cmd, res.output)
        line = _one_error_line(res)
        assert "pip install 'heatdeploy[" in line, line
    assert not (tmp_path / "b").exists() or (tmp_path / "b" / "manifest.json").exists()
    assert sorted(p.name for p in bundle_copy.iterdir()) == before  # a failed calibrate adds nothing


def test_hash_mismatch_on_inspect_is_bad_input(bundle_copy):
    data = bytearray((bundle_copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle_copy / "model.onnx").write_bytes(bytes(data))
    res = _invoke("inspect", bundle_copy, "--json")
    assert res.exit_code == EXIT_INPUT
    assert "artifact files do not match the manifest" in res.output


def test_runtime_shape_errors_are_heatdeploy_errors(random_reference_bundle):
    """Raised where they happen as HeatdeployError subclasses, so the CLI prints them as one line (exit 2)."""
    import dataclasses

    from heatdeploy.errors import HeatdeployError, InputError, ModelOutputError
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.heads import decode_outputs
    from heatdeploy.runtime.preprocess import input_affines

    pipe = Pipeline.load(random_reference_bundle)
    spec = pipe.spec
    good = pipe.infer(np.zeros((1, 3, spec.input.height, spec.input.width), np.float32))
    with pytest.raises(ModelOutputError, match="missing"):  # an output the spec names is not there
        decode_outputs(spec, {})
    wrong = {k: (v[:, :-1] if k == spec.heatmap.name else v) for k, v in good.items()}
    with pytest.raises(ModelOutputError, match="16 keypoint channels"):  # channel count vs spec
        decode_outputs(spec, wrong)
    small = {k: (v[..., :-2] if k == spec.heatmap.name else v) for k, v in good.items()}
    with pytest.raises(ModelOutputError, match="heatmap size"):  # size vs spec
        decode_outputs(spec, small)
    crop = dataclasses.replace(spec.input, resize="crop")
    with pytest.raises(InputError, match="pass one person box"):
        input_affines(crop, np.array([[100, 80]]))
    with pytest.raises(InputError, match="no images"):
        pipe.predict([])
    assert issubclass(ModelOutputError, HeatdeployError) and issubclass(InputError, HeatdeployError)


def test_every_command_and_callback_has_the_error_path(monkeypatch):
    """Also a callback registered without @cli_errors (``devices``): an OS error there is one line, exit 2."""
    import heatdeploy.devices.profiles as profiles

    def stack(t):
        infos = [*t.registered_commands, *([t.registered_callback] if t.registered_callback else [])]
        yield from (i.callback for i in infos if i.callback is not None)
        for g in t.registered_groups:
            yield from stack(g.typer_instance)

    callbacks = list(stack(app))
    assert len(callbacks) > 10 and all(getattr(cb, "_cli_errors", False) for cb in callbacks)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(profiles, "describe_profiles", full)
    res = _invoke("devices", "--json")
    assert res.exit_code == EXIT_INPUT and "no space left" in _one_error_line(res)


def test_ctrl_c_is_130_not_the_gate_code(random_reference_bundle, monkeypatch):
    from heatdeploy import api

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "eval_bundle", interrupted)
    res = _invoke("eval", random_reference_bundle)
    assert res.exit_code == 130 and "interrupted (Ctrl-C)" in _one_error_line(res)


def test_a_bare_file_not_found_names_the_path():
    code, line = describe(FileNotFoundError("photos/empty"))
    assert code == EXIT_INPUT and line.startswith("photos/empty: no such file or folder")


def test_real_process_prints_exactly_one_stderr_line(random_reference_bundle, tmp_path):
    """Outside CliRunner too: no progress-bar blank line, no traceback; a missing labelled split is bad input."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "heatdeploy.cli", "eval", str(random_reference_bundle), "--data",
                           str(tmp_path / "no-split")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_INPUT
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "no-split" in proc.stderr

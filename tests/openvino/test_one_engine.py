"""One-engine installs: a box with only OpenVINO (or only ONNX Runtime) runs the artifacts its engine reads.

Each case runs in a fresh interpreter where the missing engine is made unimportable (``sys.modules[name] =
None``: ``import`` raises ImportError and ``find_spec`` returns None, as on a box without it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")


def _run(code: str, hide: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=300)


def _run_json(code: str, hide: tuple[str, ...]) -> Any:
    """Run ``code`` with ``hide`` unimportable; it must succeed, and its last stdout line is JSON."""
    r = _run(code, hide)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])


PICK = ("import json, numpy as np\nfrom heatdeploy.runtime import Pipeline\n"
        "p = Pipeline.load({path!r})\n"
        "pred = p.predict([np.zeros((64, 48, 3), np.uint8)])\n"
        "print(json.dumps({{'artifact': p.artifact.name if p.artifact else None, 'backend': p.backend_name,"
        " 'shape': list(pred.keypoints.shape)}}))\n")


def test_openvino_only_box_runs_the_openvino_artifact(tiny_ov_bundle: Path) -> None:
    got = _run_json(PICK.format(path=str(tiny_ov_bundle)), hide=("onnxruntime",))
    assert got["artifact"] == "openvino-fp32" and got["backend"] == "openvino"


def test_openvino_only_box_runs_an_onnx_only_bundle_through_openvino(tiny_bundle_src: Path) -> None:
    got = _run_json(PICK.format(path=str(tiny_bundle_src)), hide=("onnxruntime",))
    assert got["artifact"] == "onnx-fp32" and got["backend"] == "openvino"


def test_onnxruntime_only_box_keeps_onnx_fp32(tiny_ov_bundle: Path) -> None:
    assert _run_json(PICK.format(path=str(tiny_ov_bundle)), hide=("openvino",))["backend"] == "onnxruntime"


def test_no_engine_is_one_line_naming_the_extra(tiny_ov_bundle: Path) -> None:
    code = ("from heatdeploy.errors import HeatdeployError\nfrom heatdeploy.runtime import Pipeline\n"
            f"try:\n    Pipeline.load({str(tiny_ov_bundle)!r})\nexcept HeatdeployError as e:\n    print(e)\n")
    r = _run(code, hide=("onnxruntime", "openvino"))
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and "no engine installed" in line and "pip install 'heatdeploy[onnxruntime]'" in line


def test_only_the_loaded_artifact_is_verified(tiny_ov_bundle: Path, tmp_path: Path) -> None:
    """A broken OpenVINO file must not stop the ONNX FP32 artifact from running."""
    import shutil

    from heatdeploy.bundle import BundleError
    from heatdeploy.runtime import Pipeline

    root = tmp_path / "b"
    shutil.copytree(tiny_ov_bundle, root)
    xml = next((root / "openvino").glob("*.xml"))
    xml.write_text(xml.read_text() + " ")
    assert Pipeline.load(root, artifact="onnx-fp32").backend_name == "onnxruntime"
    with pytest.raises(BundleError, match="does not match the manifest"):
        Pipeline.load(root, artifact="openvino-fp32")


def test_openvino_export_stores_an_fp32_reference_and_parity_runs_without_onnxruntime(
        tiny_bundle: Path) -> None:
    """An OpenVINO INT8 export also writes openvino-fp32, so an OpenVINO-only box can check INT8 against FP32."""
    from heatdeploy.bundle import Bundle
    from heatdeploy.exporters.openvino import add_openvino_artifact

    add_openvino_artifact(tiny_bundle, "int8", keep_fp32="base", calib="synthetic", calib_size=16)
    names = [a.name for a in Bundle.load(tiny_bundle).artifacts]
    assert "openvino-fp32" in names and "openvino-int8" in names
    ref = Bundle.load(tiny_bundle).artifact("openvino-fp32")
    assert ref.precision == "fp32" and ref.notes["check"]["max_abs_diff"]  # checked against ORT FP32 at export
    assert max(ref.notes["check"]["max_abs_diff"].values()) < 1e-3
    code = ("import json\nfrom heatdeploy.parity.run import run_parity\n"
            f"r = run_parity({str(tiny_bundle)!r}, 'openvino-int8', reference='openvino-fp32', data='synthetic:8')\n"
            "import sys\nprint(json.dumps({'ref': r.reference.backend, 'cand': r.candidate.backend,"
            " 'images': r.keypoints.images, 'ort': sys.modules.get('onnxruntime') is not None}))\n")
    got = _run_json(code, hide=("onnxruntime",))
    assert got == {"ref": "openvino", "cand": "openvino", "images": 8, "ort": False}


def test_bench_on_an_openvino_only_box_times_the_openvino_artifacts(tiny_ov_bundle: Path) -> None:
    code = ("import json\nfrom heatdeploy.bench import run_bench\n"
            f"rows = run_bench({str(tiny_ov_bundle)!r}, batches=(1,), threads=(1,), iters=2, warmup=1)\n"
            "print(json.dumps([(r.artifact, r.backend) for r in rows]))\n")
    assert _run_json(code, hide=("onnxruntime",)) == [["openvino-fp32", "openvino"]]
    r = _run(code, hide=("onnxruntime", "openvino"))
    assert r.returncode != 0 and "no engine installed for its artifacts" in r.stderr
    assert "pip install 'heatdeploy[onnxruntime]'" in r.stderr


def test_an_engine_that_is_installed_but_broken_is_one_line(tiny_ov_bundle: Path, tmp_path: Path) -> None:
    """OpenVINO present but its native library failing to load (a broken install) is named, not a traceback."""
    fake = tmp_path / "fake" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise OSError('libopenvino.so.2540: cannot open shared object file')\n")
    code = (f"import sys\nsys.path.insert(0, {str(tmp_path / 'fake')!r})\n"
            "from heatdeploy.errors import HeatdeployError\nfrom heatdeploy.runtime import Pipeline\n"
            f"try:\n    Pipeline.load({str(tiny_ov_bundle)!r}, artifact='openvino-fp32')\n"
            "except HeatdeployError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith("backend 'openvino': its engine is installed but does not import")
    assert "libopenvino.so.2540" in line and "pip install 'heatdeploy[openvino]'" in line


def test_inspect_reads_a_bare_ir_through_openvino(tiny_ov_bundle: Path) -> None:
    from heatdeploy.bundle import Bundle
    from heatdeploy.exporters.inspect import describe

    xml = tiny_ov_bundle / Bundle.load(tiny_ov_bundle).artifact("openvino-fp32").path
    info = describe(xml)
    assert info["kind"] == "openvino-ir" and info["read_by"] == "openvino" and "details" not in info
    assert info["spec"] == Bundle.load(tiny_ov_bundle).spec.to_dict()
    assert [o["name"] for o in info["outputs"]] == ["heatmaps", "existence"]


def test_parity_default_reference_runs_on_openvino_when_onnxruntime_is_missing(tiny_ov_bundle: Path) -> None:
    """The default reference onnx-fp32 is an ONNX file, which OpenVINO reads: an OpenVINO-only box runs it there."""
    code = ("import json\nfrom heatdeploy.parity.run import run_parity\n"
            f"r = run_parity({str(tiny_ov_bundle)!r}, 'openvino-fp32', data='synthetic:4', floor=False)\n"
            "print(json.dumps({'ref': [r.reference.name, r.reference.backend], 'passed': r.passed}))\n")
    got = _run_json(code, hide=("onnxruntime",))
    assert got == {"ref": ["onnx-fp32", "openvino"], "passed": True}

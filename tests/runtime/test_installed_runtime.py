"""Every runtime command with the wheel and exactly one engine (ONNX Runtime): no torch, no onnx, no OpenVINO.

CI runs this file in a second venv that really has only the wheel + onnxruntime (Python 3.10, as JetPack 6).
Here, in the full dev venv, each command runs in an interpreter where torch, onnx, OpenVINO and NNCF are made
unimportable (``sys.modules[name] = None``: ``import`` fails and ``find_spec`` finds nothing), so a runtime
command that starts needing one of them fails here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ABSENT = ("torch", "onnx", "openvino", "nncf", "onnxscript")
SAMPLES = Path(__file__).parents[2] / "heatdeploy" / "models" / "data" / "samples"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT)
            + "from heatdeploy.cli import app\nsys.argv = ['heatdeploy', *sys.argv[1:]]\napp()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def _images(tmp_path: Path) -> Path:
    """Three sample images (the shipped ones when present, else drawn here)."""
    import cv2
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    files = sorted(SAMPLES.glob("*.jpg"))[:3]
    for i in range(3):
        img = cv2.imread(str(files[i])) if i < len(files) else None
        if img is None:
            img = np.random.default_rng(i).integers(0, 255, (120, 90, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i}.jpg"), img)
    return folder


def test_run_writes_predictions(runtime_bundle: Path, tmp_path: Path) -> None:
    r = _cli("run", str(runtime_bundle), str(_images(tmp_path)), "--out", str(tmp_path / "preds"))
    assert r.returncode == 0, r.stderr[-2000:]
    records = json.loads((tmp_path / "preds" / "predictions.json").read_text())
    assert len(records) == 3 and len(records[0]["keypoints"]) == 17


def test_inspect_without_onnx_reads_through_the_engine(runtime_bundle: Path) -> None:
    r = _cli("inspect", str(runtime_bundle), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    art = info["artifacts"][0]
    assert info["ok"] and art["read_by"] == "onnxruntime" and art["inputs"][0]["name"] == "image"
    assert art["details"].startswith("opset, op counts and dtypes need the onnx package: pip install onnx")
    r = _cli("inspect", str(runtime_bundle / "model.onnx"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["spec"]["keypoints"][0] == "nose"


def test_bench_eval_parity(runtime_bundle: Path, tmp_path: Path) -> None:
    r = _cli("bench", str(runtime_bundle), "--batch", "1", "--threads", "1", "--iters", "2", "--warmup", "1",
             "--out", str(tmp_path / "bench"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())[0]["backend"] == "onnxruntime"
    r = _cli("eval", str(runtime_bundle))
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("parity", str(runtime_bundle), "--candidate", "onnx-fp32", "--limit", "4", "--no-floor",
             "--out", str(tmp_path / "parity"))
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert "PASS" in r.stdout


def test_devices_and_probe() -> None:
    r = _cli("devices")
    assert r.returncode == 0 and "x86-cpu-openvino" in r.stdout, r.stderr[-2000:]


def test_a_missing_engine_is_one_line_naming_the_extra(runtime_bundle: Path) -> None:
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT)
            + "from heatdeploy.errors import HeatdeployError\nfrom heatdeploy.runtime import Pipeline\n"
            f"try:\n    Pipeline.load({str(runtime_bundle)!r}, backend='openvino')\n"
            "except HeatdeployError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip()
    assert "\n" not in line and "pip install 'heatdeploy[openvino]'" in line


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="tomllib is in the standard library from 3.11")
def test_tomli_is_a_declared_dependency_below_3_11() -> None:
    """fsutil reads TOML (profiles, tolerances) with tomli before 3.11: the wheel must pull it in."""
    from importlib.metadata import requires

    assert any(r.replace(" ", "").startswith("tomli") and "python_version<" in r.replace(" ", "").replace('"', "'")
               for r in requires("heatdeploy") or [])

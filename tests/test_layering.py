"""Which way imports run (docs/architecture.md): each module imported alone, in a fresh interpreter.

The runtime installs on a device with numpy, OpenCV and one engine, and parity is the engine-free judge that
calibration calls: neither may pull in what sits above it. A single subprocess imports every module one by
one, in a clean ``sys.modules`` each time, and reports what each one loaded.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import heatdeploy.parity
import heatdeploy.runtime
from heatdeploy.runtime.backends.base import engine_installed

ENGINES = ("torch", "onnx", "onnxruntime", "openvino", "tensorrt", "nncf")
RUNTIME_NEVER = ("heatdeploy.models", "heatdeploy.calibration", "heatdeploy.exporters", "heatdeploy.parity",
                 "heatdeploy.datasets", "heatdeploy.cli", "heatdeploy.api", *ENGINES)
PARITY_NEVER = ("heatdeploy.models", "heatdeploy.calibration", "heatdeploy.exporters", "heatdeploy.cli",
                "heatdeploy.api", *ENGINES)

# Imports each module in a child whose sys.modules starts clean, and prints {module: [loaded modules]}.
_PROBE = """
import json, subprocess, sys
names = json.loads(sys.argv[1])
code = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"
out = {}
for name in names:
    run = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
    out[name] = json.loads(run.stdout) if run.returncode == 0 else ["<import failed> " + run.stderr[-300:]]
print(json.dumps(out))
"""


def _submodules(package) -> list[str]:
    return [package.__name__] + sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))


def _loaded(names: list[str]) -> dict[str, list[str]]:
    run = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names)], capture_output=True, text=True,
                         check=True)
    return json.loads(run.stdout)


def _violations(loaded: dict[str, list[str]], never: tuple[str, ...]) -> dict[str, list[str]]:
    """Forbidden modules each one loaded; a backend module may load its own engine (and only that one)."""
    bad: dict[str, list[str]] = {}
    for name, mods in loaded.items():
        own = name.rpartition(".")[2] if name.startswith("heatdeploy.runtime.backends.") else None
        if own in ENGINES and not engine_installed(own):
            continue  # a runtime-only install (CI's second venv) has one engine: the other backends cannot import
        hits = sorted({n for m in mods for n in never if (m == n or m.startswith(n + ".")) and n != own} |
                      {m for m in mods if m.startswith("<import failed>")})
        if hits:
            bad[name] = hits
    return bad


def test_runtime_modules_load_nothing_above_the_runtime():
    names = _submodules(heatdeploy.runtime)
    assert len(names) > 10  # the walk found the package's modules
    bad = _violations(_loaded(names), RUNTIME_NEVER)
    assert not bad, f"runtime modules import what the runtime must never load: {bad}"


def test_parity_modules_load_no_engine_and_nothing_of_models_calibration_exporters():
    names = _submodules(heatdeploy.parity) + ["heatdeploy.datasets"]
    assert "heatdeploy.parity.keypoints" in names and "heatdeploy.parity.report" in names
    bad = _violations(_loaded(names), PARITY_NEVER)
    assert not bad, f"parity / datasets import what they must never load: {bad}"


def test_the_probe_sees_a_forbidden_import():
    """The check itself: a module known to load torch and onnx is reported."""
    bad = _violations(_loaded(["heatdeploy.calibration.quantize"]), PARITY_NEVER)
    assert {"onnx", "onnxruntime"} <= set(bad["heatdeploy.calibration.quantize"])

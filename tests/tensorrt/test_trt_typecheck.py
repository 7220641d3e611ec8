"""Every TensorRT call is type-checked against tensorrt-stubs (mypy); the stub repair is unit-tested here."""

from __future__ import annotations

import ast
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import trt_typecheck  # noqa: E402


def test_repair_def_line() -> None:
    bad = "    def on_shape_change(self: IPluginV3, in: list[PluginTensorDesc], out: list[int]) -> None:"
    fixed = trt_typecheck.repair_def_line(bad)
    assert "in_: list[PluginTensorDesc]" in fixed and "out: list[int]" in fixed
    bad = "    def add_scale_nd(self, input: ITensor, shift: Weights = None, scale: dict[str, int], axis: int) -> X:"
    fixed = trt_typecheck.repair_def_line(bad)
    assert "scale: dict[str, int] = ..., axis: int = ..." in fixed and "input: ITensor," in fixed
    ast.parse(fixed.strip() + " ...")
    assert trt_typecheck.repair_def_line("def f(a, *, b, c=1): ...") == "def f(a, *, b, c=1): ..."
    text, n = trt_typecheck.repair_stub("class A:\n    def f(self, in: int) -> None: ...\n", "x.pyi")
    assert n == 1 and "in_: int" in text
    with pytest.raises(RuntimeError, match="cannot repair"):
        trt_typecheck.repair_stub("x = (\n", "y.pyi")


def _missing() -> str | None:
    if importlib.util.find_spec("mypy") is None:
        return "mypy is not installed (pip install mypy)"
    try:
        metadata.version("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return "tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_tensorrt_code_type_checks_against_the_stubs(tmp_path: Path) -> None:
    """One mypy run: our two modules must be clean, and a deliberately wrong call must be caught (proving the
    stubs are really used, not silently replaced by Any)."""
    probe = tmp_path / "wrong_trt_call.py"
    probe.write_text("import tensorrt as trt\n\n\ndef f() -> None:\n"
                     "    trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network('not flags')\n")
    result = trt_typecheck.run_mypy((*trt_typecheck.TARGETS, str(probe)))
    out = result.stdout + result.stderr
    ours = [ln for ln in out.splitlines() if ln.startswith("heatdeploy/")]
    assert not ours, "mypy errors in heatdeploy's TensorRT code:\n" + "\n".join(ours)
    assert "wrong_trt_call.py:5: error" in out and "create_network" in out, out[-2000:]

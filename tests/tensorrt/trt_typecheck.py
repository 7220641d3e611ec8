"""Type-check heatdeploy's TensorRT code with mypy against the ``tensorrt-stubs`` package.

Why a script and not a plain ``mypy`` call: the published stubs (10.8 ... 10.13) install as a bare
``tensorrt/`` folder without ``py.typed`` (mypy skips it as "untyped"), and pybind11-stubgen left Python
syntax errors in ``tensorrt_bindings/tensorrt.pyi`` (a parameter named ``in``; a parameter without a
default after one with a default). This copies the installed ``.pyi`` files into a temporary stub
directory, repairs exactly those two kinds of line, and runs mypy with that directory on ``MYPYPATH``.

Install the stubs without their dependencies: ``tensorrt-stubs`` requires ``tensorrt==10.x``, whose PyPI
wheel is a stub that downloads from NVIDIA's index at install time (which fails where only PyPI is
reachable, and is not wanted in CI anyway)::

    pip install mypy && pip install --no-deps tensorrt-stubs==10.13.0.35.1
    python tests/tensorrt/trt_typecheck.py          # exit 0: no type errors

Caution: with ``--no-deps`` the stubs leave an empty ``tensorrt`` namespace package importable; the probe
and the backend check for a real module (``tensorrt.__version__``), not just ``import tensorrt``.
"""

from __future__ import annotations

import ast
import keyword
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("heatdeploy/exporters/tensorrt.py", "heatdeploy/runtime/backends/tensorrt.py",
           "heatdeploy/runtime/backends/tensorrt_build.py", "heatdeploy/runtime/backends/tensorrt_config.py")
STUBS_DIST = "tensorrt-stubs"
_MAX_FIXES = 500


class StubsMissing(RuntimeError):
    """tensorrt-stubs (or mypy) is not installed; the message says how to install it."""


def installed_stub_files() -> list[tuple[str, Path]]:
    """(relative path, absolute path) of every ``.pyi`` the tensorrt-stubs distribution installed."""
    try:
        dist = metadata.distribution(STUBS_DIST)
    except metadata.PackageNotFoundError:
        raise StubsMissing(f"{STUBS_DIST} is not installed: pip install --no-deps {STUBS_DIST}") from None
    out = []
    for f in dist.files or []:
        if str(f).endswith(".pyi"):
            out.append((str(f), Path(str(dist.locate_file(f)))))
    if not out:
        raise StubsMissing(f"{STUBS_DIST} installed no .pyi files; reinstall it")
    return out


def _split_params(text: str) -> list[str]:
    """Split a parameter list at top-level commas (brackets and quotes nest)."""
    parts, depth, cur, quote = [], 0, [], ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def repair_def_line(line: str) -> str:
    """Rename keyword-named parameters (``in`` -> ``in_``) and give defaults after the first default."""
    start = line.index("(")
    depth, end = 0, -1
    for i in range(start, len(line)):
        if line[i] == "(":
            depth += 1
        elif line[i] == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        return line
    params, fixed, seen_default = _split_params(line[start + 1:end]), [], False
    for p in params:
        name = p.split(":", 1)[0].split("=", 1)[0].strip()
        if keyword.iskeyword(name):
            p = name + "_" + p[len(name):]
        if p.startswith("*"):
            seen_default = False if p == "*" else seen_default
        elif "=" in p:
            seen_default = True
        elif seen_default:
            p += " = ..."
        fixed.append(p)
    return line[:start + 1] + ", ".join(fixed) + line[end:]


def repair_stub(text: str, where: str) -> tuple[str, int]:
    """Parse, repair the failing ``def`` line, repeat; returns the text and how many lines were repaired."""
    lines = text.splitlines()
    for fixes in range(_MAX_FIXES):
        try:
            ast.parse("\n".join(lines), filename=where, feature_version=(3, 10))
            return "\n".join(lines) + "\n", fixes
        except SyntaxError as exc:
            idx = (exc.lineno or 1) - 1
            before = lines[idx]
            if not before.lstrip().startswith("def "):
                raise RuntimeError(f"{where}:{idx + 1}: cannot repair ({exc.msg}): {before.strip()}") from None
            lines[idx] = repair_def_line(before)
            if lines[idx] == before:
                raise RuntimeError(f"{where}:{idx + 1}: repair changed nothing ({exc.msg}): {before.strip()}") from None
    raise RuntimeError(f"{where}: more than {_MAX_FIXES} broken lines; these stubs are not usable")


def build_stub_dir(dest: Path) -> dict[str, int]:
    """Write repaired copies of the installed stubs under ``dest``; returns repaired lines per file."""
    report = {}
    for rel, src in installed_stub_files():
        text, n = repair_stub(src.read_text(encoding="utf-8"), rel)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        report[rel] = n
    return report


def run_mypy(targets: tuple[str, ...] = TARGETS, extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """mypy (config from pyproject.toml) on ``targets`` with the repaired stubs first on MYPYPATH."""
    if shutil.which("mypy") is None and subprocess.run([sys.executable, "-c", "import mypy"],
                                                       capture_output=True).returncode:
        raise StubsMissing("mypy is not installed: pip install mypy")
    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        build_stub_dir(Path(tmp))
        env = {**os.environ, "MYPYPATH": tmp}
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(Path(tmp) / ".mypy_cache"), "--follow-imports=silent", *(extra or []), *targets]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def main() -> int:
    try:
        result = run_mypy(extra=sys.argv[1:])
    except StubsMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

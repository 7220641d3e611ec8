"""Atomic file writes: a failed step never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def atomic_copy(src: Path, final: Path) -> None:
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_toml(path: Path, kind: str, error: type[Exception]) -> dict:
    """Parse a TOML file; any failure is ``error`` with one line naming the file (``kind``: what it holds)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read {kind} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file; a {kind} is TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None


CACHE_ENV = "HEATDEPLOY_CACHE"  # heatdeploy's cache root (calibration ranges, fetched models)


def cache_dir(sub: str) -> Path:
    """``$HEATDEPLOY_CACHE/<sub>``, else ``$XDG_CACHE_HOME/heatdeploy/<sub>`` or ``~/.cache/heatdeploy/<sub>``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / sub
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "heatdeploy" / sub


@contextmanager
def working_dir(path: Path) -> Iterator[Path]:
    """Run a tool that drops temporaries in the current directory (ORT's symbolic shape inference writes
    ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` there when it fails) inside ``path`` instead."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)

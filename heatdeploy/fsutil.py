"""Atomic file writes: a failed step never leaves a half-written file under the final name.

Every temporary name heatdeploy makes carries the writer's pid (``.<name>.<pid>.<random>.part``), so a later
run can tell a leftover of a killed process (pid gone) from the live work of another one and clean only the
first (:func:`stale_temp`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".part"
PARTIAL_SUFFIX = ".partial"
# .<name>.<pid>.<random>.part / .partial (made by temp_name / temp_dir); the random part is mkstemp's 8 chars
_TAGGED = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.(part|partial|old)$")
LEGACY_AGE_S = 3600.0  # untagged leftovers of older heatdeploy versions: cleaned once this old
_ACTIVE: set[str] = set()  # this process's temporaries still in use (its own leftovers are stale otherwise)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (ours, or another user's: EPERM)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # cannot tell: keep it
    return True


def is_temp_name(name: str) -> bool:
    """Does ``name`` have the form of a temporary heatdeploy makes (``.<name>.<pid>.<random>.part``...)?"""
    return bool(_TAGGED.match(name))


def stale_temp(path: Path, legacy: re.Pattern[str] | None = None) -> bool:
    """Is ``path`` a temporary heatdeploy made whose writer is gone?

    Tagged names (``.<name>.<pid>.<random>.part|.partial``) are stale when their pid is dead; names matching
    ``legacy`` (older untagged temporaries) only once older than ``LEGACY_AGE_S``.
    """
    m = _TAGGED.match(path.name)
    if m:
        pid = int(m.group("pid"))
        if pid == os.getpid():
            return os.path.abspath(path) not in _ACTIVE
        return not pid_alive(pid)
    if legacy is not None and legacy.match(path.name):
        try:
            return time.time() - path.lstat().st_mtime > LEGACY_AGE_S
        except OSError:
            return False
    return False


def remove_path(path: Path) -> None:
    """Remove a file, link or folder; missing is fine (another cleaner got there first)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
    _ACTIVE.discard(os.path.abspath(path))


def release(path: Path) -> None:
    """Mark a temporary of this process as no longer in use: from now on a cleaner may remove it."""
    _ACTIVE.discard(os.path.abspath(path))


def move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (same filesystem), else copy then remove ``src``."""
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_copy(src, dest, durable=True)
        os.unlink(src)


def unlink(path: Path) -> None:
    """Remove one file (missing is fine)."""
    Path(path).unlink(missing_ok=True)


def temp_dir(final: Path, suffix: str = PARTIAL_SUFFIX, prefix: str | None = None) -> Path:
    """A new private folder beside ``final`` named ``.<name>.<pid>.<random>.partial``."""
    final = Path(final)
    name = prefix if prefix is not None else final.name
    path = tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=suffix, dir=final.parent)
    _ACTIVE.add(os.path.abspath(path))
    return Path(path)


def fsync_file(path: Path) -> None:
    """Flush a written file to disk, so a manifest never names a file a power loss could still empty."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced); a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only if the block succeeds.

    ``durable`` fsyncs the file before the rename and the folder after it (for files others depend on,
    such as a bundle manifest).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name[:120]}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _ACTIVE.add(os.path.abspath(tmp))
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            if durable:
                fsync_file(tmp_path)
        os.replace(tmp_path, final)
        if durable:
            fsync_dir(final.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        _ACTIVE.discard(os.path.abspath(tmp))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: Path, data: bytes, durable: bool = False) -> None:
    with atomic_path(final, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(final, text.encode("utf-8"), durable)


def atomic_copy(src: Path, final: Path, durable: bool = False) -> str:
    """Copy ``src`` to ``final`` atomically; returns the sha256 of the bytes written (one read of ``src``)."""
    h = hashlib.sha256()
    with atomic_path(final, durable) as tmp:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(1 << 20):
                h.update(block)
                fout.write(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


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

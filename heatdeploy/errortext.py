"""One line for any exception: what the CLI prints, and the exit code a CI job can act on.

Exit codes: 0 ok, 1 a gate failed (parity out of tolerance), 2 bad input or usage, 3 internal error (a bug),
130 interrupted (Ctrl-C).
Nothing here imports an engine or an error class of an optional extra, so the handler itself cannot fail on
a runtime-only install.
"""

from __future__ import annotations

import errno

from heatdeploy.errors import HeatdeployError

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

# top-level module of an optional dependency -> the extra that installs it
EXTRAS = {"torch": "export", "onnx": "export", "onnxscript": "export", "skimage": "export",
          "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "openvino", "tflite2onnx": "tflite",
          "tensorrt": "tensorrt", "cuda": "tensorrt", "tomli": "export"}

# errno -> what to do about it
_OS_FIXES = {
    errno.EACCES: "permission denied; choose a folder you can write, or fix its permissions",
    errno.EPERM: "operation not permitted (read-only or immutable); choose another path",
    errno.EROFS: "read-only file system; choose a writable location",
    errno.ENOSPC: "no space left on the device; free some space or choose another disk",
    errno.EFBIG: "file too large for this file system or the file-size limit (ulimit -f); raise the limit or "
                 "choose another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another disk",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EISDIR: "is a folder where a file was expected; pass a file",
    errno.EEXIST: "already exists; choose another path or remove it",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ELOOP: "too many levels of symbolic links (a link to itself?); fix the link",
    errno.ENOTEMPTY: "folder not empty; choose another path",
    errno.EPIPE: "output closed early (broken pipe)",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The message's first line (most tools put the cause there), else the exception's type."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def cause_line(exc: BaseException, limit: int | None = None) -> str:
    """The message's last line: OpenVINO prefixes the cause with "Exception from src/...cpp:NN:" lines."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else type(exc).__name__


def _short(path: object, limit: int = 160) -> str:
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]}"


def os_error_line(exc: OSError) -> str:
    """``<path>: <what happened>; <fix>`` for an OS error (the path shortened when it is very long)."""
    if exc.errno is None:  # raised by hand with only a path (FileNotFoundError(path))
        what = "no such file or folder, or nothing usable in it; check the path" \
            if isinstance(exc, FileNotFoundError) else type(exc).__name__
        return f"{_short(first_line(exc))}: {what}"
    fix = _OS_FIXES.get(exc.errno) or f"{exc.strerror or type(exc).__name__}"
    if exc.filename is None:
        return fix
    return f"{_short(exc.filename)}: {fix}"


def missing_extra_line(exc: ImportError) -> str | None:
    """For an optional dependency that is not installed: which extra to install; None for other import errors."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    return f"this command needs {name}, which is not installed: pip install 'heatdeploy[{extra}]'"


def _is_cv2_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "cv2"  # cv2.error, without importing OpenCV here


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that reached the CLI."""
    if isinstance(exc, HeatdeployError):
        return EXIT_INPUT, first_line(exc) if "\n" in str(exc) else str(exc)
    if isinstance(exc, ImportError):
        line = missing_extra_line(exc)
        if line is not None:
            return EXIT_INPUT, line
    if isinstance(exc, BrokenPipeError):
        return EXIT_INPUT, "output closed early (broken pipe); nothing more was written"
    if isinstance(exc, OSError):
        return EXIT_INPUT, os_error_line(exc)
    if _is_cv2_error(exc):
        return EXIT_INPUT, f"OpenCV refused an input ({cause_line(exc, 200)}); check the image (its size, format)"
    if isinstance(exc, RecursionError):
        return EXIT_INPUT, "an input is nested too deeply to read (a JSON file nested thousands of levels?); " \
                           "fix or regenerate it"
    if isinstance(exc, OverflowError):
        return EXIT_INPUT, f"a number in the input is out of range ({first_line(exc, 200)}); use a finite, " \
                           "reasonable value"
    if isinstance(exc, MemoryError):
        return EXIT_INPUT, "out of memory: an input (image size, spec sizes, batch) asks for more than this " \
                           "machine has; use smaller sizes"
    return EXIT_INTERNAL, (f"internal error (a bug): {type(exc).__name__}: {first_line(exc, 300)}; "
                           "rerun with --debug for the traceback")

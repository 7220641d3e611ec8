"""``heatdeploy inspect``: what a bundle or a bare .onnx holds, as a plain dict the CLI can print or dump.

onnx is imported inside the functions so describing a bundle stays cheap; hashes are reported per file
(ok / MISMATCH / missing) instead of failing on the first bad one, because this is the tool you run to
find out what is wrong. A runtime-only install (no ``onnx``) gets the spec and tensors from the installed
engine instead, and one ``details`` line saying what needs ``onnx``.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy.bundle import MANIFEST, Bundle, BundleError
from heatdeploy.errors import HeatdeployError
from heatdeploy.exporters.onnx import (
    OnnxFileError,
    default_opset,
    graph_inputs,
    load_model_proto,
    read_spec,
    value_dims,
)
from heatdeploy.fsutil import sha256_file
from heatdeploy.runtime.backends.base import BackendError, backend_for_file, load_backend, read_spec_with
from heatdeploy.spec import SpecError

if TYPE_CHECKING:
    import onnx

OK, MISMATCH, MISSING = "ok", "MISMATCH", "missing"
TOP_OPS = 10
NO_ONNX = "opset, op counts and dtypes need the onnx package: pip install onnx (or heatdeploy[export])"


class InspectError(HeatdeployError, ValueError):
    """A path that is neither a bundle directory nor an .onnx file."""


def describe(path: str | Path) -> dict[str, Any]:
    """Describe a bundle directory (or its manifest.json) or a bare .onnx file."""
    p = Path(path)
    if p.is_dir() or p.name == MANIFEST:
        return describe_bundle(p.parent if p.name == MANIFEST and p.is_file() else p)
    if p.suffix.lower() in (".xml", ".plan", ".engine") and p.is_file():
        return _describe_with_engine(p, "openvino-ir" if p.suffix.lower() == ".xml" else "tensorrt-plan")
    if p.suffix.lower() == ".onnx" or p.is_file():
        return describe_onnx(p)
    raise InspectError(f"{p}: no such bundle directory or .onnx file; check the path")


def describe_bundle(root: str | Path) -> dict[str, Any]:
    """Manifest, spec and per-artifact file status; ONNX artifacts also get their inputs/outputs/opset."""
    b = Bundle.load(root, verify=False)
    artifacts = []
    for a in b.artifacts:
        files = {}
        for rel, digest in {a.path: a.sha256, **a.extra_files}.items():
            try:
                fp = b.path_of(rel)
            except BundleError:
                files[rel] = MISSING
                continue
            files[rel] = MISSING if not fp.is_file() else OK if sha256_file(fp) == digest else MISMATCH
        statuses = set(files.values())
        status = MISSING if MISSING in statuses else MISMATCH if MISMATCH in statuses else OK
        entry: dict[str, Any] = {
            "name": a.name, "path": a.path, "format": a.format, "precision": a.precision,
            "backend": a.backend, "size": a.size, "sha256": a.sha256, "status": status, "files": files,
            "tools": a.tools, "calibration": a.calibration, "parity": a.parity, "notes": a.notes,
        }
        if a.format == "onnx" and files[a.path] != MISSING and not _have_onnx():
            entry.update(_engine_io(b.path_of(a)))
        elif a.format == "onnx" and files[a.path] != MISSING:
            try:
                proto = load_model_proto(b.path_of(a))
            except OnnxFileError as exc:
                entry["error"] = str(exc)
            else:
                entry.update(_io_summary(proto))
        artifacts.append(entry)
    return {
        "kind": "bundle",
        "path": str(b.root),
        "heatdeploy_version": b.heatdeploy_version,
        "created": b.created,
        "spec": b.spec.to_dict(),
        "artifacts": artifacts,
        "ok": all(e["status"] == OK for e in artifacts),
        "info": b.info,
    }


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """Embedded spec (if any), inputs/outputs, opset, sha256 and the most frequent op types."""
    p = Path(path)
    if not _have_onnx():
        return _describe_with_engine(p, "onnx")
    proto = load_model_proto(p)  # OnnxFileError (a ValueError) naming the file when unreadable
    out: dict[str, Any] = {"kind": "onnx", "path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
    try:
        spec = read_spec(proto)
        out["spec"] = None if spec is None else spec.to_dict()
    except SpecError as exc:  # report it: inspect is how one finds out the embedded spec is bad
        out["spec"] = None
        out["spec_error"] = f"{p}: {exc}"
    out.update(_io_summary(proto))
    out["ir_version"] = int(proto.ir_version)
    out["producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
    out["num_nodes"] = len(proto.graph.node)
    out["ops"] = dict(Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                              for n in proto.graph.node).most_common(TOP_OPS))
    return out


def _have_onnx() -> bool:
    return importlib.util.find_spec("onnx") is not None


def _engine_io(path: Path) -> dict[str, Any]:
    """Inputs/outputs as the installed engine reads them, or the one line why not (``details``)."""
    note = NO_ONNX if path.suffix.lower() == ".onnx" else ""
    try:
        info = load_backend(backend_for_file(path), str(path)).describe()  # type: ignore[attr-defined]
    except BackendError as exc:
        return {"details": f"{note + '; ' if note else ''}no engine could open it ({exc})"}
    out = {"inputs": info["inputs"], "outputs": info["outputs"], "read_by": info["backend"]}
    return {**out, "details": note} if note else out


def _describe_with_engine(p: Path, kind: str) -> dict[str, Any]:
    """A model file described through the engine that reads it: embedded spec, inputs/outputs."""
    if not p.is_file():
        raise InspectError(f"{p}: no such model file; check the path")
    out: dict[str, Any] = {"kind": kind, "path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
    try:
        spec = read_spec_with(backend_for_file(p), p)
        out["spec"] = None if spec is None else spec.to_dict()
    except SpecError as exc:
        out["spec"], out["spec_error"] = None, f"{p}: {exc}"
    out.update(_engine_io(p))
    return out


def _io_summary(proto: onnx.ModelProto) -> dict[str, Any]:
    return {
        "inputs": [_value(v) for v in graph_inputs(proto)],
        "outputs": [_value(v) for v in proto.graph.output],
        "opset": default_opset(proto),
        "opsets": {(imp.domain or "ai.onnx"): int(imp.version) for imp in proto.opset_import},
    }


def _value(v: onnx.ValueInfoProto) -> dict[str, Any]:
    return {"name": v.name, "shape": value_dims(v), "dtype": _dtype(v)}


def _dtype(v: onnx.ValueInfoProto) -> str:
    import onnx

    if not v.type.HasField("tensor_type"):
        return v.type.WhichOneof("value") or "unknown"
    elem = v.type.tensor_type.elem_type
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem).lower()

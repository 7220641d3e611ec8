"""onnxruntime checks of an exported graph: run it on CPU, and the BASIC-level offline optimisation kept
only when its outputs still match (used by :func:`heatdeploy.exporters.onnx.export_onnx`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy.exporters.onnx import (
    OnnxExportError,
    _check_model,
    _check_names,
    _check_opset,
    _max_abs_diff,
    check_spec_against_graph,
    embed_spec,
)
from heatdeploy.spec import METADATA_KEY, ModelSpec, SpecError

if TYPE_CHECKING:
    import numpy as np
    import onnx


def _used_domains(proto: onnx.ModelProto) -> set[str]:
    """Operator domains any node uses, including subgraphs and local functions."""
    import onnx

    found: set[str] = set()

    def visit(nodes: Sequence[onnx.NodeProto]) -> None:
        for n in nodes:
            found.add(n.domain)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g.node)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        visit(g.node)

    visit(proto.graph.node)
    for f in proto.functions:
        visit(f.node)
        found.add(f.domain)
    return {"" if d == "ai.onnx" else d for d in found}


def _ort_session(model: onnx.ModelProto | bytes, so: Any = None) -> Any:
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so or ort.SessionOptions(), providers=["CPUExecutionProvider"])


def ort_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    try:
        sess = _ort_session(proto)
        return list(sess.run(names, feeds))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxExportError(f"onnxruntime cannot run the exported model: {first}") from None


def ort_basic_optimize(proto: onnx.ModelProto, spec: ModelSpec, opset: int, x: np.ndarray,
                        want: list[np.ndarray], atol: float) -> tuple[onnx.ModelProto | None, str]:
    """onnxruntime offline optimisation at BASIC level (standard ops only), or (None, why) to keep ``proto``.

    BASIC = constant folding, redundant-node elimination, Conv+BN/Add/Mul fusion: the result is plain ONNX
    any engine reads. EXTENDED/ALL would emit com.microsoft fused ops, so they are never used here.
    """
    import onnx
    import onnxruntime as ort

    names = list(spec.output_names)
    with tempfile.TemporaryDirectory(prefix="heatdeploy-ortopt-") as tmpdir:
        opt_path = Path(tmpdir) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(opt_path)
        try:
            _ort_session(proto, so)
            opt = onnx.load(str(opt_path))
        except Exception as exc:
            return None, f"onnxruntime could not optimise it ({type(exc).__name__}: {str(exc)[:200]})"
    new_domains = _used_domains(opt) - _used_domains(proto)
    if new_domains:
        return None, f"it uses non-standard operator domains {sorted(new_domains)}"
    # onnxruntime declares every domain it knows; keep only those used so other engines' parsers stay happy
    used = _used_domains(opt) | {""}
    keep = [imp for imp in opt.opset_import if ("" if imp.domain == "ai.onnx" else imp.domain) in used]
    del opt.opset_import[:]
    opt.opset_import.extend(keep)
    del opt.metadata_props[:]
    opt.metadata_props.extend(p for p in proto.metadata_props if p.key != METADATA_KEY)
    embed_spec(opt, spec)  # onnxruntime drops metadata_props
    try:
        _check_opset(opt, opset, "the optimised model")
        _check_names(opt, spec, "onnxruntime optimiser")
        check_spec_against_graph(opt, spec)
        _check_model(opt, "the optimised model")
        got = ort_run(opt, {spec.input.name: x}, names)
    except (OnnxExportError, SpecError) as exc:
        return None, str(exc)
    for name, g, w in zip(names, got, want, strict=True):
        d = _max_abs_diff(g, w) if g.shape == w.shape else float("inf")
        if not d <= atol:
            return None, f"output {name!r} moved by {d:.3g} (> atol {atol:g})"
    return opt, ""

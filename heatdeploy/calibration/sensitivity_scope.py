"""OpenVINO INT8's float scope from heatdeploy's measured per-layer sensitivity (the ORT pass), by name.

NNCF has no cheap per-layer sensitivity of its own (its accuracy control validates once per reverted
group), while :func:`heatdeploy.calibration.quantize.quantize_onnx_int8` measures every layer and
re-quantizing op alone against FP32's keypoints in about a minute. Which layers an 8-bit grid hurts is
mostly a property of the model, so OpenVINO reuses that table: measured on BlazePose, NNCF INT8 moved
landmarks 7.14 input px with 12/64 pose flips under the base float scope, and 1.55 px with 1 flip with
the ORT-sensitive nodes kept float as well (stock ``nncf.quantize``: 6.9 px).

Names: OpenVINO's ONNX frontend names a Conv with bias ``<name>/WithoutBiases`` and its bias Add
``<name>``, so both map back to the ONNX node; a ConvTranspose gets a generated name, so the layer
feeding a matched bias Add is taken too; other ops keep the node's or its output's name.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUFFIXES = ("/WithoutBiases",)


def sensitive_onnx_nodes(onnx_path: str | Path, spec: Any, source: Any, **options: Any) -> tuple[dict[str, str], str]:
    """ONNX node -> reason for the nodes the ORT sensitivity pass (or its search's chosen mix) keeps FP32 on
    ``source``; and a note.

    Goes through the quantizer's result cache, so a bundle whose ``onnx-int8`` was built from the same
    model and data answers without measuring again. ``options`` go to the quantizer (thresholds, budget).
    """
    from heatdeploy.calibration.quantize import quantize_onnx_int8

    with tempfile.TemporaryDirectory(prefix="heatdeploy-sens-") as tmp:
        # add_onnx_int8's defaults (SYMMETRIC_ACTIVATIONS included), so its cached result answers
        report = quantize_onnx_int8(onnx_path, Path(tmp) / "int8.onnx", spec, source, keep_fp32="auto",
                                    **options)
    # A layer the pass found sensitive may run INT8 in the search's chosen mix (so it is not in ``excluded``);
    # OpenVINO has no search of its own and keeps it float.
    kept = {row["node"]: report.excluded.get(row["node"], "ORT sensitivity: moves keypoints alone")
            for row in report.sensitivity if row["kept_fp32"]}
    # The ORT search's chosen mix too: what ORT needed FP32 to hold the keypoint budget. A pass cut short by
    # its time budget keeps few layers by threshold (BlazePose on a loaded box: 18 of 119, OpenVINO INT8 then
    # 1.70 heatmap px), while the search still reverts the untested ones it needs; OpenVINO has no search of
    # its own, so it takes both.
    search = report.search or {}
    found = [n for n in search.get("kept") or [] if n not in kept]
    kept.update({n: report.excluded.get(n, f"ORT search mix {search.get('chosen')}") for n in found})
    searched = f"; search {search.get('chosen')}: {len(search.get('kept') or [])} FP32" if search else ""
    note = (f"ORT per-layer sensitivity ({report.sensitivity_note}{searched}; cache: {report.cache}): "
            f"{len(kept)} ONNX nodes kept float")
    return kept, note


def ir_names(model: Any, onnx_path: str | Path, nodes: Mapping[str, str]) -> dict[str, str]:
    """IR op name -> reason, for the IR ops that carry each ONNX node in ``nodes`` (by name or output)."""
    import onnx

    from heatdeploy.calibration.nncf_quantize import COMPUTE_TYPES

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    by_name: dict[str, str] = {}
    for node in graph.node:
        if node.name in nodes:
            for key in (node.name, *node.output):
                by_name.setdefault(key, nodes[node.name])
    found: dict[str, str] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        why = by_name.get(name) or by_name.get(base)
        if why is None:
            continue
        found[name] = f"ORT {why}"
        if op.get_type_name() == "Add":  # a bias Add named after the node: its layer may carry a generated name
            for port in op.inputs():
                producer = port.get_source_output().get_node()
                if producer.get_type_name() in COMPUTE_TYPES:
                    found.setdefault(producer.get_friendly_name(), f"ORT {why}")
    return found

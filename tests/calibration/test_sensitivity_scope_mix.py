"""The OpenVINO float scope reads the ORT pass even when the search's mix runs a sensitive layer INT8."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import heatdeploy.calibration.quantize as quantize_mod
from heatdeploy.calibration.sensitivity_scope import sensitive_onnx_nodes


def test_a_sensitive_layer_the_search_put_back_to_int8_still_stays_float(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    # "a" was found sensitive but runs INT8 in the chosen mix, so the final exclusion list lacks it (the case that
    # raised KeyError('a') and silently sent OpenVINO to the base scope); "b" is in the mix only; "c" is neither.
    report = SimpleNamespace(
        sensitivity=[{"node": "a", "kept_fp32": True}, {"node": "c", "kept_fp32": False}],
        excluded={"b": "search"}, search={"chosen": "mix-1", "kept": ["b"]},
        sensitivity_note="2 tested", cache="miss")

    def fake(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return report

    monkeypatch.setattr(quantize_mod, "quantize_onnx_int8", fake)
    nodes, note = sensitive_onnx_nodes(tmp_path / "m.onnx", None, None)
    assert set(nodes) == {"a", "b"}
    assert "2 ONNX nodes kept float" in note

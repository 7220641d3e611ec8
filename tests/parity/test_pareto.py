"""The INT8 search's measured points reach the parity report: read from both engines' records, drawn, tabled."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import cv2
import numpy as np

from heatdeploy.parity.pareto import measured_points, pareto_section

ORT_RECORD = {"search": {
    "chosen": "mix-3", "budget": {"mean_px": 0.5, "flip_rate": 0.01, "margin": 0.5},
    "points": [
        {"name": "int8-all", "kept": 0, "mean_px": 2.4, "flip_rate": 0.05, "holds": False, "latency_ms": 9.0},
        {"name": "mix-3", "kept": 7, "mean_px": 0.2, "flip_rate": 0.0, "holds": True, "latency_ms": 11.0},
        {"name": "fp32", "kept": 88, "mean_px": 0.0, "flip_rate": 0.0, "holds": True, "latency_ms": 14.0},
        {"name": "untimed", "kept": 3, "mean_px": 0.3, "flip_rate": 0.0, "holds": True, "latency_ms": None},
    ]}}
OV_RECORD = {"float_part": {"chosen": "f32", "points": [
    {"name": "fp32@f32", "ms": 14.0, "mean_hm_px": 0.0, "existence_agreement": 1.0, "holds": True},
    {"name": "int8@f32", "ms": 14.5, "mean_hm_px": 0.17, "existence_agreement": 1.0, "holds": True},
    {"name": "int8@bf16", "ms": 9.8, "mean_hm_px": 1.7, "existence_agreement": 0.95, "holds": False},
]}}


def test_points_from_the_ort_search_and_the_openvino_float_part() -> None:
    pts, limit, source = measured_points(ORT_RECORD)
    assert [p.name for p in pts if p.chosen] == ["mix-3"] and limit == 0.25 and "ONNX Runtime" in source
    assert {p.name: p.kept for p in pts}["mix-3"] == 7
    pts, limit, source = measured_points(OV_RECORD)
    assert [p.name for p in pts if p.chosen] == ["int8@f32"] and limit is None and "OpenVINO" in source
    assert abs({p.name: p.flip_rate for p in pts}["int8@bf16"] - 0.05) < 1e-9
    assert measured_points(None) == ([], None, "") and pareto_section({"method": "minmax"}) == ""


def test_section_draws_every_timed_point_and_tables_them_fastest_first() -> None:
    page = pareto_section(ORT_RECORD)
    rows = re.findall(r"<tr><td>([\w-]+)", page)
    assert rows == ["int8-all", "mix-3", "fp32"]  # by ms; the untimed point cannot be placed
    assert "<b>(chosen)</b>" in page
    uri = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (320, 640, 3)
    chosen = np.all(img == (200, 40, 220), axis=2)  # the chosen point's colour is on the chart
    assert chosen.sum() > 20


def test_parity_report_shows_the_candidates_search(parity_bundle: Path, tmp_path: Path) -> None:
    from heatdeploy.bundle import Bundle
    from heatdeploy.parity import parity_command

    root = tmp_path / "b"
    shutil.copytree(parity_bundle, root)
    b = Bundle.load(root)
    b.artifact("onnx-int8-broken").calibration = ORT_RECORD
    b.save()
    parity_command(root, "onnx-int8-broken", out=tmp_path / "rep", limit=4)
    page = (tmp_path / "rep" / "parity.html").read_text()
    assert "INT8 search: what each measured mix costs" in page and "mix-3" in page

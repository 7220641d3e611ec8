"""The INT8 search's measured points (latency vs keypoint error) for the parity report.

The gate says whether the deployed mix holds; the points say what it cost: every mix the search timed,
FP32, which ones held the budget and which was chosen, so a user sees how much speed the budget left on
the table (and whether a looser tolerance would buy any). Read from the candidate's calibration record:
the ONNX Runtime search (``search.points``) or OpenVINO's measured float part (``float_part.points``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from heatdeploy.parity.charts import CAND_COLOUR, LOST_COLOUR, REF_COLOUR, png_data_uri, scatter_chart

_GREY = (150, 150, 150)


@dataclass(frozen=True)
class MeasuredPoint:
    name: str
    ms: float
    mean_px: float  # mean heatmap-px displacement vs FP32 on the frames the search used
    flip_rate: float  # share of existence decisions flipped
    holds: bool
    chosen: bool = False
    kept: int | None = None  # layers kept FP32 beyond the base rule


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def measured_points(calibration: dict[str, Any] | None) -> tuple[list[MeasuredPoint], float | None, str]:
    """(points, the mean-px limit the search aimed at, where they come from); no points when none were timed."""
    cal = calibration or {}
    search = cal.get("search") or {}
    if isinstance(search.get("points"), list):
        budget = search.get("budget") or {}
        limit = _num(budget.get("mean_px")) * _num(budget.get("margin", 1.0))
        pts = [MeasuredPoint(str(p.get("name")), _num(p.get("latency_ms")), _num(p.get("mean_px")),
                             _num(p.get("flip_rate")), bool(p.get("holds")), p.get("name") == search.get("chosen"),
                             p.get("kept") if isinstance(p.get("kept"), int) else None)
               for p in search["points"] if isinstance(p, dict)]
        return pts, limit if limit == limit else None, "ONNX Runtime mix search (calibration frames)"
    fp = cal.get("float_part") or {}
    if isinstance(fp.get("points"), list):
        chosen = f"int8@{fp.get('chosen')}"
        pts = [MeasuredPoint(str(p.get("name")), _num(p.get("ms")), _num(p.get("mean_hm_px")),
                             1.0 - _num(p.get("existence_agreement")), bool(p.get("holds")), p.get("name") == chosen)
               for p in fp["points"] if isinstance(p, dict)]
        return pts, None, "OpenVINO float part (held-back calibration frames)"
    return [], None, ""


def pareto_section(calibration: dict[str, Any] | None) -> str:
    """The report's HTML for the measured points: a latency-vs-displacement chart and a table."""
    pts, limit, source = measured_points(calibration)
    pts = [p for p in pts if p.ms == p.ms]  # untimed points cannot be placed
    if not pts:
        return ""

    def colour(p: MeasuredPoint) -> tuple[int, int, int]:
        return CAND_COLOUR if p.chosen else REF_COLOUR if p.holds else _GREY if p.mean_px == 0 else LOST_COLOUR

    marks = [(p.ms, p.mean_px, p.name + (" (chosen)" if p.chosen else ""), colour(p), p.holds) for p in pts]
    chart = scatter_chart(marks, "measured mixes: latency vs displacement", "ms per frame (batch 1, 1 thread)",
                          "mean hm px vs FP32", hline=limit, hline_label="search budget" if limit else "")
    rows = "".join(
        f"<tr><td>{html.escape(p.name)}{' <b>(chosen)</b>' if p.chosen else ''}</td><td class='n'>{p.ms:.2f}</td>"
        f"<td class='n'>{p.mean_px:.4f}</td><td class='n'>{p.flip_rate:.2%}</td>"
        f"<td class='n'>{'' if p.kept is None else p.kept}</td><td>{'holds' if p.holds else 'over'}</td></tr>"
        for p in sorted(pts, key=lambda p: p.ms))
    return (f"<h2>INT8 search: what each measured mix costs</h2><p class='muted'>{html.escape(source)}; filled: "
            "holds the budget; the chosen mix is the fastest that also held on held-back frames.</p>"
            f'<img src="{png_data_uri(chart)}" alt="latency vs displacement">'
            "<table><tr><th>mix</th><th>ms</th><th>mean hm px</th><th>flips</th><th>layers kept FP32</th>"
            f"<th></th></tr>{rows}</table>")


__all__ = ["MeasuredPoint", "measured_points", "pareto_section"]

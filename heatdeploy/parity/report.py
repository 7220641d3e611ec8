"""The parity report: one self-contained HTML page (tables, charts, worst-case overlays), ``parity.json``,
the summary recorded in the bundle's manifest, and the CLI's printed tables.

Charts are drawn with OpenCV into PNGs and embedded as base64, so the page needs no plotting library,
no network and no sibling files: it can be attached to a CI run or mailed as it is.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from heatdeploy.bundle import Bundle
from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import atomic_write_text
from heatdeploy.parity.charts import (
    BAR_COLOUR,
    CAND_COLOUR,
    GAINED_COLOUR,
    LINK_COLOUR,
    LOST_COLOUR,
    REF_COLOUR,
    _nice,
    hbar_chart,
    png_data_uri,
    vbar_chart,
)
from heatdeploy.parity.pareto import pareto_section
from heatdeploy.parity.result import bundle_root, fmt
from heatdeploy.parity.tensors import HIST_EDGES

if TYPE_CHECKING:
    from heatdeploy.parity.result import ParityDetail, ParityResult, WorstImage

_OVERLAY_SIDE = 384  # small images are enlarged to about this long side so sub-pixel moves show


def overlay(image: np.ndarray, ref_pts: np.ndarray, ref_present: np.ndarray, cand_pts: np.ndarray,
            cand_present: np.ndarray, skeleton: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """FP32 (green) and candidate (magenta) keypoints on one image, a line from each FP32 point to its
    candidate; a red ring where the candidate drops a keypoint FP32 has, orange where it adds one."""
    h, w = image.shape[:2]
    s = max(1.0, _OVERLAY_SIDE / max(h, w))
    canvas = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_LINEAR) \
        if s > 1.0 else image.copy()
    canvas = (canvas.astype(np.float32) * 0.75 + 64).astype(np.uint8)  # dimmed so the marks stand out

    def to_fixed(p: np.ndarray) -> tuple[int, int]:
        q = np.clip(np.nan_to_num((np.asarray(p, np.float64) + 0.5) * s - 0.5, nan=-1e4), -1e4, 1e4)
        return int(round(q[0] * 16)), int(round(q[1] * 16))

    rp, cp = np.asarray(ref_present, bool), np.asarray(cand_present, bool)
    for a, b in skeleton:  # drawing the FP32 pose for orientation
        if a < len(rp) and b < len(rp) and rp[a] and rp[b]:
            cv2.line(canvas, to_fixed(ref_pts[a]), to_fixed(ref_pts[b]), (120, 200, 110), 1, cv2.LINE_AA, 4)
    for j in range(len(rp)):  # drawing, a few marks per keypoint
        if rp[j] and cp[j]:
            cv2.line(canvas, to_fixed(ref_pts[j]), to_fixed(cand_pts[j]), LINK_COLOUR, 1, cv2.LINE_AA, 4)
    for j in range(len(rp)):
        if rp[j]:
            cv2.circle(canvas, to_fixed(ref_pts[j]), 4 * 16, REF_COLOUR, -1, cv2.LINE_AA, 4)
            if not cp[j]:
                cv2.circle(canvas, to_fixed(ref_pts[j]), 9 * 16, LOST_COLOUR, 2, cv2.LINE_AA, 4)
        if cp[j]:
            cv2.circle(canvas, to_fixed(cand_pts[j]), 3 * 16, CAND_COLOUR, -1, cv2.LINE_AA, 4)
            if not rp[j]:
                cv2.circle(canvas, to_fixed(cand_pts[j]), 9 * 16, GAINED_COLOUR, 2, cv2.LINE_AA, 4)
    return canvas


# --- the page --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin:10px 0}
.pass{background:#e3f4e1;color:#1d5e18} .fail{background:#fbe3e3;color:#8a1414} .skipped{color:#8a6d00}
.grid{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0;font-size:12px;max-width:400px}
figcaption{margin-top:4px} .legend span{display:inline-block;margin-right:14px} .muted{color:#777}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = ' class="n"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{v if isinstance(v, _Raw) else _f(v) if i >= numeric_from else _e(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Raw(str):
    """Trusted HTML for a table cell."""


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _displacement_histogram(result: ParityResult) -> str | None:
    d = result.detail
    if d is None:
        return None
    vals = d.comparison.displacement_hm[d.comparison.mask]
    if vals.size == 0:
        return None
    finite = vals[np.isfinite(vals)]
    hi = max(2.0, float(np.percentile(finite, 99)) if finite.size else 2.0)
    hi = float(np.ceil(min(hi, 64.0) * 4) / 4)
    bins = 32
    edges = np.linspace(0.0, hi, bins + 1)
    counts = np.append(np.histogram(vals[vals < hi], bins=edges)[0], int((vals >= hi).sum()))
    labels = [_nice(e) for e in edges[:-1]] + [f">{_nice(hi)}"]
    img = vbar_chart(counts, labels, f"displacement from FP32 ({vals.size} keypoints FP32 calls present)",
                     "heatmap px (last bar: beyond the axis)", label_every=4)
    return _img(png_data_uri(img), "displacement histogram")


def _tensor_histogram(result: ParityResult) -> str | None:
    d = result.detail
    if d is None or (d.heatmap_error_hist.sum() + d.heatmap_error_zeros) == 0:
        return None
    counts = np.concatenate([[d.heatmap_error_zeros], d.heatmap_error_hist])
    labels = ["0"] + [f"1e{int(np.log10(e))}" if float(np.log10(e)).is_integer() else "" for e in HIST_EDGES[:-1]]
    img = vbar_chart(counts, labels, "|candidate - FP32| over every heatmap value",
                     "absolute error (first bar: exactly 0; half-decade bins)")
    return _img(png_data_uri(img), "heatmap error histogram")


def _per_keypoint_charts(result: ParityResult) -> str:
    rows = result.per_keypoint
    names = [r.name for r in rows]
    mean = np.array([r.mean_displacement_hm for r in rows], np.float64)
    limit = result.tolerance.limits.get("max_mean_displacement_hm")
    a = hbar_chart(names, [(mean, BAR_COLOUR, "")], "mean displacement per keypoint (heatmap px)", limit,
                   f"limit {_nice(limit)}" if limit is not None else "")
    lost = np.array([r.flips_lost for r in rows], np.float64)
    gained = np.array([r.flips_gained for r in rows], np.float64)
    b = hbar_chart(names, [(lost, LOST_COLOUR, "present->absent"), (gained, GAINED_COLOUR, "absent->present")],
                   "existence flips per keypoint (images)")
    return '<div class="grid">' + _img(png_data_uri(a), "mean displacement per keypoint") + \
        _img(png_data_uri(b), "existence flips per keypoint") + "</div>"


def _worst_section(result: ParityResult, title: str, items: Sequence[WorstImage], cache: dict[int, str]) -> str:
    if not items:
        return f"<h3>{_e(title)}</h3><p class='muted'>none: no image differs in this respect</p>"
    d = result.detail
    parts = [f"<h3>{_e(title)}</h3>"]
    parts.append(_table(["image", "mean disp (hm px)", "max disp (hm px)", "flips", "dropped", "added",
                         "heatmap SNR dB"],
                        [[w.name, w.mean_displacement_hm, w.max_displacement_hm, w.flips,
                          _Raw(_e(", ".join(w.lost)) or "–"), _Raw(_e(", ".join(w.gained)) or "–"),
                          w.heatmap_snr_db] for w in items]))
    if d is None:
        return "\n".join(parts)
    figs = []
    shown = []
    for w in items:
        if w.index in cache:  # drawn in an earlier section: embed each image once, keep the page small
            shown.append(w.name)
            continue
        image = d.data.load(w.index, w.index + 1)[0]
        ov = overlay(image, *_image_keypoints(d, w.index))
        cache[w.index] = png_data_uri(ov)
        cap = (f"{_e(w.name)}: mean {_f(w.mean_displacement_hm, 3)} hm px, max {_f(w.max_displacement_hm, 3)}, "
               f"{w.flips} flip(s)")
        figs.append(f"<figure>{_img(cache[w.index], w.name)}<figcaption>{cap}</figcaption></figure>")
    if shown:
        parts.append(f"<p class='muted'>drawn above: {_e(', '.join(shown))}</p>")
    parts.append('<div class="grid">' + "".join(figs) + "</div>")
    return "\n".join(parts)


def _floor_rule(floor: dict[str, float]) -> str:
    return f"; floor rule: {', '.join(f'{k} {v:g}' for k, v in floor.items())}" if floor else ""


def render_html(result: ParityResult) -> str:
    """The whole report page as a string."""
    km = result.keypoints
    verdict = "pass" if result.passed else "fail"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in result.reasons)
    ref, cand, tol = result.reference, result.candidate, result.tolerance
    meta = _table(["", ""], [
        ["bundle", result.bundle],
        ["reference", f"{ref.name} ({ref.format}, {ref.precision}, {ref.backend}) sha256 {ref.sha256[:12]}…"],
        ["candidate", f"{cand.name} ({cand.format}, {cand.precision}, {cand.backend}) sha256 {cand.sha256[:12]}…"],
        ["data", f"{result.data['kind']}: {result.data['source']} — {result.data['images']} images"
                 + (f" ({result.data['note']})" if result.data.get("note") else "")],
        ["tolerance", f"{tol.name} ({tol.source}) {tol.description}" + _floor_rule(tol.floor)],
        ["checked", f"{result.created}, {result.seconds:.1f} s"],
    ], numeric_from=99)
    checks = _table(["check", "value", "limit", "result"], [
        [c.label, c.value, _Raw(("&le; " if c.bound == "max" else "&ge; ") + _f(c.limit)),
         _Raw(f'<span class="{c.status}">{c.status}</span>')] for c in result.checks])
    fig_rows: list[list[Any]] = [
        ["images / keypoints / compared (FP32 present)", _Raw(f"{km.images} / {km.keypoints_total} / "
                                                              f"{km.keypoints_compared}")],
        ["displacement mean / p95 / max (heatmap px)", _Raw(f"{_f(km.mean_displacement_hm)} / "
                                                            f"{_f(km.p95_displacement_hm)} / "
                                                            f"{_f(km.max_displacement_hm)}")],
        ["displacement mean / p95 / max (input px)", _Raw(f"{_f(km.mean_displacement_in)} / "
                                                          f"{_f(km.p95_displacement_in)} / "
                                                          f"{_f(km.max_displacement_in)}")],
        *([f"share within {t} heatmap px of FP32", v] for t, v in km.within_hm.items()),
        ["heatmap argmax agreement", km.argmax_agreement],
        [f"PCK@{km.pck_alpha:g} vs FP32", km.pck_vs_reference],
        ["existence agreement", km.existence_agreement],
        ["existence flips present→absent / absent→present", _Raw(f"{km.flips_lost} / {km.flips_gained}")],
        ["worst keypoint flip rate", _Raw(f"{_f(km.worst_flip_rate)} ({_e(km.worst_flip_keypoint)})")],
    ]
    if km.truth_keypoints is not None:
        fig_rows += [
            [f"PCK@{km.pck_alpha:g} vs truth (visible keypoints: {km.truth_keypoints}) FP32 / candidate",
             _Raw(f"{_f(km.pck_truth_reference)} / {_f(km.pck_truth_candidate)}")],
            ["PCK drop (points)", km.pck_drop_points],
            ["existence accuracy vs truth FP32 / candidate",
             _Raw(f"{_f(km.existence_accuracy_reference)} / {_f(km.existence_accuracy_candidate)}")],
        ]
    figures = _table(["metric", "value"], fig_rows)
    tensors = _table(["output", "shape", "dtype ref / cand", "max abs", "mean abs", "rmse", "cosine", "SNR dB",
                      "non-finite"],
                     [[t.name, _Raw(_e(t.shape)), _Raw(f"{_e(t.reference_dtype)} / {_e(t.candidate_dtype)}"),
                       t.max_abs_error, t.mean_abs_error, t.rmse, _Raw(_f(t.cosine, 7)), t.snr_db, t.nonfinite]
                      for t in result.tensors])
    within_cols = list(km.within_hm)
    per_kp = _table(["keypoint", "compared", "mean (hm px)", "p95", "max",
                     *(f"≤{t} px" for t in within_cols), "argmax agree", "existence agree", "present→absent",
                     "absent→present", "PCK truth FP32", "PCK truth cand"],
                    [[r.name, r.compared, r.mean_displacement_hm, r.p95_displacement_hm, r.max_displacement_hm,
                      *(r.within_hm[t] for t in within_cols), r.argmax_agreement, r.existence_agreement,
                      r.flips_lost, r.flips_gained, r.pck_truth_reference, r.pck_truth_candidate]
                     for r in result.per_keypoint])
    hist_d = _displacement_histogram(result) or "<p class='muted'>no keypoint to compare</p>"
    hist_t = _tensor_histogram(result) or ""
    cache: dict[int, str] = {}
    legend = ('<p class="legend"><span style="color:#28aa3c">● FP32</span>'
              '<span style="color:#dc28c8">● candidate</span><span style="color:#e0a800">— displacement</span>'
              '<span style="color:#e62828">◯ candidate drops a keypoint</span>'
              '<span style="color:#ff8c00">◯ candidate adds one</span></p>')
    worst = (legend + _worst_section(result, "by mean displacement", result.worst_by_displacement, cache)
             + _worst_section(result, "by existence flips", result.worst_by_flips, cache))
    title = f"Parity {cand.name} vs {ref.name}: {'PASS' if result.passed else 'FAIL'}"
    floor = (f"<p>{_e(result.floor.line(result.keypoints.mean_displacement_hm))}</p>"
             if result.floor is not None else "")
    body = f"""<h1>{_e(title)}</h1>
<div class="verdict {verdict}">{_e(result.headline())}{f'<ul>{reasons}</ul>' if reasons else ''}</div>
{meta}
<h2>Checks ({_e(tol.name)})</h2>
{checks}
<h2>Keypoints (on keypoints FP32 calls present)</h2>
{figures}
{floor}
<div class="grid">{hist_d}{hist_t}</div>
{pareto_section(_candidate_calibration(result))}
<h2>Tensors</h2>
{tensors}
<h2>Per keypoint</h2>
{_per_keypoint_charts(result)}
{per_kp}
<h2>Worst images</h2>
{worst}
"""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n")


def _candidate_calibration(result: ParityResult) -> dict[str, Any] | None:
    """The candidate's calibration record in its bundle (its search points), or None when it has none."""
    try:
        cal = Bundle.load(result.bundle, verify=False).artifact(result.candidate.name).calibration
    except HeatdeployError:
        return None
    return cal if isinstance(cal, dict) else None


def write_html(result: ParityResult, path: str | Path) -> Path:
    """Write the report atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_html(result))
    return path


def _image_keypoints(d: ParityDetail, index: int) -> tuple[Any, Any, Any, Any, tuple[tuple[int, int], ...]]:
    """Reference and candidate keypoints of one image; multi-instance rows are drawn as one long skeleton."""
    if d.row_image is None:
        return (d.reference.coords_img[index], d.reference.present[index], d.candidate.coords_img[index],
                d.candidate.present[index], d.skeleton)
    from heatdeploy.runtime.draw import instance_skeleton

    rows = np.flatnonzero(d.row_image == index)
    edges = instance_skeleton(d.skeleton, d.reference.present.shape[1], rows.size)
    return (d.reference.coords_img[rows].reshape(-1, 2), d.reference.present[rows].reshape(-1),
            d.candidate.coords_img[rows].reshape(-1, 2), d.candidate.present[rows].reshape(-1), edges)


# --- writing, recording, printing ---------------------------------------------------------------


def write_outputs(result: ParityResult, out: str | Path) -> dict[str, str]:
    """``parity.json`` and the self-contained ``parity.html`` under ``out`` (atomic writes)."""
    out = Path(out)
    html_path = out / "parity.html"
    json_path = out / "parity.json"
    result.files = {"json": str(json_path), "html": str(html_path)}
    write_html(result, html_path)
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2))
    return result.files


def record_in_manifest(bundle: str | Path | Bundle, result: ParityResult) -> Path:
    """Store the summary as ``parity`` of the candidate artifact and save the manifest.

    The bundle is re-read just before writing so a concurrent edit of another artifact is not lost.
    The sha256 in the summary ties the verdict to the exact candidate file it checked.
    """
    root = bundle_root(bundle)
    b = Bundle.load(root, verify=False)
    art = b.artifact(result.candidate.name)
    art.parity = result.summary()
    return b.save()


def print_result(result: ParityResult, console: Any = None) -> None:
    """The verdict, the checks and the headline figures as rich tables (for the CLI)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    checks = Table(title=f"parity {result.candidate.name} vs {result.reference.name} — tolerance "
                         f"{result.tolerance.name}")
    for col in ("check", "value", "limit", "result"):
        checks.add_column(col, justify="left" if col == "check" else "right")
    for c in result.checks:
        style = {"pass": "green", "fail": "red", "skipped": "yellow"}[c.status]
        bound = "<=" if c.bound == "max" else ">="
        checks.add_row(c.label, fmt(c.value), f"{bound} {fmt(c.limit)}", f"[{style}]{c.status}[/{style}]")
    console.print(checks)
    km = result.keypoints
    figs = Table(title="figures")
    figs.add_column("metric")
    figs.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("images / keypoints compared", f"{km.images} / {km.keypoints_compared}"),
        ("displacement mean / p95 / max (heatmap px)",
         f"{fmt(km.mean_displacement_hm)} / {fmt(km.p95_displacement_hm)} / {fmt(km.max_displacement_hm)}"),
        ("displacement mean / p95 / max (input px)",
         f"{fmt(km.mean_displacement_in)} / {fmt(km.p95_displacement_in)} / {fmt(km.max_displacement_in)}"),
        *((f"within {t} heatmap px of FP32", fmt(v)) for t, v in km.within_hm.items()),
        ("heatmap argmax agreement", fmt(km.argmax_agreement)),
        (f"PCK@{km.pck_alpha:g} vs FP32", fmt(km.pck_vs_reference)),
        ("existence agreement", fmt(km.existence_agreement)),
        ("flips present->absent / absent->present", f"{km.flips_lost} / {km.flips_gained}"),
    ]
    if km.pck_drop_points is not None:
        rows.append((f"PCK@{km.pck_alpha:g} vs truth FP32 / candidate / drop (points)",
                     f"{fmt(km.pck_truth_reference)} / {fmt(km.pck_truth_candidate)} / "
                     f"{fmt(km.pck_drop_points)}"))
    rows += [(f"{t.name}: SNR dB / cosine / max abs", f"{fmt(t.snr_db)} / {t.cosine:.7g} / "
              f"{fmt(t.max_abs_error)}") for t in result.tensors]
    for name, value in rows:
        figs.add_row(name, str(value))
    console.print(figs)
    if result.floor is not None:
        console.print(result.floor.line(km.mean_displacement_hm), highlight=False, soft_wrap=True)
    colour = "green" if result.passed else "red"
    console.print(f"[{colour}]{result.headline()}[/{colour}]", highlight=False, soft_wrap=True)
    for r in result.reasons:
        console.print(f"  - {r}", highlight=False, soft_wrap=True)


__all__ = ["print_result", "record_in_manifest", "render_html", "write_html", "write_outputs"]

"""FP32 ONNX -> ONNX Runtime INT8 (QDQ), heatmap-aware, with a report of what was done and what runs INT8.

Pipeline: ``quant_pre_process`` (shape inference + basic fusion) -> streaming calibration with ORT's
calibrator (or a cache hit) -> FP32 exclusions (outputs never quantized; heatmap-aware defaults;
measured per-layer sensitivity) -> ``quantize_static`` from the measured ranges -> ORT-optimised op
summary, engine-neutral ranges and the final model's keypoint agreement with FP32 -> atomic write.

Defaults and why:

- QDQ, per-channel symmetric INT8 weights, symmetric activations (the ranges then mean the same to
  TensorRT, whose INT8 is symmetric).
- Activations ``auto``: uint8 on x86-64, int8 on ARM, as the installed ORT's ``quantize_static`` docstring
  advises. Measured on the reference net (2-core AVX512-VNNI box, 1 thread, batch 1, 256x192): int8
  activations fused only 6 of the 15 quantizable convs into QLinearConv, left 12 Transposes and ran
  18.8 ms vs 19.8 ms FP32; uint8 fused 15/15 with 2 Transposes and ran 11.0 ms.
- Method ``minmax``. Measured on the trained reference net (128 synthetic calibration images, 64 held-out):
  min-max moved keypoints 0.10 px mean (heatmap px) with 0.3% existence flips; ORT's entropy (2048/256
  bins) clips ReLU outputs to about a third of their range, cutting exactly the large activations that
  make heatmap peaks: 1.38 px mean and 8% flips, and its threshold search took 67 s against 6 s;
  percentile 99.99 gave 0.16 px mean but a 35 px outlier. Entropy and percentile stay available.
- ``keep_fp32="auto"``: the base rule plus a per-layer sensitivity pass, capped in layers and time. The
  time budget is the real bound: capping BlazePose's 91 layers at 64 left untested the one conv whose
  INT8 alone flips its pose flag on 17% of frames; testing all 91 (46 s instead of 36 s) took it from
  5.36 to 4.74 px and from 10 to 5 of 64 frames flipped, at the same speed (1.02-1.04x ORT FP32).
  The candidates are the compute layers and the ops ORT re-quantizes with a scale of their own
  (``graph.REQUANTIZING_OPS``): BlazePose's residual Add feeding its heads alone flipped two non-person
  frames to persons; testing the Adds too (119 candidates, 56 s) took it to 0.92 px and no flip.
- Method ``auto``: min/max and mean-of-per-sample min/max are both built and measured on the sample;
  :func:`choice_scores` weighs keypoints and existence drift as ratios.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from heatdeploy import __version__
from heatdeploy.calibration import SYMMETRIC_ACTIVATIONS
from heatdeploy.calibration.cache import CalibrationCache, cache_key
from heatdeploy.calibration.collect import (
    METHODS,
    CalibOptions,
    calibrated_op_types,
    collect_ranges,
    first_batches,
    rebatch,
    tee_batches,
)
from heatdeploy.calibration.graph import (
    COMPUTE_OPS,
    PASS_THROUGH_OPS,
    REQUANTIZING_OPS,
    OpsSummary,
    compute_layers,
    float_islands,
    name_nodes,
    output_tails,
    saturating_nodes,
    summarize_ops,
)
from heatdeploy.calibration.ranges import extract_ranges
from heatdeploy.calibration.search import (
    SEARCH_VERSION,
    SearchBudget,
    fastest_mix,
    grouped_convs,
    layer_macs,
    profile_pair,
)
from heatdeploy.calibration.sensitivity import LayerResult, Outputs, keypoint_agreement, run_model, sensitivity_pass
from heatdeploy.calibration.session import METADATA_KEY as ORT_OPTIONS_KEY
from heatdeploy.calibration.session import int8_session, pin_float_layers, self_contained_check
from heatdeploy.calibration.sources import CalibrationError, CalibrationSource
from heatdeploy.fsutil import atomic_copy, sha256_file, working_dir
from heatdeploy.spec import METADATA_KEY, ModelSpec

log = logging.getLogger(__name__)

KEEP_MODES = ("auto", "base", "none")
ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


@dataclass
class QuantizeReport:
    """What was quantized, how, from which data, what stayed FP32 and why, and what ORT runs INT8."""

    out_path: str
    method: str
    options: dict[str, Any]
    excluded: dict[str, str]  # node -> why it stays FP32
    sensitivity: list[dict[str, Any]]
    sensitivity_note: str
    calibration: dict[str, Any]  # the data record
    ops: dict[str, Any]  # OpsSummary after ORT optimisation
    ranges: dict[str, Any]  # engine-neutral calibration.json content
    final: dict[str, Any] | None  # keypoint agreement of the INT8 model with FP32
    cache: str  # "miss", "ranges" (calibration skipped) or "result" (everything skipped)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    self_contained: dict[str, Any] | None = None  # default ORT session vs WeightBiasQuantization disabled
    search: dict[str, Any] | None = None  # the latency-measured mix search: chosen, Pareto points, profile

    def summary(self) -> str:
        """One line: method, data, op summary, FP32 count, agreement."""
        text = (f"INT8 {self.method} on {self.calibration.get('count')} {self.calibration.get('kind')} "
                f"samples: {self.ops.get('summary', '')}; {len(self.excluded)} nodes FP32")
        if self.final:
            text += (f"; vs FP32 {self.final['mean_px']:.3f} px mean, {self.final['max_px']:.2f} px max, "
                     f"existence flips {self.final['flip_rate']:.1%}")
        if self.search:
            text += f"; {self.search['note']}"
        if self.cache != "miss":
            text += f" (cache hit: {self.cache})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_manifest(self) -> dict[str, Any]:
        """The bundle's calibration record: everything but the per-tensor table (in calibration.json)."""
        d = self.to_dict()
        d["ranges"] = {k: v for k, v in self.ranges.items() if k != "tensors"}
        d["ranges"]["tensors"] = len(self.ranges.get("tensors", {}))
        return d


def default_activation_type() -> tuple[str, str]:
    """uint8 on x86-64 (ORT's x86 kernels fuse U8S8 QDQ), int8 elsewhere (ARM prefers S8S8)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "uint8", f"{machine}: ORT fuses uint8-activation QDQ into QLinearConv on x86"
    return "int8", f"{machine}: ORT's ARM kernels prefer symmetric int8 activations"


def quantize_onnx_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    spec: ModelSpec,
    source: CalibrationSource,
    *,
    method: str = "auto",
    percentile: float = 99.99,
    per_channel: bool = True,
    keep_fp32: str | Sequence[str] = "auto",
    calib_batch: int = 8,
    activation_type: str = "auto",
    symmetric_activations: bool = SYMMETRIC_ACTIVATIONS,
    num_bins: int = 2048,
    num_quantized_bins: int = 256,
    sensitivity_threshold: float = 0.1,
    sensitivity_flip_rate: float = 0.01,
    sensitivity_batches: int = 2,
    sensitivity_max_layers: int = 256,
    sensitivity_budget_s: float | None = None,
    budget_s: float = 300.0,
    search: bool = True,
    tolerance: str | Path | SearchBudget = "default",
    search_holdout_batches: int = 4,
    progress: Callable[[str], None] | None = None,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
) -> QuantizeReport:
    """Quantize ``fp32_path`` to ``out_path`` (QDQ INT8) from ``source``; nothing is written on failure.

    ``keep_fp32``: "auto" = base rule + per-layer sensitivity (keeps FP32 the layers whose INT8 alone
    moves keypoints more than ``sensitivity_threshold`` heatmap px on average, or flips existence on more
    than ``sensitivity_flip_rate``); "base" = the base rule only (every output's head tail from the last
    conv on, Sigmoid/Softmax); "none" = only what keeps graph outputs float; a list of node names = the
    base rule plus those nodes. ``sensitivity_batches`` calibration batches also measure the final model
    against FP32 (0 skips both).

    ``search`` (with "auto"): after the pass, the fastest mix holding the parity ``tolerance``'s keypoint
    budget is searched on measured latency (:mod:`heatdeploy.calibration.search`) and decides what stays
    FP32; ``search_holdout_batches`` further batches check it. ``budget_s`` bounds pass + search (the pass
    gets ``sensitivity_budget_s``, by default 60% of it); ``progress`` gets one line per step.
    """
    say = progress or (lambda m: log.info("%s", m))
    sens_budget = float(sensitivity_budget_s) if sensitivity_budget_s is not None else 0.6 * float(budget_s)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    choose = method == "auto"
    calib = CalibOptions("minmax" if choose else method, percentile, num_bins, num_quantized_bins).validate()
    mode, user_nodes = _keep_mode(keep_fp32)
    act_name, act_reason = _activation_type(activation_type)
    if not fp32_path.is_file():
        raise CalibrationError(f"{fp32_path}: model file not found; export the FP32 ONNX model first")
    model_sha = sha256_file(fp32_path)
    cache = CalibrationCache(cache_dir) if use_cache else None

    with tempfile.TemporaryDirectory(prefix="heatdeploy-int8-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        pre_path, pre_note = _pre_process(fp32_path, work)
        timings["pre_process_s"] = time.perf_counter() - t0
        model = onnx.load(str(pre_path))
        input_name, static_batch = _check_io(model, spec, fp32_path)
        _check_names(model, user_nodes)
        batch = static_batch or calib_batch
        options = {
            **(calib.to_dict() if not choose else {"method": "auto", "choice_rule": CHOICE_RULE}), "format": "QDQ",
            "weights": "int8 symmetric", "per_channel": per_channel,
            "activations": act_name, "activation_reason": act_reason,
            "symmetric_activations": symmetric_activations, "calib_batch": batch, "pre_process": pre_note,
            "keep_fp32": mode if not user_nodes else sorted(user_nodes),
            "onnxruntime": ort.__version__,
            "float_layers": "pinned in the file (default ORT session options keep them FP32)",
        }
        sens_opts = {"threshold_px": sensitivity_threshold, "flip_rate": sensitivity_flip_rate,
                     "batches": sensitivity_batches, "max_layers": sensitivity_max_layers,
                     "budget_s": sens_budget, "op_types": [*COMPUTE_OPS, *REQUANTIZING_OPS]}
        if mode == "auto":
            options["sensitivity"] = sens_opts
            if search:
                budget = tolerance if isinstance(tolerance, SearchBudget) else SearchBudget.from_tolerance(tolerance)
                options["search"] = {"budget": asdict(budget), "budget_s": float(budget_s), "version": SEARCH_VERSION,
                                     "holdout_batches": int(search_holdout_batches)}

        def ranges_key(calib_id: Any) -> str:
            return cache_key(kind="ranges", onnxruntime=ort.__version__, model=model_sha, pre=pre_note,
                             data=source.fingerprint(), calib=calib_id, batch=batch)

        requested = calib.to_dict() if not choose else "auto"
        result_key = cache_key(kind="result", ranges=ranges_key(requested), options=options, spec=spec.to_dict(),
                               sens=sens_opts, heatdeploy=__version__)
        if cache is not None:
            hit = cache.load_result(result_key)
            if hit is not None:
                atomic_copy(hit.model_path, out_path)
                report = QuantizeReport(**hit.report)
                report.out_path, report.cache = str(out_path), "result"
                report.timings = {"total_s": time.perf_counter() - t_start}
                return report

        # --- ranges: cached, or measured one batch at a time ----------------------------------------
        sample: list[np.ndarray] = []
        k = max(0, int(sensitivity_batches))
        timings["calibrate_s"] = 0.0

        def measure(opts: CalibOptions, dest: Path) -> tuple[dict[str, tuple[float, float]], dict[str, Any], str]:
            key = ranges_key(opts.to_dict())
            cached = cache.load_ranges(key) if cache is not None else None
            if cached is not None:
                shutil.copyfile(cached.tensors_path, dest)
                return cached.observed, cached.meta.get("record", {}), "ranges"
            stream = rebatch(tee_batches(source.batches(batch), sample, 0 if sample else k), static_batch)
            got = collect_ranges(pre_path, input_name, stream, opts, dest, work)
            timings["calibrate_s"] += got.seconds
            if cache is not None:
                cache.store_ranges(key, dest, got.observed, {"record": source.record()})
            return got.observed, source.record(), "miss"

        tensors_json = work / "tensors.json"
        observed, record, cache_state = measure(calib, tensors_json)
        if len(sample) < k:
            sample = first_batches(source, batch, static_batch, k)
        held = (first_batches(source, batch, static_batch, k + search_holdout_batches)[k:]
                if mode == "auto" and search and sample and search_holdout_batches > 0 else [])

        # --- what stays FP32 -------------------------------------------------------------------------
        excluded = _base_exclusions(model, mode)
        for name in user_nodes:
            excluded.setdefault(name, "requested (keep_fp32)")

        def quantize_to(path: Path, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> None:
            _quantize(pre_path, path, tensors_json, calib, act=ACTIVATION_TYPES[act_name],
                      per_channel=per_channel, symmetric=symmetric_activations, exclude=exclude, only=only)

        outputs = list(spec.output_names)
        every = [o.name for o in model.graph.output]  # the method choice records every output's error
        reference_all = run_model(pre_path, input_name, sample, every) if sample else []
        reference = [{k: d[k] for k in outputs} for d in reference_all]
        if choose:
            calib, observed, record, cache_state, options["method_choice"] = _choose_method(
                calib, observed, record, cache_state, measure, tensors_json, work, sample, reference_all, spec,
                lambda opts, ranges, path: _quantize(
                    pre_path, path, ranges, opts, act=ACTIVATION_TYPES[act_name], per_channel=per_channel,
                    symmetric=symmetric_activations, exclude=sorted(excluded)),
                lambda path: run_model(path, input_name, sample, every))
        table: list[dict[str, Any]] = []
        sens_note = "not run (keep_fp32 != 'auto')" if mode != "auto" else "not run (no sample batches)"
        base_excluded = dict(excluded)
        if mode == "auto" and sample:
            t0 = time.perf_counter()
            say(f"sensitivity: testing up to {sensitivity_max_layers} layers one at a time "
                f"({sens_budget:.0f} s budget)")
            rows, sens_note = sensitivity_pass(
                [(n.name, n.op_type) for n in compute_layers(model, excluded, COMPUTE_OPS + REQUANTIZING_OPS)],
                lambda node, path: quantize_to(path, only=[node]),
                lambda path: keypoint_agreement(spec, reference, run_model(path, input_name, sample, outputs)),
                work, threshold_px=sensitivity_threshold, flip_threshold=sensitivity_flip_rate,
                max_layers=sensitivity_max_layers, budget_s=sens_budget,
                priority=_layer_priority(model, observed),
            )
            say(f"sensitivity: {sens_note}")
            excluded.update({r.node: _sensitive_reason(r, sensitivity_threshold) for r in rows if r.kept_fp32})
            table = [r.to_dict() for r in rows]
            timings["sensitivity_s"] = time.perf_counter() - t0
        found = None
        if mode == "auto" and sample and search:
            t0 = time.perf_counter()

            def build_mix(kept: Sequence[str], name: str) -> Path:
                ex = {**base_excluded, **{n: "search" for n in kept}}
                ex.update({n: w for n, w in float_islands(model, ex, calibrated_op_types()).items() if n not in ex})
                path = work / f"mix-{''.join(c if c.isalnum() or c in '-_+' else '_' for c in name)}.onnx"
                quantize_to(path, exclude=sorted(ex))
                return path

            held_ref = run_model(pre_path, input_name, held, outputs) if held else []
            found = fastest_mix(
                table, layer_macs(model), build=build_mix,
                evaluate=lambda path: keypoint_agreement(spec, reference, run_model(path, input_name, sample,
                                                                                    outputs)),
                verify=(lambda path: keypoint_agreement(spec, held_ref, run_model(path, input_name, held, outputs)))
                if held else None, fp32_path=fp32_path, input_name=input_name,
                x=sample[0][: static_batch or 1], budget=budget,
                time_budget_s=max(float(budget_s) - timings["sensitivity_s"], 0.2 * float(budget_s)),
                priority=_layer_priority(model, observed), grouped=grouped_convs(model, base_excluded),
                progress=say)
            reasons = {r["node"]: r for r in table}
            excluded = dict(base_excluded)
            excluded.update({n: (_sensitive_reason(LayerResult(**reasons[n]), sensitivity_threshold)
                                 if reasons.get(n, {}).get("kept_fp32") else
                                 f"search: reverted to FP32 to hold the budget ({found.chosen})") for n in found.kept})
            timings["search_s"] = time.perf_counter() - t0

        # --- the model -------------------------------------------------------------------------------
        t0 = time.perf_counter()
        for name, why in float_islands(model, excluded, calibrated_op_types()).items():
            excluded.setdefault(name, why)
        int8_path = work / "int8.onnx"
        quantize_to(int8_path, exclude=sorted(excluded))
        _embed_metadata(int8_path, fp32_path, spec)
        timings["quantize_s"] = time.perf_counter() - t0
        ops = ort_ops_summary(int8_path, work)
        ranges = extract_ranges(int8_path, method=calib.method, data=record, observed=observed)
        final = contained = None
        if sample:
            final = keypoint_agreement(spec, reference, run_model(int8_path, input_name, sample, outputs)).to_dict()
            contained = self_contained_check(int8_path, input_name, sample[:1], every)
        if found is not None:
            found.profile.update(profile_pair(fp32_path, int8_path, input_name, sample[0][: static_batch or 1]))
        notes = [f"wide-range tensors (> {ranges['wide_factor']:.0f}x the median range; candidates for higher "
                 f"precision): {', '.join(w['name'] for w in ranges['wide'][:8])}"] if ranges["wide"] else []
        timings["total_s"] = time.perf_counter() - t_start
        report = QuantizeReport(
            out_path=str(out_path), method=calib.method, options=options, excluded=excluded, sensitivity=table,
            sensitivity_note=sens_note, calibration=record, ops=ops.to_dict(), ranges=ranges, final=final,
            cache=cache_state, timings=timings, notes=notes, self_contained=contained,
            search=found.to_dict() if found is not None else None,
        )
        atomic_copy(int8_path, out_path)
        if cache is not None:
            cache.store_result(result_key, int8_path, report.to_dict())
        log.info("%s", report.summary())
        return report


# ``method="auto"`` candidates: global min/max keeps rare peaks (heatmap maxima) on the grid; the mean of
# per-sample min/max (NNCF's default for activations) gives the common values more levels. Which wins is
# model-specific (BlazePose: 9.5 vs 19 px; the reference: 0.06 vs 0.08 heatmap px), so it is measured.
AUTO_METHODS = ("minmax", "mean_minmax")
# A presence flip on the sample costs as much as this many grid px of mean displacement.
FLIP_COST_PX = 10.0
CHOICE_RULE = "mean log-ratio over keypoints (mean px + 10 px x flip rate) and existence drift (mean |dp|)"


def output_rmse(reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Root-mean-square error of every output over the sample batches, per output name."""
    return {name: float(np.sqrt(np.mean(np.concatenate(
        [np.square(np.asarray(c[name], np.float64) - r[name]).ravel() for r, c in zip(reference, candidate,
                                                                                      strict=True)]))))
            for name in reference[0]}


def choice_scores(terms: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per candidate: the mean over terms of log(its error / the best candidate's error on that term).

    Errors in different units (grid px, probabilities) compare only as ratios, and a candidate slightly
    better on keypoints but several times worse on existence must lose. Measured on the MobileNet-style
    model: mean-of-min/max ranges were 12% closer on the sample's keypoints but moved existence
    probabilities 6x more than global min/max (with no flip on the sample), and on the evaluation frames
    they gave the same keypoints and 9x the presence logit error. On BlazePose the same rule keeps
    mean-of-min/max (1.2x closer keypoints with flips counted, 2.4x less existence drift).
    """
    names = list(terms)
    keys = terms[names[0]].keys()
    eps = 1e-12
    best = {k: min(terms[n][k] for n in names) for k in keys}
    return {n: float(np.mean([np.log((terms[n][k] + eps) / (best[k] + eps)) for k in keys])) for n in names}


def _choose_method(calib: CalibOptions, observed: Any, record: dict[str, Any], cache_state: str, measure: Any,
                   tensors_json: Path, work: Path, sample: list[np.ndarray], reference: Any, spec: ModelSpec,
                   build: Any, run: Any) -> tuple[CalibOptions, Any, dict[str, Any], str, dict[str, Any]]:
    """Quantize with each candidate's ranges (base exclusions), keep the one closer to FP32 on the sample.

    Closer = :func:`choice_scores` over what the spec decodes: keypoints (mean displacement + flip cost)
    and existence drift. The RMSE of every graph output is recorded beside them but does not vote: on
    BlazePose global min/max had the lower RMSE on every tensor but the pose flag, yet moved the decoded
    landmarks 4x more on the evaluation frames (RMSE of a flat vector follows its outliers).
    """
    if not sample:
        return calib, observed, record, cache_state, {"chosen": calib.method, "why": "no sample batches"}
    figures: dict[str, dict[str, Any]] = {}
    terms: dict[str, dict[str, float]] = {}
    found: dict[str, tuple[CalibOptions, Any, dict[str, Any], str, Path]] = {}
    for name in AUTO_METHODS:
        opts = replace(calib, method=name)
        dest = tensors_json if name == calib.method else work / f"tensors-{name}.json"
        got = (observed, record, cache_state) if name == calib.method else measure(opts, dest)
        path = work / f"choice-{name}.onnx"
        build(opts, dest, path)
        outputs = run(path)
        agreement = keypoint_agreement(spec, reference, outputs)
        rmse = output_rmse(reference, outputs)
        terms[name] = {"keypoints": agreement.mean_px + FLIP_COST_PX * agreement.flip_rate,
                       "existence": agreement.existence_error}
        figures[name] = {**agreement.to_dict(), "output_rmse": {k: round(v, 6) for k, v in rmse.items()}}
        found[name] = (opts, *got, dest)
    scores = choice_scores(terms)
    for name in AUTO_METHODS:
        figures[name]["score"] = round(scores[name], 4)
    best = min(AUTO_METHODS, key=lambda n: scores[n])  # ties: the first (minmax)
    opts, obs, rec, state, dest = found[best]
    if dest != tensors_json:
        shutil.copyfile(dest, tensors_json)
    return opts, obs, rec, state, {"chosen": best, "candidates": figures}


def ort_ops_summary(model_path: Path, workdir: Path, level: str = "all") -> OpsSummary:
    """Let ORT optimise the model as a plain deployment session does (default options) and count what runs INT8.

    ``without_setting`` is the same count with ``WeightBiasQuantization`` disabled, as heatdeploy's runtime
    did before the file pinned its FP32 layers: equal lines mean the file needs no session option.
    """
    opt = workdir / f"optimized_{level}.onnx"
    int8_session(model_path, level=level, optimized_path=opt)
    summary = summarize_ops(onnx.load(str(opt)), level)
    strict = workdir / f"optimized_{level}_nowbq.onnx"
    int8_session(model_path, level=level, optimized_path=strict, disable_weight_bias_quantization=True)
    summary.without_setting = summarize_ops(onnx.load(str(strict)), level).line()
    return summary


# --- steps -----------------------------------------------------------------------------------------


def _keep_mode(keep_fp32: str | Sequence[str]) -> tuple[str, list[str]]:
    if isinstance(keep_fp32, str):
        if keep_fp32 in KEEP_MODES:
            return keep_fp32, []
        if keep_fp32 == "sensitivity":
            return "auto", []
        return "base", [keep_fp32]  # one node name
    names = [str(n) for n in keep_fp32]
    if len(names) == 1 and names[0] in KEEP_MODES:
        return names[0], []
    return "base", names


def _activation_type(activation_type: str) -> tuple[str, str]:
    if activation_type == "auto":
        return default_activation_type()
    if activation_type not in ACTIVATION_TYPES:
        raise CalibrationError(f"activation_type {activation_type!r}: choose auto, uint8 or int8")
    return activation_type, "chosen by the caller"


def _pre_process(src: Path, work: Path) -> tuple[Path, str]:
    """ORT's quant_pre_process (shape inference + basic fusion); skipped with a reason if it fails."""
    src, dst = Path(src).resolve(), (work / "fp32_pre.onnx").resolve()
    note = "onnxruntime quant_pre_process (shape inference + basic optimisation)"
    try:
        with working_dir(work):  # a failing symbolic shape inference leaves temporaries in the cwd
            quant_pre_process(str(src), str(dst))
    except Exception as exc:  # symbolic shape inference is the usual culprit on unusual graphs
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            note += f"; symbolic shape inference skipped ({type(exc).__name__})"
        except Exception as exc2:
            shutil.copyfile(src, dst)
            note = f"skipped: quant_pre_process failed ({type(exc2).__name__}: {str(exc2)[:120]})"
    model = onnx.load(str(dst))
    if name_nodes(model):
        onnx.save(model, str(dst))
        note += "; unnamed nodes named"
    return dst, note


def _check_io(model: onnx.ModelProto, spec: ModelSpec, path: Path) -> tuple[str, int | None]:
    """The spec's input/outputs must be the graph's; returns the input name and a static batch, if any."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if spec.input.name not in names:
        raise CalibrationError(f"{path}: the spec's input {spec.input.name!r} is not a model input "
                               f"({', '.join(names)}); fix input.name in the spec")
    outs = [o.name for o in model.graph.output]
    missing = [n for n in spec.output_names if n not in outs]
    if missing:
        raise CalibrationError(f"{path}: spec output(s) {', '.join(missing)} not among the model outputs "
                               f"({', '.join(outs)}); fix heatmap.name / existence.name in the spec")
    dims = next(i for i in inputs if i.name == spec.input.name).type.tensor_type.shape.dim
    static = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return spec.input.name, static


def _base_exclusions(model: onnx.ModelProto, mode: str) -> dict[str, str]:
    if mode == "none":
        return output_tails(model, through=PASS_THROUGH_OPS)
    excluded = output_tails(model)
    for name, why in saturating_nodes(model).items():
        excluded.setdefault(name, why)
    return excluded


def _check_names(model: onnx.ModelProto, names: Sequence[str]) -> None:
    known = [n.name for n in model.graph.node]
    missing = [n for n in names if n not in set(known)]
    if missing:
        hints = {n: get_close_matches(n, known, n=2) for n in missing}
        text = "; ".join(f"{n!r}" + (f" (did you mean {', '.join(repr(h) for h in hs)}?)" if hs else "")
                         for n, hs in hints.items())
        raise CalibrationError(f"keep_fp32: no node named {text} in the pre-processed model; node names "
                               "come from the ONNX graph (e.g. Netron), after Conv+BN fusion")


def _quantize(pre_path: Path, out: Path, tensors_json: Path, calib: CalibOptions, *, act: QuantType,
              per_channel: bool, symmetric: bool, exclude: Sequence[str] = (),
              only: Sequence[str] | None = None) -> None:
    """ORT's quantize_static from the measured ranges (its calibration cache file: no calibration here)."""
    quantize_static(
        str(pre_path), str(out), None,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=act,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        nodes_to_quantize=list(only) if only else None,
        calibrate_method=METHODS[calib.method],
        calibration_cache_path=str(tensors_json),
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )
    model = onnx.load(str(out))
    if pin_float_layers(model):  # the file, not a session option, keeps its FP32 layers FP32 (session.py)
        onnx.save(model, str(out))


def _embed_metadata(path: Path, fp32_path: Path, spec: ModelSpec) -> None:
    """Carry the FP32 model's metadata (and the spec) into the INT8 model; ORT's tools drop it."""
    model = onnx.load(str(path))
    source = onnx.load(str(fp32_path), load_external_data=False)
    props = {p.key: p.value for p in source.metadata_props}
    props[METADATA_KEY] = spec.to_json(indent=None)
    props.pop(ORT_OPTIONS_KEY, None)  # pinned files need no session option (a re-quantized source may carry it)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _sensitive_reason(row: LayerResult, threshold: float) -> str:
    return (f"sensitivity: INT8 alone moves keypoints {row.mean_px:.3f} px mean (> {threshold}), "
            f"existence flips {row.flip_rate:.1%}")


def _layer_priority(model: onnx.ModelProto, observed: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Widest activation range around a layer, relative to the median: test those first when capped."""
    spans = {k: max(abs(a), abs(b)) for k, (a, b) in observed.items()}
    positive = [s for s in spans.values() if s > 0]
    median = float(np.median(positive)) if positive else 1.0
    return {n.name: max((spans.get(t, 0.0) for t in [*n.input, *n.output]), default=0.0) / median
            for n in model.graph.node}

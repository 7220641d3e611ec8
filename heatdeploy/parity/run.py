"""The parity run: FP32 reference and candidate on the very same preprocessed batches -> a ParityResult.

Images are preprocessed once and the same tensor goes to both engines, so every difference comes from
the engine and its precision, never from resizing or colour conversion; both outputs go through the
runtime's codec. With ``floor`` the reference also runs on the tensor dithered by half an input level,
which measures FP32's own noise (:mod:`heatdeploy.parity.floor`) and feeds the tolerance's floor rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.bundle import Bundle
from heatdeploy.datasets import Dataset, load_dataset
from heatdeploy.parity.checks import evaluate_checks
from heatdeploy.parity.floor import DITHER_LEVELS, FloorMetrics, dither, floor_metrics
from heatdeploy.parity.keypoints import (
    Comparison,
    KeypointSet,
    compare_keypoints,
    decode_keypoints,
    pair_instances,
    per_image,
)
from heatdeploy.parity.report import record_in_manifest, write_outputs
from heatdeploy.parity.result import ArtifactInfo, ParityDetail, ParityError, ParityResult, WorstImage, bundle_root
from heatdeploy.parity.tensors import TensorAccumulator
from heatdeploy.parity.tolerance import Tolerance, load_tolerance
from heatdeploy.runtime.pipeline import Pipeline
from heatdeploy.spec import ModelSpec

DEFAULT_WORST = 8  # images listed (and drawn) per worst-case list
DEFAULT_REFERENCE = "onnx-fp32"


def resolve_reference(root: Path, reference: str, candidate: str) -> str:
    """The reference artifact's name: ``reference`` when the bundle has it; for the default, else the bundle's
    FP32 artifact of any engine (a ``.tflite --format openvino`` bundle has ``openvino-fp32``, no ONNX).

    One whose engine is installed wins; ParityError names the FP32 artifacts there are when none fits.
    """
    from heatdeploy.runtime.backends.base import engine_installed

    arts = Bundle.load(root, verify=False).artifacts
    if any(a.name == reference for a in arts):
        return reference
    fp32 = [a for a in arts if a.precision == "fp32" and a.name != candidate]
    if reference == DEFAULT_REFERENCE and fp32:
        return sorted(fp32, key=lambda a: not engine_installed(a.backend))[0].name
    have = ", ".join(a.name for a in fp32) or "none besides the candidate"
    raise ParityError(f"{root}: no reference artifact {reference!r}; its FP32 artifacts: {have}; pass "
                      "--reference NAME (one of them), or export an FP32 artifact into the bundle")


def _artifact_info(pipe: Pipeline) -> ArtifactInfo:
    a = pipe.artifact
    assert a is not None
    return ArtifactInfo(name=a.name, path=a.path, format=a.format, precision=a.precision,
                        backend=pipe.backend_name, sha256=a.sha256)


def run_parity(bundle: str | Path | Bundle, candidate: str, *, reference: str = "onnx-fp32",
               data: str | Path | Dataset | None = None, tolerance: str | Path | Tolerance = "default",
               limit: int | None = None, batch_size: int = 8, backend: str | None = None,
               reference_backend: str | None = None, options: dict[str, Any] | None = None,
               reference_options: dict[str, Any] | None = None, within_hm_px: Sequence[float] | None = None,
               worst: int = DEFAULT_WORST, seed: int = 0, floor: bool = True,
               progress: Callable[[int, int], None] | None = None) -> ParityResult:
    """Run reference and candidate on the same preprocessed batches and check the tolerance.

    ``floor``: also run the reference on each batch dithered by +-0.5 input level and report FP32's own
    noise floor (:mod:`heatdeploy.parity.floor`); it costs one more reference inference per batch.
    ``progress(done, total)`` is called after each batch (for a progress bar).
    """
    t0 = time.perf_counter()
    tol = tolerance if isinstance(tolerance, Tolerance) else load_tolerance(tolerance)  # fail fast on bad TOML
    if batch_size < 1:
        raise ParityError(f"batch size: expected >= 1, got {batch_size}")
    within = tuple(sorted(float(v) for v in within_hm_px)) if within_hm_px else tol.within_hm_px
    root = bundle_root(bundle)
    reference = resolve_reference(root, reference, candidate)
    ref_pipe = Pipeline.load(root, artifact=reference, backend=reference_backend, options=reference_options)
    cand_pipe = Pipeline.load(root, artifact=candidate, backend=backend, options=options)
    spec = ref_pipe.spec
    pdata = data if isinstance(data, Dataset) else load_dataset(spec, data, limit=limit, seed=seed)
    n = len(pdata)
    if pdata.truth is not None and tuple(pdata.truth.keypoints.shape[:2]) != (n, spec.num_keypoints):
        got = "x".join(str(d) for d in pdata.truth.keypoints.shape[:2])
        raise ParityError(f"{pdata.source}: the ground truth is {got} (images x keypoints), the data and the model "
                          f"need {n}x{spec.num_keypoints}; pass truth made for this model, or data without truth")
    accs = {name: TensorAccumulator(name) for name in spec.output_names}
    refs: list[KeypointSet] = []
    cands: list[KeypointSet] = []
    floors: list[KeypointSet] = []
    sizes: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        images = pdata.load(start, min(start + batch_size, n))
        boxes = None
        if spec.input.resize == "crop":  # whole image as the person box, as calibration does
            boxes = np.array([[0.0, 0.0, im.shape[1] - 1.0, im.shape[0] - 1.0] for im in images])
        batch = ref_pipe.preprocess(images, boxes)  # once: both engines get this very tensor
        ref_out = ref_pipe.infer(batch.tensor)
        cand_out = cand_pipe.infer(batch.tensor)
        for name, acc in accs.items():
            acc.update(ref_out[name], cand_out[name], histogram=name == spec.primary_output)
        refs.append(decode_keypoints(spec, ref_out, batch.transforms))
        cands.append(decode_keypoints(spec, cand_out, batch.transforms))
        if floor:
            dithered = dither(batch.tensor, ref_pipe.preprocess.pixel_step, rng)
            floors.append(decode_keypoints(spec, ref_pipe.infer(dithered), batch.transforms))
        sizes.append(batch.image_sizes)
        if progress is not None:
            progress(min(start + batch_size, n), n)
    ref_set, cand_set = KeypointSet.concat(refs), KeypointSet.concat(cands)
    image_sizes = np.concatenate(sizes)
    floor_ref = (ref_set, KeypointSet.concat(floors)) if floors else None
    if pdata.truth is not None and pdata.truth_sizes is not None and not np.array_equal(image_sizes,
                                                                                        pdata.truth_sizes):
        raise ParityError(f"{pdata.source}: image sizes on disk differ from labels.json; regenerate the split")
    row_image = None
    if spec.multi_instance:  # rows are matched instances; labels of single-figure data do not apply
        ref_set, cand_set, row_image = pair_instances(ref_set, cand_set)
        paired = ref_set.present.any(axis=1) & cand_set.present.any(axis=1)
        cmp = per_image(compare_keypoints(ref_set, cand_set, image_sizes[row_image], spec.keypoints, None, within,
                                          tol.pck_alpha, paired), row_image, n)
    else:
        cmp = compare_keypoints(ref_set, cand_set, image_sizes, spec.keypoints, pdata.truth, within, tol.pck_alpha)
    floor_result = _floor(spec, floor_ref, cmp, image_sizes, within, tol.pck_alpha) if floor_ref else None
    tensors = [acc.result() for acc in accs.values()]
    hm_acc = accs[spec.primary_output]
    img_snr = hm_acc.per_image_snr()
    by_disp, by_flips = _worst(cmp, pdata, spec.keypoints, img_snr, worst)
    result = ParityResult(
        bundle=str(root), reference=_artifact_info(ref_pipe), candidate=_artifact_info(cand_pipe),
        data=pdata.record(), tolerance=tol, tensors=tensors, keypoints=cmp.metrics, per_keypoint=cmp.per_keypoint,
        worst_by_displacement=by_disp, worst_by_flips=by_flips,
        checks=evaluate_checks(tol, cmp.metrics, tensors, floor_result), seconds=0.0, floor=floor_result,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        detail=ParityDetail(data=pdata, keypoint_names=spec.keypoints, skeleton=spec.skeleton, reference=ref_set,
                            candidate=cand_set, comparison=cmp, image_sizes=image_sizes,
                            heatmap_error_hist=hm_acc.hist.copy(), heatmap_error_zeros=hm_acc.zeros,
                            heatmap_snr_per_image=img_snr, row_image=row_image))
    result.seconds = time.perf_counter() - t0
    return result


def _floor(spec: ModelSpec, sets: tuple[KeypointSet, KeypointSet], cmp: Comparison, image_sizes: np.ndarray,
           within: Sequence[float], alpha: float) -> FloorMetrics:
    """The reference against itself dithered; the candidate on what the dither left alone (single instance)."""
    ref, dithered = sets
    note = f"uniform +-{DITHER_LEVELS:g} input level"
    if spec.multi_instance:
        r, d, rows = pair_instances(ref, dithered)
        paired = r.present.any(axis=1) & d.present.any(axis=1)
        fcmp = compare_keypoints(r, d, image_sizes[rows], spec.keypoints, None, within, alpha, paired)
        return floor_metrics(fcmp, None, None, None, note)
    fcmp = compare_keypoints(ref, dithered, image_sizes, spec.keypoints, None, within, alpha)
    return floor_metrics(fcmp, cmp, ref.presence, _decision_threshold(spec), note)


def _decision_threshold(spec: ModelSpec) -> float:
    """The probability the decoder's present flag compares with (existence head, else the peak score)."""
    if spec.existence is not None:
        return float(spec.existence.threshold)
    if spec.landmarks is not None and "presence" in spec.landmarks.fields:
        return 0.5
    return float(spec.decoder.score_threshold)


def _worst(cmp: Comparison, data: Dataset, names: Sequence[str], img_snr: np.ndarray,
           worst: int) -> tuple[list[WorstImage], list[WorstImage]]:
    """The images with the largest mean displacement, and with the most existence flips (only non-zero)."""
    mean_img = np.nan_to_num(cmp.image_mean_hm, nan=-1.0, posinf=np.inf)
    flips = (cmp.lost | cmp.gained).sum(axis=1)
    by_disp = np.argsort(-mean_img, kind="stable")[:worst]
    by_disp = by_disp[mean_img[by_disp] > 0]
    by_flip = np.argsort(-flips, kind="stable")[:worst]
    by_flip = by_flip[flips[by_flip] > 0]
    key_names = np.asarray(names, dtype=object)

    def entry(i: int) -> WorstImage:
        return WorstImage(index=int(i), name=data.names[i], mean_displacement_hm=float(cmp.image_mean_hm[i]),
                          max_displacement_hm=float(cmp.image_max_hm[i]), flips=int(flips[i]),
                          lost=list(key_names[cmp.lost[i]]), gained=list(key_names[cmp.gained[i]]),
                          heatmap_snr_db=float(img_snr[i]) if img_snr.size else math.nan)

    return [entry(i) for i in by_disp], [entry(i) for i in by_flip]


def parity_command(bundle: str | Path, candidate: str, reference: str = "onnx-fp32",
                   data: str | Path | None = None, tolerance: str | Path = "default",
                   out: str | Path | None = None, *, limit: int | None = None, batch_size: int = 8,
                   backend: str | None = None, reference_backend: str | None = None,
                   options: dict[str, Any] | None = None, within_hm_px: Sequence[float] | None = None,
                   worst: int = DEFAULT_WORST, write_manifest: bool = True, floor: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> tuple[ParityResult, int]:
    """What ``heatdeploy parity`` does: run, write JSON + HTML, record in the manifest; exit code 0 pass, 1 fail."""
    result = run_parity(bundle, candidate, reference=reference, data=data, tolerance=tolerance, limit=limit,
                        batch_size=batch_size, backend=backend, reference_backend=reference_backend,
                        options=options, within_hm_px=within_hm_px, worst=worst, floor=floor, progress=progress)
    if out is not None:
        write_outputs(result, out)
    if write_manifest:
        record_in_manifest(bundle, result)
    return result, result.exit_code


__all__ = ["DEFAULT_REFERENCE", "DEFAULT_WORST", "parity_command", "resolve_reference", "run_parity"]

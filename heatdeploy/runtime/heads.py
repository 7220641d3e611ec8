"""One entry point from an engine's raw outputs to keypoints, whatever head the spec selects.

Pipeline, parity, calibration sensitivity and NNCF accuracy control all call :func:`decode_outputs`, so a
SimCC, centre-heatmap or landmark-vector model goes through INT8 and parity with no code of its own.

Every head is a classifier over positions with its own grid: heatmap pixels, SimCC bins, centre-map
pixels. ``Decoded.coords_hm`` is in that grid's units and ``grid_stride`` is its cell size in input pixels,
so parity's "heatmap px" figures mean "classes" for every family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import numpy as np

from heatdeploy.errors import ModelOutputError
from heatdeploy.runtime.codecs.conventions import HeatmapConvention, codec_from_spec
from heatdeploy.runtime.decode import (
    Decoded,
    HeatmapCodec,
    _sigmoid,
    argmax_2d,
    existence_probability,
    heatmap_to_input,
    heatmap_view,
    select_heatmaps,
)
from heatdeploy.runtime.decode_centers import decode_centers
from heatdeploy.runtime.decode_landmarks import refine_with_heatmap, split_landmarks
from heatdeploy.runtime.decode_paf import decode_paf
from heatdeploy.runtime.decode_simcc import decode_simcc
from heatdeploy.spec import ModelSpec

__all__ = ["HeadDecoder", "decode_outputs", "grid_stride", "head_decoder", "select_centers", "select_pafs"]

HeadDecoder = Callable[[Mapping[str, np.ndarray]], Decoded]


def grid_stride(spec: ModelSpec) -> float:
    """Input pixels per class cell of the spec's localisation head (the unit of ``coords_hm``)."""
    if spec.simcc is not None:
        return 1.0 / spec.simcc.split_ratio
    if spec.centers is not None:
        return float(spec.centers.stride)
    if spec.heatmap is not None:
        return float(spec.heatmap.stride)
    return 1.0  # a pure regression vector: input pixels


def _output(outputs: Mapping[str, np.ndarray], name: str, role: str) -> np.ndarray:
    if name not in outputs:
        raise ModelOutputError(f"{role} output {name!r} missing; the engine returned {sorted(outputs)}; "
                               "fix the name in the spec")
    return np.asarray(outputs[name])


def _presence(decoded_scores: np.ndarray, existence: np.ndarray | None, spec: ModelSpec,
              keypoint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Existence head and/or a per-keypoint presence probability, else the peak score.

    With both (BlazePose: a per-image pose flag and a per-landmark "in frame" logit) a keypoint is present
    when the instance is and the keypoint is; its probability is the product.
    """
    n = decoded_scores.shape[0]
    prob = existence_probability(existence, spec, n)
    if prob is not None:
        present = prob >= spec.existence.threshold  # type: ignore[union-attr]
        if keypoint is not None:
            return (prob * keypoint).astype(np.float32), present & (keypoint >= 0.5)
        return prob, present
    if keypoint is not None:
        return keypoint, keypoint >= 0.5
    p = decoded_scores.astype(np.float32, copy=True)
    return p, p >= spec.decoder.score_threshold


def _existence(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return outputs.get(spec.existence.name) if spec.existence is not None else None


def _heatmaps(spec: ModelSpec, outputs: Mapping[str, np.ndarray], probabilities: bool) -> np.ndarray:
    """The keypoint heatmaps ``[N,K,h,w]``; with ``probabilities`` a sigmoid is applied to logit maps."""
    assert spec.heatmap is not None
    hm = select_heatmaps(_output(outputs, spec.heatmap.name, "heatmap"), spec)
    return _sigmoid(hm) if probabilities and spec.heatmap.activation == "logits" else hm


def _decode_heatmap(spec: ModelSpec, outputs: Mapping[str, np.ndarray], codec: HeatmapCodec) -> Decoded:
    return codec.decode(_heatmaps(spec, outputs, False), _existence(spec, outputs))


def _decode_simcc(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> Decoded:
    sc = spec.simcc
    assert sc is not None
    x = np.asarray(_output(outputs, sc.x_name, "simcc x"), dtype=np.float32)
    y = np.asarray(_output(outputs, sc.y_name, "simcc y"), dtype=np.float32)
    k = spec.num_keypoints
    if x.ndim != 3 or y.ndim != 3 or x.shape[1] != k or y.shape[1] != k:
        raise ModelOutputError(f"simcc outputs {sc.x_name!r} {x.shape} / {sc.y_name!r} {y.shape}: expected "
                               f"[N,{k},L] each ({k} keypoints in the spec)")
    want = (round(spec.input.width * sc.split_ratio), round(spec.input.height * sc.split_ratio))
    if (x.shape[2], y.shape[2]) != want:
        raise ModelOutputError(f"simcc outputs have {x.shape[2]} x-bins and {y.shape[2]} y-bins but input "
                               f"{spec.input.width}x{spec.input.height} at split_ratio {sc.split_ratio} gives "
                               f"{want}; fix simcc.split_ratio or the input size")
    logits = sc.activation == "logits"
    coords, raw = decode_simcc(x, y, sc.split_ratio, refine=sc.refine, log_domain=logits)
    scores = _sigmoid(raw) if logits else raw.astype(np.float32)
    bins = coords * np.float32(sc.split_ratio)
    peaks = np.stack([x.argmax(axis=2), y.argmax(axis=2)], axis=-1).astype(np.int32)
    presence, present = _presence(scores, _existence(spec, outputs), spec)
    return Decoded(coords_hm=bins.astype(np.float32), coords=coords.astype(np.float32), scores=scores,
                   presence=presence, present=present, peaks=peaks)


def _decode_landmarks(spec: ModelSpec, outputs: Mapping[str, np.ndarray], codec: HeatmapConvention | None,
                      peaks: bool = True) -> Decoded:
    """Without ``peaks`` no pass over the whole heatmaps is made: the refinement reads its windows (and applies
    a logit map's sigmoid there), and ``Decoded.peaks`` is None."""
    lm = spec.landmarks
    assert lm is not None
    flat = np.asarray(_output(outputs, lm.name, "landmarks"), dtype=np.float32)
    n = flat.shape[0]
    parts = split_landmarks(flat.reshape(n, -1), spec.num_keypoints, lm.fields)
    xy = np.empty(parts["x"].shape + (2,), dtype=np.float32)
    xy[..., 0], xy[..., 1] = parts["x"], parts["y"]
    if lm.coords == "normalized":
        xy = xy * np.array([spec.input.width, spec.input.height], dtype=np.float32)
    kp_presence = _sigmoid(parts["presence"]) if "presence" in parts else None  # a logit: "in frame"
    existence = _existence(spec, outputs)
    if codec is None:
        scores = kp_presence if kp_presence is not None else np.ones(xy.shape[:2], dtype=np.float32)
        presence, present = _presence(scores, existence, spec, kp_presence)
        return Decoded(coords_hm=xy.astype(np.float32), coords=xy.astype(np.float32), scores=scores,
                       presence=presence, present=present, peaks=np.rint(np.nan_to_num(xy)).astype(np.int32))
    assert spec.heatmap is not None
    logits = not peaks and spec.heatmap.activation == "logits"  # the sigmoid, where needed, comes later
    if peaks:
        hm = _heatmaps(spec, outputs, True)
    else:
        hm = heatmap_view(_output(outputs, spec.heatmap.name, "heatmap"), spec)
    coords_hm = codec.to_heatmap(xy)
    if lm.refine_kernel:
        coords_hm, scores = refine_with_heatmap(coords_hm, hm, lm.refine_kernel, lm.refine_min_score,
                                                codec.window_rounding, logits=logits)  # MediaPipe truncates
    else:
        scores = hm.reshape(*hm.shape[:2], -1).max(axis=2)
        scores = _sigmoid(scores) if logits else scores  # monotone: the max of the sigmoid is the sigmoid of the max
    presence, present = _presence(scores, existence, spec, kp_presence)
    return Decoded(coords_hm=coords_hm.astype(np.float32), coords=codec.to_input(coords_hm),
                   scores=scores.astype(np.float32), presence=presence, present=present,
                   peaks=argmax_2d(hm)[0].astype(np.int32) if peaks else None)


def select_centers(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The engine's centre heatmap -> float32 probabilities ``[N,h,w]``."""
    c = spec.centers
    assert c is not None
    arr = np.asarray(raw, dtype=np.float32)
    h, w = spec.centers_size
    shape = (h, w, 1) if c.layout == "NHWC" else (1, h, w)
    if arr.ndim != 4 or arr.shape[1:] != shape:
        want = "[N,h,w,1]" if c.layout == "NHWC" else "[N,1,h,w]"
        raise ModelOutputError(f"centre output {c.name!r}: shape {arr.shape}, expected {want} with h,w = "
                               f"{h},{w} (input {spec.input.height}x{spec.input.width} / stride {c.stride}); "
                               "check centers.layout and centers.stride")
    maps = arr[..., 0] if c.layout == "NHWC" else arr[:, 0]
    return _sigmoid(maps) if c.activation == "logits" else np.ascontiguousarray(maps)


def _decode_centers(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> Decoded:
    c = spec.centers
    assert c is not None
    centers = select_centers(_output(outputs, c.name, "centre"), spec)
    n, h, w = centers.shape
    k = spec.num_keypoints
    off = np.asarray(_output(outputs, c.offsets, "offsets"), dtype=np.float32)
    if c.layout == "NHWC" and off.ndim == 4:
        off = off.transpose(0, 3, 1, 2)
    if off.shape != (n, 2 * k, h, w):
        raise ModelOutputError(f"offsets output {c.offsets!r}: shape {np.asarray(outputs[c.offsets]).shape}, "
                               f"expected {2 * k} channels ((dx, dy) for {k} keypoints) at {h}x{w} in layout "
                               f"{c.layout}")
    kp_maps = _heatmaps(spec, outputs, True) if spec.heatmap is not None else None
    inst = decode_centers(centers, off.reshape(n, k, 2, h, w), max_instances=c.max_instances,
                          threshold=c.threshold, kernel=c.pool_kernel, nms_distance=c.nms_distance,
                          keypoint_heatmaps=kp_maps, snap_distance=c.snap_distance)
    coords = (inst.coords_hm.astype(np.float64) + 0.5) * c.stride - 0.5
    valid = inst.valid[..., None] & np.ones((1, 1, k), dtype=bool)
    presence = np.where(valid, inst.scores[..., None], 0.0).astype(np.float32)
    return Decoded(coords_hm=inst.coords_hm.astype(np.float32), coords=coords.astype(np.float32),
                   scores=inst.keypoint_scores.astype(np.float32), presence=presence, present=valid,
                   peaks=np.rint(np.nan_to_num(inst.coords_hm)).astype(np.int32),
                   instance_scores=np.where(inst.valid, inst.scores, 0.0).astype(np.float32))


def select_pafs(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The engine's PAF tensor -> float32 ``[N,C,h,w]`` from ``paf.offset`` on (parts may share the tensor)."""
    pa = spec.paf
    assert pa is not None
    arr = np.asarray(raw, dtype=np.float32)
    h, w = spec.heatmap_size
    need = pa.offset + 1 + max(max(limb[2], limb[3]) for limb in pa.limb_table())
    maps = arr.transpose(0, 3, 1, 2) if arr.ndim == 4 and pa.layout == "NHWC" else arr
    if maps.ndim != 4 or maps.shape[2:] != (h, w) or maps.shape[1] < need:
        raise ModelOutputError(f"paf output {pa.name!r}: shape {arr.shape}, expected {pa.layout} with at least "
                               f"{need} channels (paf.offset {pa.offset} + the limbs' PAF channels) at {h}x{w}; "
                               "check paf.layout, paf.offset and paf.limbs")
    return np.ascontiguousarray(maps[:, pa.offset:])


def _decode_paf(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> Decoded:
    pa = spec.paf
    assert pa is not None
    parts = _heatmaps(spec, outputs, True)
    pafs = select_pafs(_output(outputs, pa.name, "paf"), spec)
    people = decode_paf(parts, pafs, pa.limb_table(), max_people=pa.max_people, peak_threshold=pa.peak_threshold,
                        pool_kernel=pa.pool_kernel, max_peaks=pa.max_peaks, samples=pa.samples,
                        min_alignment=pa.min_alignment, min_inliers=pa.min_inliers, min_parts=pa.min_parts,
                        min_score=pa.min_score)
    return Decoded(coords_hm=people.coords_hm, coords=heatmap_to_input(people.coords_hm, spec),
                   scores=people.keypoint_scores, presence=people.keypoint_scores.copy(), present=people.found,
                   peaks=np.rint(people.coords_hm).astype(np.int32),
                   instance_scores=people.scores)


def head_decoder(spec: ModelSpec, *, peaks: bool = True) -> HeadDecoder:
    """The spec's decoder with what depends only on the spec (its codec) built once; a pipeline keeps one.

    ``peaks=False`` lets a decoder skip work that only ``Decoded.peaks`` needs (the class parity compares);
    those decoders then leave it None. Everything else is the same.
    """
    head = spec.head
    if head == "heatmap":
        return partial(_decode_heatmap, spec, codec=HeatmapCodec(spec))
    if head == "landmarks":
        return partial(_decode_landmarks, spec, codec=codec_from_spec(spec) if spec.heatmap is not None else None,
                       peaks=peaks)
    return partial(_DECODERS[head], spec)


_DECODERS = {"simcc": _decode_simcc, "centers": _decode_centers, "paf": _decode_paf}


def decode_outputs(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> Decoded:
    """Raw engine outputs -> keypoints in the head's grid and in model-input pixels, with presence.

    Single-instance heads give ``[N,K,...]`` arrays; centre and PAF heads ``[N,M,K,...]`` with ``instance_scores``.
    """
    return head_decoder(spec)(outputs)

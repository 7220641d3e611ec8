"""Propose and check a ModelSpec for a user's own ONNX model ("bring your own model").

A user with a heatmap model exported by some other tool has an ``.onnx`` and no heatdeploy spec.
Writing the spec by hand means knowing layouts, strides and whether heads end in a sigmoid; most of
that is visible in the graph (shapes) or from one forward pass (value ranges). ``infer_spec`` makes
those guesses and says *why* for each one, so the user reviews a proposal instead of starting from a
blank file; ``check_spec`` then proves the (possibly edited) spec runs end to end before export.

What the graph cannot tell (colour order, pixel scaling, mean/std, resize mode, decoder) comes from a .tflite's
own metadata (``NormalizationOptions``), a ``--from`` trainer preset, or, with sample images (``--data``), from
trying the common normalisations on them and keeping the one whose outputs look trained
(:mod:`heatdeploy.spec_normalisation`); otherwise the ModelSpec defaults are kept and the notes say so.
Only onnx + onnxruntime are used (no torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heatdeploy.spec import (
    Activation,
    CentersSpec,
    ExistenceSpec,
    HeatmapSpec,
    InputSpec,
    LandmarksSpec,
    Layout,
    ModelSpec,
    SimCCSpec,
    SpecError,
)

if TYPE_CHECKING:
    import onnx

__all__ = ["check_spec", "infer_spec", "write_spec_proposal"]

_SAMPLES = 3  # random inputs for judging value ranges; a few are enough to see negatives or > 1


@dataclass(frozen=True)
class _Out:
    """One graph output with its shape (graph dims, unknowns filled from the probe run) and probe values."""

    name: str
    dims: tuple[int, ...]
    values: np.ndarray
    shown: str = ""  # graph dims for notes: named dynamic dims (batch 'N') kept as names


@dataclass(frozen=True)
class _HeatmapCandidate:
    out: _Out
    layout: Layout
    channels: int
    stride: int


def _fmt(dims: Any) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _graph_summary(proto: onnx.ModelProto) -> str:
    """'inputs: a [N,3,64,48]; outputs: b [...]' — appended to errors so the user sees what the graph has."""
    from heatdeploy.exporters.onnx import graph_inputs, value_dims

    def fmt(vals: Any) -> str:
        return ", ".join(f"{v.name} {_fmt(value_dims(v) or ['?'])}" for v in vals) or "(none)"

    return f"graph inputs: {fmt(graph_inputs(proto))}; graph outputs: {fmt(proto.graph.output)}"


def _with_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The proto with shape inference applied when some input/output dim is missing (exporters often omit them).

    Shape inference can fail on custom ops; then the caller falls back to the probe run's shapes.
    """
    import onnx

    from heatdeploy.exporters.onnx import graph_inputs, value_dims

    def complete(vals: Any) -> bool:
        return all((d := value_dims(v)) is not None and all(x is not None for x in d) for v in vals)

    if complete(graph_inputs(proto)) and complete(proto.graph.output):
        return proto
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a convenience; the probe run still gives real shapes
        return proto


def _input_layout(dims: list[Any], name: str, notes: list[str]) -> tuple[Layout, int, int, int]:
    """(layout, H, W, C) from a 4-D image input; NCHW wins when both readings fit (e.g. [N,3,64,3])."""
    if len(dims) != 4:
        raise SpecError(f"input {name!r} is {_fmt(dims)}; heatdeploy needs a 4-D image input (NCHW or NHWC)")
    nchw = dims[1] in (1, 3)
    nhwc = dims[3] in (1, 3)
    if nchw:
        layout: Layout = "NCHW"
        c, h, w = dims[1], dims[2], dims[3]
        why = f"dim 1 is {c} (colour channels)"
        if nhwc:
            why += f"; the last dim is also {dims[3]}, NCHW preferred — check input.layout"
    elif nhwc:
        layout = "NHWC"
        h, w, c = dims[1], dims[2], dims[3]
        why = f"the last dim is {c} (colour channels)"
    else:
        raise SpecError(f"input {name!r} is {_fmt(dims)}: neither dim 1 nor the last dim is 1 or 3 channels, "
                        "so it is not an image input heatdeploy can feed")
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise SpecError(f"input {name!r} is {_fmt(dims)}: height/width are dynamic; re-export with a fixed "
                        "input size (heatmap stride is derived from it)")
    notes.append(f"input {name!r} {_fmt(dims)}: layout {layout} because {why}; size {h}x{w} (HxW), {c} channels")
    return layout, h, w, int(c)


def _probe(path: Path, proto: onnx.ModelProto, in_name: str, in_dims: list[Any], seed: int,
           samples: int, images: list[np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """Run the model on ``images`` (preprocessed, one per run) or a few random inputs (standard normal, like
    normalised pixels) and keep every output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = next(i for i in sess.get_inputs() if i.name == in_name)
    others = [i.name for i in sess.get_inputs() if i.name != in_name]
    if others:
        raise SpecError(f"{path}: the model has extra inputs {others} besides {in_name!r}; heatdeploy feeds "
                        f"one image tensor ({_graph_summary(proto)})")
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}.get(
        meta.type, np.float32)
    batch = in_dims[0] if isinstance(in_dims[0], int) and in_dims[0] > 0 else 1
    shape = (batch, *[int(d) for d in in_dims[1:]])
    rng = np.random.default_rng(seed)
    names = [o.name for o in sess.get_outputs()]
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    feeds = ([x.astype(dtype) for x in images] if images is not None
             else [rng.standard_normal(shape).astype(dtype) for _ in range(samples)])
    for x in feeds:
        for n, v in zip(names, sess.run(names, {in_name: x}), strict=True):
            got[n].append(np.asarray(v))
    return got


def _outputs(proto: onnx.ModelProto, probe: dict[str, list[np.ndarray]]) -> list[_Out]:
    """Graph outputs with static dims, unknown ones taken from the probe run (batch as seen in the run)."""
    from heatdeploy.exporters.onnx import value_dims

    outs = []
    for v in proto.graph.output:
        vals = probe.get(v.name, [])
        seen = vals[0].shape if vals else ()
        dims = value_dims(v)
        if dims is None or len(dims) != len(seen):
            merged = tuple(int(d) for d in seen)
        else:
            merged = tuple(d if isinstance(d, int) and d > 0 else int(s) for d, s in zip(dims, seen, strict=True))
        values = np.concatenate([a.reshape(-1) for a in vals]).astype(np.float64) if vals else np.zeros(0)
        shown = _fmt([g if isinstance(g, str) and g else m for g, m in zip(dims, merged, strict=True)]
                     if dims is not None and len(dims) == len(merged) else merged)
        outs.append(_Out(v.name, merged, values, shown))
    return outs


def _heatmap_candidates(out: _Out, h: int, w: int) -> list[_HeatmapCandidate]:
    """Readings of a 4-D output as NCHW or NHWC heatmaps whose size divides the input by one integer stride."""
    if len(out.dims) != 4:
        return []
    found = []
    for layout, (c, hh, ww) in (("NCHW", out.dims[1:]), ("NHWC", (out.dims[3], out.dims[1], out.dims[2]))):
        if hh <= 0 or ww <= 0 or c <= 0 or h % hh or w % ww or h // hh != w // ww:
            continue
        found.append(_HeatmapCandidate(out, layout, c, h // hh))  # type: ignore[arg-type]
    return found


def _heatmap_activation(values: np.ndarray, seen: str) -> tuple[Activation, str]:
    """Like _activation, but a regression heatmap (MSE to Gaussians, no sigmoid) strays a little outside
    [0, 1]; only a clear excursion (below -0.5 or above 1.5) means logits."""
    if values.size and float(values.min()) >= -0.5 and float(values.max()) <= 1.5:
        lo, hi = float(values.min()), float(values.max())
        return "probabilities", (f"values over {seen} range [{lo:.3g}, {hi:.3g}]: a "
                                 "probability or regression (MSE-to-Gaussian) heatmap; logits stray further")
    return _activation(values, seen)


def _activation(values: np.ndarray, seen: str) -> tuple[Activation, str]:
    """Logits when any probe value leaves [0, 1]; probabilities otherwise (a sigmoid/softmax head)."""
    if values.size == 0:
        return "logits", "no values seen"
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0:
        return "logits", f"values over {seen} range [{lo:.3g}, {hi:.3g}], outside [0, 1]"
    return "probabilities", (f"values over {seen} stay inside [0, 1] ([{lo:.3g}, {hi:.3g}]); "
                             "a logit head that stays inside [0, 1] would look the same, so check it")


def _existence_shape(out: _Out, k: int) -> str | None:
    """'keypoint' for [N,K] / [N,K,1], 'instance' for [N] / [N,1] / [N,1,1]; None when neither."""
    rest = out.dims[1:]
    if len(rest) > 2 or (len(rest) == 2 and rest[1] != 1):
        return None
    width = rest[0] if rest else 1
    if width == k:
        return "keypoint"
    if width == 1:
        return "instance"
    return None


@dataclass(frozen=True)
class _Head:
    """The localisation head infer_spec settled on, and the outputs it reads."""

    k: int
    used: tuple[str, ...]
    heatmap: HeatmapSpec | None = None
    simcc: SimCCSpec | None = None
    centers: CentersSpec | None = None
    landmarks: LandmarksSpec | None = None


def _heatmap_head(path: Path, proto: onnx.ModelProto, probe: dict[str, list[np.ndarray]], outs: list[_Out],
                  h: int, w: int, layout: Layout, keypoint_names: list[str] | None, notes: list[str],
                  seen: str) -> _Head:
    """Pick the keypoint heatmap among 4-D outputs, K and the keypoint channels, and its activation."""
    cands = [cand for o in outs for cand in _heatmap_candidates(o, h, w)]
    if not cands:
        raise SpecError(f"{path}: no heatmap-like output (4-D NCHW [N,K,h,w] or NHWC [N,h,w,K] whose h,w divide "
                        f"the input {h}x{w} by one integer stride); "
                        f"{_graph_summary(proto)}")
    # two readings of one tensor (e.g. square sizes): prefer the one matching the input layout
    by_name: dict[str, list[_HeatmapCandidate]] = {}
    for cand in cands:
        by_name.setdefault(cand.out.name, []).append(cand)
    per_tensor = []
    for name, group in by_name.items():
        pick = next((g for g in group if g.layout == layout), group[0])
        if len(group) > 1:
            notes.append(f"output {name!r} {pick.out.shown} reads as heatmaps in both layouts; chose "
                         f"{pick.layout} (same as the input) — check heatmap.layout")
        per_tensor.append(pick)

    # K: from the names when given; else from a per-keypoint head narrower than the heatmap; else all channels
    non_hm = [o for o in outs if o.name not in by_name]
    k_hint: int | None = None
    if keypoint_names is not None:
        k = len(keypoint_names)
        exact = [p for p in per_tensor if p.channels == k]
        wider = [p for p in per_tensor if p.channels > k]
        if not exact and not wider:
            raise SpecError(f"{path}: {k} keypoint names given but no heatmap output has {k} or more channels "
                            f"({', '.join(f'{p.out.name} {p.layout} {p.channels}ch' for p in per_tensor)}); "
                            f"{_graph_summary(proto)}")
        hm = (exact or wider)[0]
    else:
        # most channels wins: a 1-channel map beside K-channel ones is a segmentation or centre map
        hm = max(per_tensor, key=lambda p: p.channels)
        widths = {o.dims[1] for o in non_hm if len(o.dims) in (2, 3) and (len(o.dims) == 2 or o.dims[2] == 1)}
        hints = sorted(m for m in widths if 1 < m < hm.channels)
        if len(hints) == 1:
            k_hint = hints[0]
        k = k_hint or hm.channels
    if len(per_tensor) > 1:
        others = ", ".join(f"{p.out.name} ({p.layout}, {p.channels}ch, stride {p.stride})"
                           for p in per_tensor if p is not hm)
        notes.append(f"several heatmap-like outputs; chose {hm.out.name!r}"
                     + (f" because it has {k} channels for {k} names" if keypoint_names and hm.channels == k
                        else " (the most channels)") + f"; not used: {others}")

    channels: tuple[int, ...] | None = None
    hm_values = probe[hm.out.name]
    if hm.channels != k:
        channels = tuple(range(k))
        why = (f"{k} keypoint names were given" if keypoint_names is not None else
               f"a per-keypoint head has width {k}; pass --names to override")
        notes.append(f"heatmap {hm.out.name!r} has {hm.channels} channels but {why}: heatmap.channels = "
                     f"0..{k - 1}; channels {k}..{hm.channels - 1} (background / PAF / other) are ignored")
        ax = 1 if hm.layout == "NCHW" else 3
        sel = np.concatenate([np.take(a, list(channels), axis=ax).reshape(-1) for a in hm_values])
    else:
        sel = np.concatenate([a.reshape(-1) for a in hm_values])
        if keypoint_names is None:
            notes.append(f"K = {k} from the heatmap channels; if some are background/PAF channels pass --names "
                         "with the real keypoints (the first len(names) channels are used)")
    act, why = _heatmap_activation(sel.astype(np.float64), seen)
    notes.append(f"heatmap {hm.out.name!r} {hm.out.shown}: layout {hm.layout}, {hm.channels} channels, "
                 f"stride {hm.stride} (input {h}x{w} / heatmap {h // hm.stride}x{w // hm.stride}); "
                 f"activation {act}: {why}")

    return _Head(k=k, used=(hm.out.name,), heatmap=HeatmapSpec(name=hm.out.name, layout=hm.layout,
                                                             stride=hm.stride, activation=act, channels=channels))


def _simcc_head(outs: list[_Out], h: int, w: int, names: list[str] | None, notes: list[str],
                seen: str) -> _Head | None:
    """Two 3-D outputs [N,K,W*r] and [N,K,H*r] with one split ratio r: a SimCC head."""
    three = [o for o in outs if len(o.dims) == 3 and o.dims[2] > 1]
    for ox in three:
        for oy in three:
            if ox is oy or ox.dims[1] != oy.dims[1] or (names is not None and ox.dims[1] != len(names)):
                continue
            r = ox.dims[2] / w
            if r <= 0 or abs(oy.dims[2] - h * r) > 0.5 or round(w * r) != ox.dims[2]:
                continue
            k = ox.dims[1]
            act, why = _activation(np.concatenate([ox.values, oy.values]), seen)
            notes.append(f"SimCC head: {ox.name!r} {ox.shown} classifies x over {ox.dims[2]} bins and {oy.name!r} "
                         f"{oy.shown} y over {oy.dims[2]} for input {w}x{h}: split ratio {r:g}, K = {k}; "
                         f"activation {act}: {why}")
            return _Head(k=k, used=(ox.name, oy.name),
                         simcc=SimCCSpec(x_name=ox.name, y_name=oy.name, split_ratio=float(r), activation=act))
    return None


def _centre_head(outs: list[_Out], h: int, w: int, names: list[str] | None, notes: list[str],
                 seen: str) -> _Head | None:
    """A 1-channel map next to a 2K-channel map of the same size: centres and keypoint offsets (CenterNet)."""
    maps = [c for o in outs for c in _heatmap_candidates(o, h, w)]
    for centre in (c for c in maps if c.channels == 1):
        offsets = [c for c in maps if c.out is not centre.out and c.layout == centre.layout
                   and c.stride == centre.stride and c.channels % 2 == 0 and c.channels >= 2
                   and (names is None or c.channels == 2 * len(names))]
        if not offsets:
            continue
        off = offsets[0]
        k = off.channels // 2
        act, why = _heatmap_activation(centre.out.values, seen)
        kp = [c for c in maps if c.channels == k and c.layout == centre.layout and c.out not in (centre.out, off.out)]
        used = [centre.out.name, off.out.name]
        heatmap = None
        if kp:
            kact, _ = _heatmap_activation(kp[0].out.values, seen)
            heatmap = HeatmapSpec(name=kp[0].out.name, layout=kp[0].layout, stride=kp[0].stride, activation=kact)
            used.append(kp[0].out.name)
        notes.append(f"centre head: {centre.out.name!r} {centre.out.shown} (1 channel, stride {centre.stride}) with "
                     f"{off.out.name!r} {off.out.shown} ({off.channels} channels = (dx, dy) for K = {k}); "
                     f"activation {act}: {why}; multi-instance decoding (3x3 local maxima, top "
                     f"{CentersSpec.max_instances}, threshold {CentersSpec.threshold})"
                     + (f"; keypoint heatmaps {kp[0].out.name!r} refine the offsets (centers.snap_distance)"
                        if kp else ""))
        centers = CentersSpec(name=centre.out.name, offsets=off.out.name, layout=centre.layout,
                              stride=centre.stride, activation=act, snap_distance=2.0 if kp else 0.0)
        return _Head(k=k, used=tuple(used), heatmap=heatmap, centers=centers)
    return None


_LANDMARK_FIELDS = {2: ("x", "y"), 3: ("x", "y", "z"), 4: ("x", "y", "z", "visibility"),
                    5: ("x", "y", "z", "visibility", "presence")}


def _with_landmarks(head: _Head, outs: list[_Out], h: int, w: int, notes: list[str]) -> _Head:
    """A flat [N, K*F] output (F = 2..5 values per keypoint) next to the heatmap: regressed landmarks."""
    for o in outs:
        if o.name in head.used or len(o.dims) != 2 or o.dims[1] % head.k or o.dims[1] // head.k not in _LANDMARK_FIELDS:
            continue
        f = o.dims[1] // head.k
        fields = _LANDMARK_FIELDS[f]
        xy = o.values.reshape(-1, head.k, f)[..., :2] if o.values.size else np.zeros((0, 2))
        coords = "normalized" if xy.size and float(np.abs(xy).max()) <= 1.5 else "pixels"
        notes.append(f"landmarks {o.name!r} {o.shown}: {f} values per keypoint read as {', '.join(fields)} "
                     f"(check landmarks.fields); x, y judged {coords} from their range; the heatmap refines the "
                     "regressed point (weighted mean in a 7x7 window) instead of replacing it")
        return _Head(k=head.k, used=(*head.used, o.name), heatmap=head.heatmap,
                     landmarks=LandmarksSpec(name=o.name, fields=fields, coords=coords))  # type: ignore[arg-type]
    return head


@contextlib.contextmanager
def _tflite_as_onnx(path: Path) -> Iterator[Path]:
    """A .tflite as a temporary ONNX (the 'tflite' extra); SpecErrors name the .tflite, not the temporary."""
    from heatdeploy.exporters.tflite import tflite_to_onnx

    with tempfile.TemporaryDirectory(prefix="heatdeploy-spec-") as tmp:
        onnx_path = Path(tmp) / f"{path.stem}.onnx"
        tflite_to_onnx(path, onnx_path, check=False)
        try:
            yield onnx_path
        except SpecError as exc:
            raise SpecError(str(exc).replace(str(onnx_path), str(path))) from None


def infer_spec(path: str | Path, *, keypoint_names: list[str] | None = None, seed: int = 0,
               data: str | Path | None = None, data_size: int = 8,
               preset: str | None = None) -> tuple[ModelSpec, list[str]]:
    """Propose a ModelSpec for an ONNX (or .tflite, through the 'tflite' extra) model; see :func:`_infer_onnx`.

    ``preset`` (mmpose, mediapipe, openpose, trt_pose) sets what the graph cannot show from the trainer family's
    rules (:mod:`heatdeploy.spec_presets`). A .tflite's ``TFLITE_METADATA`` normalisation is used where present.
    With ``data`` images and neither of those, the normalisation (and, where the images' aspect differs from the
    input's, letterbox vs stretch) is picked on up to ``data_size`` of them; the notes carry the scores.
    """
    from heatdeploy.spec_normalisation import tflite_normalisation

    path = Path(path)
    kw = {"keypoint_names": keypoint_names, "seed": seed, "data": data, "data_size": data_size, "preset": preset}
    if path.suffix.lower() != ".tflite":
        return _infer_onnx(path, **kw)  # type: ignore[arg-type]
    meta = tflite_normalisation(path)
    with _tflite_as_onnx(path) as onnx_path:
        spec, notes = _infer_onnx(onnx_path, tflite_meta=meta, **kw)  # type: ignore[arg-type]
    note = (f"read {path.name} through tflite2onnx (names and NHWC layouts as in the .tflite); "
            + ("its TFLITE_METADATA gives the input normalisation" if meta else
               "it carries no TFLite metadata normalisation (NormalizationOptions)"))
    return dataclasses.replace(spec, name=path.stem), [note, *notes]


def _data_inputs(data: str | Path, size: int, seed: int, inp: InputSpec) -> list[np.ndarray]:
    """Preprocessed tensors from a .npy/.npz (``--data``), one per run: logits vs probabilities judged on what
    the model really sees."""
    from heatdeploy.calibration.sources import CalibrationError, open_source

    try:
        return list(open_source(ModelSpec(keypoints=("probe",), input=inp), str(data), size, seed).batches(1))
    except CalibrationError as exc:
        raise SpecError(f"--data: {exc}") from None


def _detect(path: Path, proto: onnx.ModelProto, probe: dict[str, list[np.ndarray]], h: int, w: int,
            layout: Layout, keypoint_names: list[str] | None, notes: list[str],
            seen: str) -> tuple[list[_Out], _Head, list[tuple[_Out, str]]]:
    """The outputs, the localisation head and the existence candidates (per keypoint first)."""
    outs = _outputs(proto, probe)
    head = (_simcc_head(outs, h, w, keypoint_names, notes, seen)
            or _centre_head(outs, h, w, keypoint_names, notes, seen))
    if head is None:
        head = _heatmap_head(path, proto, probe, outs, h, w, layout, keypoint_names, notes, seen)
        head = _with_landmarks(head, outs, h, w, notes)
    non_hm = [o for o in outs if o.name not in head.used]
    ex_cands = [(o, per) for o in non_hm if head.centers is None and (per := _existence_shape(o, head.k)) is not None]
    ex_cands.sort(key=lambda t: 0 if t[1] == "keypoint" else 1)
    return outs, head, ex_cands


def _infer_onnx(path: str | Path, *, keypoint_names: list[str] | None = None, seed: int = 0,
                data: str | Path | None = None, data_size: int = 8, preset: str | None = None,
                tflite_meta: dict[str, Any] | None = None) -> tuple[ModelSpec, list[str]]:
    """Propose a ModelSpec for an ONNX model, with one note per guess saying why it was made.

    Shapes come from the graph (shape inference when dims are missing, then one probe run); logits vs
    probabilities from the value range of a few random forward passes. ``keypoint_names`` fixes K — needed
    when a heatmap tensor also holds background / PAF channels — and names the keypoints (default kp0..).
    Raises SpecError naming the graph's inputs and outputs when nothing heatmap-like is found.
    """
    from heatdeploy.exporters.onnx import graph_inputs, load_model_proto, value_dims
    from heatdeploy.spec_presets import PRESETS, apply_preset, preset_keypoints

    path = Path(path)
    if preset is not None and preset not in PRESETS:
        raise SpecError(f"--from: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if keypoint_names is None and preset_keypoints(preset) is not None:
        keypoint_names = list(preset_keypoints(preset) or ())
    if keypoint_names is not None:
        keypoint_names = [n.strip() for n in keypoint_names if n.strip()]
        if not keypoint_names:
            raise SpecError("keypoint names: the list is empty; pass names like nose,left_eye,right_eye")
    proto = _with_shapes(load_model_proto(path))
    notes: list[str] = []

    inputs = graph_inputs(proto)
    if not inputs:
        raise SpecError(f"{path}: the graph has no inputs ({_graph_summary(proto)})")
    image_inputs = [v for v in inputs if (value_dims(v) or []) and len(value_dims(v) or []) == 4]
    if not image_inputs:
        raise SpecError(f"{path}: no 4-D image input found ({_graph_summary(proto)})")
    inp = image_inputs[0]
    in_dims = value_dims(inp) or []
    layout, h, w, c = _input_layout(in_dims, inp.name, notes)

    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if c == 3 else ((0.449,), (0.226,))
    base = InputSpec(name=inp.name, layout=layout, height=h, width=w, channels=c, mean=mean, std=std)
    fixed: InputSpec | None = None
    if tflite_meta is not None:
        from heatdeploy.spec_normalisation import metadata_input

        fixed, why = metadata_input(base, tflite_meta)
        notes.append(why)
    elif preset is not None:
        from heatdeploy.spec_presets import preset_input

        fixed = preset_input(preset, base)[0]
    if data is None:
        probe = _probe(path, proto, inp.name, in_dims, seed, _SAMPLES)
        seen = f"{_SAMPLES} random inputs"
    else:
        from heatdeploy.spec_normalisation import sample_probe

        probe, seen, fixed = sample_probe(path, proto, base, in_dims, seed, data, data_size, fixed,
                                          keypoint_names, notes)
    outs, head, ex_cands = _detect(path, proto, probe, h, w, layout, keypoint_names, notes, seen)
    k, used = head.k, set(head.used)

    # existence: prefer a per-keypoint head over a per-instance one; everything else is ignored
    existence: ExistenceSpec | None = None
    if ex_cands:
        o, per = ex_cands[0]
        eact, ewhy = _activation(o.values, seen)
        existence = ExistenceSpec(name=o.name, per=per, activation=eact)  # type: ignore[arg-type]
        amb = " (K = 1, so per keypoint and per instance mean the same)" if k == 1 else ""
        notes.append(f"existence {o.name!r} {o.shown}: per {per}{amb}; activation {eact}: {ewhy}")
    else:
        notes.append("no existence output ([N,K], [N,K,1] or [N,1]); presence comes from the "
                     + ("centre score" if head.centers is not None else
                        "peak score vs decoder.score_threshold"))
    used |= {existence.name} if existence else set()
    for o in outs:
        if o.name not in used:
            notes.append(f"output {o.name!r} {o.shown} is ignored by the decoder")

    names = tuple(keypoint_names) if keypoint_names is not None else tuple(f"kp{i}" for i in range(k))
    if keypoint_names is None:
        notes.append(f"keypoint names default to kp0..kp{k - 1}; pass --names to set them")
    if preset is None and fixed is None:
        notes.append("not in the graph, defaults kept — check them: colour RGB, pixels x 1/255 then ImageNet "
                     f"mean/std {mean}/{std}, letterbox resize, heatmap.align center, decoder dark (sigma 2); "
                     "--data IMAGES picks the normalisation from sample images; --from "
                     "mmpose|mediapipe|openpose|trt_pose sets them for those trainers")
    elif preset is None:
        notes.append("heatmap.align center and decoder dark (sigma 2) are defaults — check them; --from "
                     "mmpose|mediapipe|openpose|trt_pose sets them for those trainers")
    spec = ModelSpec(
        keypoints=names,
        input=fixed or base,
        heatmap=head.heatmap,
        existence=existence,
        simcc=head.simcc,
        centers=head.centers,
        landmarks=head.landmarks,
        name=path.stem,
    ).validate()
    if preset is not None:
        spec, preset_notes = apply_preset(spec, preset, {o.name: o.dims for o in outs})
        notes += preset_notes
        if fixed is not None and tflite_meta is not None:  # the model's own metadata over the family's rule
            spec = dataclasses.replace(spec, input=dataclasses.replace(
                fixed, resize=spec.input.resize, pad_value=spec.input.pad_value))
            notes.append("the TFLite metadata's normalisation is kept over the preset's")
    return spec, notes


def check_spec(path: str | Path, spec: ModelSpec, image: np.ndarray | None = None) -> list[str]:
    """Check ``spec`` against the graph and, with ``image``, run the full pipeline once on it.

    Raises SpecError with what the graph has when names, layout, K, stride or the existence width disagree.
    Returns notes: what was checked and what the run decoded. A .tflite is read through the 'tflite' extra.
    """
    if Path(path).suffix.lower() == ".tflite":
        with _tflite_as_onnx(Path(path)) as onnx_path:
            return check_spec(onnx_path, spec, image)
    from heatdeploy.exporters.onnx import check_spec_against_graph, load_model_proto
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.backends import load_backend

    path = Path(path)
    spec.validate()
    proto = _with_shapes(load_model_proto(path))
    try:
        check_spec_against_graph(proto, spec)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    hs = spec.heatmap
    head = (f"heatmap {hs.name!r} {hs.layout} stride {hs.stride}" if hs is not None and spec.head == "heatmap"
            else f"{spec.head} head ({', '.join(spec.output_names)})")
    notes = [f"spec matches the graph: input {spec.input.name!r} {spec.input.layout} {spec.input.height}x"
             f"{spec.input.width}, {head}, {spec.num_keypoints} keypoints"
             + (f", existence {spec.existence.name!r} per {spec.existence.per}" if spec.existence else "")]
    if image is None:
        return notes
    img = np.asarray(image)
    try:
        pipe = Pipeline(load_backend("onnxruntime", str(path)), spec, "onnxruntime")
        pred = pipe.predict([img])
    except (ValueError, SpecError) as exc:  # decode shape errors surface here when graph dims were dynamic
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{path}: running the spec failed ({first}); {_graph_summary(proto)}") from None
    kp = pred.keypoints
    present = int(np.asarray(pred.present).sum())
    notes.append(f"ran once on a {img.shape[1]}x{img.shape[0]} image: keypoints {list(kp.shape)}, "
                 f"{present}/{spec.num_keypoints} present, peak scores "
                 f"[{float(np.min(pred.scores)):.3g}, {float(np.max(pred.scores)):.3g}]")
    return notes


def write_spec_proposal(spec: ModelSpec, path: str | Path) -> Path:
    """Validate and write the spec JSON atomically (a crash never leaves a half-written spec to export with)."""
    from heatdeploy.fsutil import atomic_write_text

    p = Path(path)
    atomic_write_text(p, spec.validate().to_json() + "\n")
    return p

"""What the graph cannot show about a model's input, read or measured: ``spec infer`` helpers.

* :func:`tflite_normalisation` reads ``NormalizationOptions`` (mean/std) and the colour space from a .tflite's
  ``TFLITE_METADATA`` buffer (the TFLite Support metadata flatbuffer, read field by field with ``flatbuffers``;
  no tflite-support needed).
* :func:`pick_normalisation` runs the model on a few sample images under the common normalisations (RGB [0,1],
  RGB [-1,1], ImageNet, BGR 0-255, OpenPose's BGR x/256-0.5, RGB 0-255) and, where the images' aspect differs
  from the input's, letterbox vs stretch, through heatdeploy's runtime backend; it scores each candidate by how
  much its outputs look like a trained model's (peaked heatmaps, confident presence) and returns the best with
  a table of the scores.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.spec import InputSpec, Layout, SpecError

__all__ = ["CANDIDATES", "Candidate", "Pick", "Roles", "pick_normalisation", "raw_images", "sample_probe",
           "tflite_normalisation"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Candidate:
    """One common input normalisation: (x * scale - mean) / std on ``color`` pixels."""

    key: str
    label: str
    color: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad_value: int

    def apply(self, inp: InputSpec) -> InputSpec:
        mean, std = self.mean, self.std
        if inp.channels == 1 and len(mean) == 3:
            mean, std = (0.449,), (0.226,)
        return dataclasses.replace(inp, color=self.color, scale=self.scale, mean=mean, std=std,  # type: ignore[arg-type]
                                   pad_value=self.pad_value)


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("rgb01", "RGB [0,1]", "RGB", 1 / 255, (0.0,), (1.0,), 0),
    Candidate("rgb11", "RGB [-1,1]", "RGB", 1 / 127.5, (1.0,), (1.0,), 0),
    Candidate("imagenet", "RGB ImageNet mean/std", "RGB", 1 / 255, _IMAGENET_MEAN, _IMAGENET_STD, 114),
    Candidate("bgr255", "BGR 0-255", "BGR", 1.0, (0.0,), (1.0,), 0),
    Candidate("openpose", "BGR x/256-0.5", "BGR", 1 / 256, (0.5,), (1.0,), 128),
    Candidate("rgb255", "RGB 0-255", "RGB", 1.0, (0.0,), (1.0,), 0),
)


# --- TFLite metadata ---------------------------------------------------------------------------------

def _tab(buf: Any, pos: int) -> Any:
    from flatbuffers.table import Table

    return Table(buf, pos)


def _slot(tab: Any, slot: int) -> int:
    """The field's offset from the table start (0: absent)."""
    return int(tab.Offset(4 + 2 * slot))


def _sub(tab: Any, slot: int) -> Any | None:
    o = _slot(tab, slot)
    return _tab(tab.Bytes, tab.Indirect(tab.Pos + o)) if o else None


def _u8(tab: Any, slot: int) -> int:
    from flatbuffers.number_types import Uint8Flags

    o = _slot(tab, slot)
    return int(tab.Get(Uint8Flags, tab.Pos + o)) if o else 0


def _tables(tab: Any, slot: int) -> list[Any]:
    o = _slot(tab, slot)
    if not o:
        return []
    start, n = tab.Vector(o), tab.VectorLen(o)
    return [_tab(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(n)]


def _floats(tab: Any, slot: int) -> tuple[float, ...]:
    o = _slot(tab, slot)
    if not o:
        return ()
    start, n = tab.Vector(o), tab.VectorLen(o)
    return tuple(float(v) for v in np.frombuffer(bytes(tab.Bytes[start:start + 4 * n]), dtype="<f4"))


def _tflite_metadata_bytes(path: Path) -> bytes | None:
    import tflite

    buf = path.read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() != b"TFLITE_METADATA":
            continue
        b = model.Buffers(md.Buffer())
        offset, size = (int(b.Offset()), int(b.Size())) if hasattr(b, "Offset") else (0, 0)
        if offset > 1 and size:  # large models keep buffers after the flatbuffer
            return buf[offset:offset + size]
        return b.DataAsNumpy().tobytes() if b.DataLength() else None
    return None


# metadata_schema.fbs slots: ModelMetadata {0 name, 3 subgraph_metadata}; SubGraphMetadata {2 input_tensor_metadata,
# 5 input_process_units}; TensorMetadata {3 content, 4 process_units}; Content {0/1 content_properties (union,
# 2 = ImageProperties)}; ImageProperties {0 color_space: 1 RGB, 2 GRAYSCALE}; ProcessUnit {0/1 options (union,
# 1 = NormalizationOptions)}; NormalizationOptions {0 mean, 1 std}.
def tflite_normalisation(path: str | Path) -> dict[str, Any] | None:
    """The first input's ``NormalizationOptions`` and colour space from a .tflite's metadata, or None.

    Returns ``{"mean": (...), "std": (...), "color": "RGB" | "GRAYSCALE" | None, "name": str}`` with mean/std
    as TFLite applies them, ``(pixel - mean) / std`` on 0-255 values. None when the model carries no
    ``TFLITE_METADATA`` or no normalisation for its input (MediaPipe's pose models carry none).
    """
    try:
        meta = _tflite_metadata_bytes(Path(path))
    except (ImportError, ValueError, IndexError, OSError, struct.error):
        return None
    if not meta or len(meta) < 8:
        return None
    try:
        return _parse_metadata(bytearray(meta))
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):  # a malformed buffer: as if absent
        return None


def _parse_metadata(buf: bytearray) -> dict[str, Any] | None:
    root = _tab(buf, int.from_bytes(buf[:4], "little"))
    subgraphs = _tables(root, 3)
    if not subgraphs:
        return None
    inputs = _tables(subgraphs[0], 2)
    units = [*(_tables(inputs[0], 4) if inputs else []), *_tables(subgraphs[0], 5)]
    color = None
    content = _sub(inputs[0], 3) if inputs else None
    if content is not None and _u8(content, 0) == 2 and (props := _sub(content, 1)) is not None:
        color = {1: "RGB", 2: "GRAYSCALE"}.get(_u8(props, 0))
    for unit in units:
        opts = _sub(unit, 1) if _u8(unit, 0) == 1 else None
        if opts is None:
            continue
        mean, std = _floats(opts, 0), _floats(opts, 1)
        if mean and std:
            o = _slot(root, 0)
            name = root.String(root.Pos + o).decode() if o else ""
            return {"mean": mean, "std": std, "color": color, "name": name}
    return None


def metadata_input(inp: InputSpec, meta: dict[str, Any]) -> tuple[InputSpec, str]:
    """``inp`` with the metadata's (pixel - mean) / std in heatdeploy's (pixel * scale - mean) / std form."""
    mean, std = meta["mean"], meta["std"]
    if any(s == 0 for s in std):
        raise SpecError(f"TFLite metadata: NormalizationOptions std {std} has a zero")
    if len(set(std)) == 1:  # one std: fold it into the scale, e.g. 127.5/127.5 -> x/127.5 - 1
        scale, m, s = 1.0 / std[0], tuple(round(v / std[0], 6) for v in mean), (1.0,)
    else:
        scale, m, s = 1 / 255, tuple(round(v / 255, 6) for v in mean), tuple(round(v / 255, 6) for v in std)
    if len(set(m)) == 1:
        m = m[:1]
    color = "RGB" if meta.get("color") in (None, "RGB") else inp.color
    out = dataclasses.replace(inp, color=color, scale=scale, mean=m, std=s)  # type: ignore[arg-type]
    return out, (f"input normalisation from the model's TFLite metadata ({meta.get('name') or 'TFLITE_METADATA'}): "
                 f"(pixel - {list(mean)}) / {list(std)} -> scale {scale:.6g}, mean {list(m)}, std {list(s)}, "
                 f"colour {color}" + (" (metadata colour space)" if meta.get("color") else " (TFLite's default)"))


# --- sample images -----------------------------------------------------------------------------------

def raw_images(data: str | Path, size: int, seed: int, inp: InputSpec) -> list[np.ndarray] | None:
    """Up to ``size`` BGR uint8 images from ``data`` (a folder, a video, synthetic:N), or None for a .npy/.npz
    (already preprocessed: there is no normalisation left to try)."""
    from heatdeploy.calibration.sources import CalibrationError, open_source
    from heatdeploy.spec import ModelSpec

    try:
        src = open_source(ModelSpec(keypoints=("probe",), input=inp), str(data), size, seed)
    except CalibrationError as exc:
        raise SpecError(f"--data: {exc}") from None
    if src.kind == "array":
        return None
    images: list[np.ndarray] = []

    class _Keep:  # the source hands its decoded frames to the preprocessor: keep them as they are
        def __call__(self, imgs: Sequence[np.ndarray], boxes: Any = None) -> Any:
            images.extend(np.asarray(i) for i in imgs)
            return dataclasses.make_dataclass("B", [("tensor", Any)])(np.zeros(len(imgs), np.float32))

    src._pre = _Keep()  # type: ignore[assignment]
    try:
        for _ in src.batches(max(1, size)):
            pass
    except CalibrationError as exc:
        raise SpecError(f"--data: {exc}") from None
    return images


# --- scoring -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roles:
    """Which outputs carry what, from the graph pass: heatmap-like maps and presence-like values."""

    maps: tuple[tuple[str, Layout, tuple[int, ...] | None], ...] = ()  # (name, layout, keypoint channels)
    simcc: tuple[str, ...] = ()
    presence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Score:
    label: str
    resize: str
    peak: float  # heatmap peak contrast x sharpness, [0, 1]
    contrast: float  # mean (max - median) of the maps in probability space
    entropy: float  # mean normalised entropy of the maps' mass over positions (1 = flat)
    confidence: float  # mean |2p - 1| of presence outputs (NaN: none)
    total: float


@dataclass(frozen=True)
class Pick:
    input: InputSpec
    best: Score
    scores: tuple[Score, ...]
    outputs: dict[str, list[np.ndarray]]  # the chosen candidate's outputs, one array per image
    notes: tuple[str, ...]


def _as_prob(v: np.ndarray) -> np.ndarray:
    """Probability-like values as they are; logits (a clear excursion outside [0, 1]) through a sigmoid."""
    if v.size and (float(v.min()) < -0.5 or float(v.max()) > 1.5):
        return 1.0 / (1.0 + np.exp(-np.clip(v, -60, 60)))
    return np.clip(v, 0.0, 1.0)


def _map_scores(maps: np.ndarray) -> tuple[float, float, float]:
    """(peak, contrast, entropy) over maps ``[M, P]`` (M maps of P positions), vectorised."""
    p = _as_prob(maps.astype(np.float64))
    med = np.median(p, axis=1, keepdims=True)
    contrast = p.max(axis=1) - med[:, 0]
    mass = np.clip(p - med, 0.0, None)
    tot = mass.sum(axis=1, keepdims=True)
    q = np.where(tot > 0, mass / np.where(tot > 0, tot, 1.0), 1.0 / p.shape[1])
    ent = -(q * np.log(np.where(q > 0, q, 1.0))).sum(axis=1) / np.log(max(p.shape[1], 2))
    ent = np.where(tot[:, 0] > 0, ent, 1.0)
    peak = contrast * (1.0 - ent)
    return float(peak.mean()), float(contrast.mean()), float(ent.mean())


def _simcc_scores(v: np.ndarray) -> tuple[float, float, float]:
    """SimCC logits [..., bins]: softmax over bins; contrast = top probability, entropy normalised."""
    x = v.reshape(-1, v.shape[-1]).astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    q = e / e.sum(axis=1, keepdims=True)
    ent = -(q * np.log(np.where(q > 0, q, 1.0))).sum(axis=1) / np.log(max(x.shape[1], 2))
    top = q.max(axis=1)
    return float((top * (1 - ent)).mean()), float(top.mean()), float(ent.mean())


def _score(outs: dict[str, np.ndarray], roles: Roles, label: str, resize: str) -> Score:
    parts: list[tuple[float, float, float]] = []
    for name, layout, channels in roles.maps:
        a = outs[name]
        a = a if layout == "NCHW" else np.moveaxis(a, -1, 1)
        if channels is not None:
            a = a[:, list(channels)]
        parts.append(_map_scores(a.reshape(a.shape[0] * a.shape[1], -1)))
    parts += [_simcc_scores(outs[n]) for n in roles.simcc]  # x and y bins separately (their counts differ)
    peak, contrast, ent = (tuple(float(np.mean(c)) for c in zip(*parts, strict=True)) if parts
                           else (0.0, 0.0, 1.0))
    conf = float("nan")
    if roles.presence:
        p = np.concatenate([_as_prob(outs[n].astype(np.float64)).reshape(-1) for n in roles.presence])
        conf = float(np.abs(2 * p - 1).mean())
    total = peak * (0.5 + 0.5 * conf) if roles.presence and parts else (conf if not parts else peak)
    return Score(label, resize, peak, contrast, ent, conf, total)


def _run(backend: Any, name: str, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    if batch is None:
        return backend.infer({name: x})
    chunks = [backend.infer({name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _table_text(scores: Sequence[Score], best: Score) -> str:
    rows = [f"{'candidate':<24}{'resize':<11}{'peak':>7}{'contrast':>10}{'entropy':>9}{'presence':>10}{'score':>8}"]
    for s in scores:
        conf = "-" if np.isnan(s.confidence) else f"{s.confidence:.3f}"
        mark = "  <- chosen" if s is best else ""
        rows.append(f"{s.label:<24}{s.resize:<11}{s.peak:>7.3f}{s.contrast:>10.3f}{s.entropy:>9.3f}{conf:>10}"
                    f"{s.total:>8.3f}{mark}")
    return "\n".join(rows)


def pick_normalisation(path: str | Path, inp: InputSpec, images: Sequence[np.ndarray], roles: Roles,
                       margin: float = 0.1) -> Pick:
    """The candidate normalisation (and resize mode, where the images' aspect differs from the input's) whose
    outputs on ``images`` look most like a trained model's; see the module docstring.

    Resize: letterbox (``inp.resize``) is kept unless stretch scores ``margin`` (relative) higher.
    """
    from heatdeploy.runtime.backends.base import backend_for_file, fixed_batch, load_backend
    from heatdeploy.runtime.preprocess import Preprocessor

    backend = load_backend(backend_for_file(path), str(path))
    batch = fixed_batch(backend, inp.name)
    resize0 = inp.resize if inp.resize != "crop" else "letterbox"
    results: list[tuple[Score, InputSpec, dict[str, np.ndarray]]] = []
    for cand in CANDIDATES:
        spec_in = dataclasses.replace(cand.apply(inp), resize=resize0)
        outs = _run(backend, inp.name, Preprocessor(spec_in)(list(images)).tensor, batch)
        results.append((_score(outs, roles, cand.label, resize0), spec_in, outs))
    best = max(results, key=lambda r: r[0].total)
    aspect = inp.width / inp.height
    differs = any(abs(img.shape[1] / img.shape[0] / aspect - 1) > 0.02 for img in images)
    notes = []
    if differs:
        other = "stretch" if resize0 == "letterbox" else "letterbox"
        spec_in = dataclasses.replace(best[1], resize=other)  # type: ignore[arg-type]
        outs = _run(backend, inp.name, Preprocessor(spec_in)(list(images)).tensor, batch)
        s = _score(outs, roles, best[0].label, other)
        results.append((s, spec_in, outs))
        if s.total > best[0].total * (1 + margin):
            notes.append(f"resize {other}: it scores {s.total:.3f} vs {best[0].total:.3f} with {resize0}")
            best = results[-1]
        else:
            notes.append(f"resize {resize0} kept: {other} scores {s.total:.3f} vs {best[0].total:.3f} "
                         f"(a change needs {margin:.0%} more)")
    else:
        notes.append(f"resize {resize0} kept: the sample images already have the input's aspect, so it does not "
                     "matter for them — check input.resize")
    ranked = sorted(r[0].total for r in results[:len(CANDIDATES)])
    runner_up = ranked[-2] if len(ranked) > 1 else 0.0
    sure = best[0].total > 1.5 * runner_up
    head = (f"input normalisation {best[0].label} picked on {len(images)} sample images: its outputs look most "
            f"like a trained model's (score = heatmap peak contrast x (1 - entropy)"
            + (" x (0.5 + 0.5 presence confidence)" if roles.presence else "") + f"; runner-up {runner_up:.3f}"
            + ("" if sure else "; the margin is small — check input.color/scale/mean/std") + ")")
    table = _table_text([r[0] for r in results], best[0])
    per_image = {k: [v[i:i + 1] for i in range(len(v))] for k, v in best[2].items()}
    return Pick(best[1], best[0], tuple(r[0] for r in results), per_image, (head, *notes, "candidates:\n" + table))


def _roles(head: Any, ex_cands: list[tuple[Any, str]]) -> Roles:
    maps = []
    if head.heatmap is not None:
        maps.append((head.heatmap.name, head.heatmap.layout, head.heatmap.channels))
    if head.centers is not None:
        maps.append((head.centers.name, head.centers.layout, None))
    simcc = (head.simcc.x_name, head.simcc.y_name) if head.simcc is not None else ()
    return Roles(tuple(maps), simcc, tuple(o.name for o, _ in ex_cands[:1]))


def sample_probe(path: Path, proto: Any, inp: InputSpec, in_dims: list[Any], seed: int, data: str | Path,
                 data_size: int, fixed: InputSpec | None, keypoint_names: list[str] | None,
                 notes: list[str]) -> tuple[dict[str, list[np.ndarray]], str, InputSpec | None]:
    """The probe on ``--data``: a .npy/.npz as it is; images under ``fixed`` (metadata or preset) or, with
    nothing fixed, under the normalisation :func:`pick_normalisation` picks on them."""
    from heatdeploy.runtime.preprocess import Preprocessor
    from heatdeploy.spec_infer import _SAMPLES, _data_inputs, _detect, _probe

    raw = raw_images(data, data_size, seed, fixed or inp)
    if raw is None:
        tensors = _data_inputs(data, data_size, seed, fixed or inp)
        return _probe(path, proto, inp.name, in_dims, seed, 0, tensors), f"{len(tensors)} arrays from {data}", fixed
    if fixed is not None:
        tensors = [Preprocessor(fixed)([im]).tensor for im in raw]
        return _probe(path, proto, inp.name, in_dims, seed, 0, tensors), f"{len(raw)} images from {data}", fixed
    rand = _probe(path, proto, inp.name, in_dims, seed, _SAMPLES)
    _, head, ex_cands = _detect(path, proto, rand, inp.height, inp.width, inp.layout, keypoint_names, [],
                                "random inputs")
    pick = pick_normalisation(path, inp, raw, _roles(head, ex_cands))
    notes.extend(pick.notes)
    return pick.outputs, f"{len(raw)} images from {data} ({pick.best.label})", pick.input

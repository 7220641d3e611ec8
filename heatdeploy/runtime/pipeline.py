"""Load a bundle (or a bare .onnx with an embedded spec) and turn images into keypoints.

preprocess -> backend.infer -> decode -> map back to image pixels. The same decoder serves
every backend, so engines differ only in the tensors they return.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.bundle import Artifact, Bundle, BundleError
from heatdeploy.errors import InputError
from heatdeploy.runtime.backends.base import (
    Backend,
    BackendError,
    backend_for_file,
    engine_installed,
    extra_hint,
    fixed_batch,
    load_backend,
    readers_of,
)
from heatdeploy.runtime.choice import deployed
from heatdeploy.runtime.heads import head_decoder
from heatdeploy.runtime.preprocess import Preprocessor, map_to_image
from heatdeploy.runtime.sources import load_image
from heatdeploy.spec import ModelSpec, SpecError


@dataclass
class Prediction:
    """Keypoints of a batch in original-image pixels, with scores and existence."""

    keypoints: np.ndarray  # [N,K,2] float32 (x, y), pixel centres at integers
    scores: np.ndarray  # [N,K] heatmap peak
    presence: np.ndarray  # [N,K] existence probability
    present: np.ndarray  # [N,K] bool
    image_sizes: np.ndarray  # [N,2] (h, w)
    keypoints_input: np.ndarray  # [N,K,2] in model-input pixels
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # raw engine outputs
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # Multi-instance (centre) heads: the arrays above are [N,M,K,...] and this is [N,M] (0: empty slot).
    instance_scores: np.ndarray | None = None
    # What plot() needs: the images predicted, keypoint names and skeleton. Images read from paths are held;
    # arrays the caller passed are weak references, so a loop that keeps predictions does not keep frames.
    images: list[Any] | None = field(default=None, repr=False)
    names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()

    def plot(self, index: int = 0, image: np.ndarray | None = None, labels: str = "none") -> np.ndarray:
        """Image ``index`` with its keypoints drawn (BGR uint8); ``labels``: none | names | scores."""
        from heatdeploy.runtime.draw import draw_keypoints

        if image is None:
            held = None if self.images is None else self.images[index]
            image = held() if isinstance(held, weakref.ref) else held
            if image is None:
                raise InputError("Prediction.plot: this prediction no longer holds its image (arrays are kept "
                                 "only while you hold them); pass image=")
        return draw_keypoints(image, self.keypoints[index], self.presence[index], self.present[index],
                              self.skeleton, names=self.names or None, labels=labels)

    def save(self, path: str | Path, index: int = 0, labels: str = "none") -> Path:
        """``.json``: every image's records; an image suffix (.png, .jpg, ...): the overlay of image ``index``."""
        import cv2

        from heatdeploy.fsutil import atomic_write_bytes

        path = Path(path)
        if path.suffix.lower() == ".json":
            write_predictions(path, self.to_records(self.names))
            return path
        ok, buf = cv2.imencode(path.suffix or ".png", self.plot(index, labels=labels))
        if not ok:
            raise InputError(f"{path}: OpenCV cannot encode {path.suffix!r}; name it .png or .jpg (or .json)")
        atomic_write_bytes(path, buf.tobytes())
        return path

    def to_records(self, names: Sequence[str], files: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready record per image."""
        def points(idx: tuple[int, ...]) -> list[dict[str, Any]]:
            return [{"name": n, "x": round(float(x), 2), "y": round(float(y), 2),
                     "score": round(float(s), 4), "presence": round(float(p), 4), "present": bool(f)}
                    for n, (x, y), s, p, f in zip(names, self.keypoints[idx], self.scores[idx], self.presence[idx],
                                                  self.present[idx], strict=True)]

        out = []
        for i in range(len(self.keypoints)):
            rec: dict[str, Any] = {"height": int(self.image_sizes[i][0]), "width": int(self.image_sizes[i][1])}
            if self.instance_scores is None:
                rec["keypoints"] = points((i,))
            else:
                rec["instances"] = [{"score": round(float(self.instance_scores[i, m]), 4), "keypoints": points((i, m))}
                                    for m in np.flatnonzero(self.present[i].any(axis=-1))]
            if files is not None:
                rec = {"image": str(files[i]), **rec}
            out.append(rec)
        return out


def _concat(preds: list[Prediction]) -> Prediction:
    if len(preds) == 1:
        return preds[0]
    keys = preds[0].outputs.keys()
    timings = {k: sum(p.timings.get(k, 0.0) for p in preds) for k in preds[0].timings}
    inst = None if preds[0].instance_scores is None else np.concatenate([p.instance_scores for p in preds])
    return Prediction(*(np.concatenate([getattr(p, f) for p in preds]) for f in
                        ("keypoints", "scores", "presence", "present", "image_sizes", "keypoints_input")),
                      outputs={k: np.concatenate([p.outputs[k] for p in preds]) for k in keys},
                      timings=timings, instance_scores=inst,
                      images=None if preds[0].images is None else [im for p in preds for im in p.images or []],
                      names=preds[0].names, skeleton=preds[0].skeleton)


class Pipeline:
    """A loaded model ready to predict: spec + backend + preprocessor + codec."""

    def __init__(self, backend: Backend, spec: ModelSpec, backend_name: str = "",
                 artifact: Artifact | None = None, bundle: Bundle | None = None) -> None:
        self.backend, self.spec, self.backend_name = backend, spec, backend_name
        self.artifact, self.bundle = artifact, bundle
        self.preprocess = Preprocessor(spec.input)
        self._decode = head_decoder(spec, peaks=False)  # a Prediction holds no peaks: skip what only they need
        self._names = tuple(spec.keypoints)
        self._skeleton = tuple(tuple(e) for e in spec.skeleton)
        self.fixed_batch = fixed_batch(backend, spec.input.name)  # None: the engine takes any batch
        missing = [n for n in (spec.input.name,) if n not in backend.input_names]
        missing += [n for n in spec.output_names if n not in backend.output_names]
        if missing:
            raise SpecError(f"the spec names {', '.join(map(repr, missing))} but the model has inputs "
                            f"{backend.input_names} and outputs {backend.output_names}; fix the spec's names")

    @classmethod
    def load(cls, path: str | Path, *, artifact: str | None = None, precision: str | None = None,
             backend: str | None = None, options: dict[str, Any] | None = None,
             verify: bool = True) -> Pipeline:
        """Open a bundle directory, or a bare model file (.onnx, .xml) that embeds its spec.

        Without ``backend``, a bare file opens with the first installed engine that reads it and a bundle picks
        an artifact whose engine is installed, so a box with one engine runs what that engine can.
        ``verify`` checks the sha256 of the artifact loaded (only that one: a broken INT8 file must not stop
        the FP32 one).
        """
        path = Path(path)
        if path.is_file():
            name = backend_for_file(path, backend)
            loaded = load_backend(name, str(path), options)
            spec = loaded.spec()
            if spec is None:
                raise SpecError(f"{path}: carries no heatdeploy spec; export it with 'heatdeploy export' "
                                "or pass a bundle")
            return cls(loaded, spec, name)
        if not path.exists():
            raise BundleError(f"{path}: no such file or folder; pass a bundle folder made by 'heatdeploy export' "
                              "or a model file (.onnx, .xml) that embeds its spec")
        b = Bundle.load(path, verify=False)
        art, name = pick_artifact(b, artifact, precision, backend)
        if verify:
            b.verify([art])
        return cls(load_backend(name, str(b.path_of(art)), options), b.spec, name, art, b)

    def infer(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """One engine call, or for a fixed-batch graph one per chunk of its batch size (the last chunk padded
        with copies of the last frame, padding dropped), so every caller passes any batch it has."""
        size, n = self.fixed_batch, len(tensor)
        if size is None or n == size:
            return self.backend.infer({self.spec.input.name: tensor})
        padded = np.concatenate([tensor, np.repeat(tensor[-1:], -n % size, axis=0)]) if n % size else tensor
        parts = [self.backend.infer({self.spec.input.name: padded[i:i + size]}) for i in range(0, n, size)]
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

    def predict(self, images: Sequence[np.ndarray | str | Path], boxes: np.ndarray | None = None,
                batch_size: int = 8) -> Prediction:
        """Images (arrays in BGR or paths) -> keypoints in each image's own pixels."""
        arrays = [load_image(im) if isinstance(im, (str, Path)) else im for im in images]
        held = [a if isinstance(im, (str, Path)) else _weak(a) for im, a in zip(images, arrays, strict=True)]
        if not arrays:
            raise InputError("predict: no images given")
        preds = []
        for i in range(0, len(arrays), batch_size):
            chunk_boxes = None if boxes is None else np.asarray(boxes)[i:i + batch_size]
            preds.append(self._predict_batch(arrays[i:i + batch_size], chunk_boxes))
            preds[-1].images = held[i:i + batch_size]
        return _concat(preds)

    def _predict_batch(self, images: Sequence[np.ndarray], boxes: np.ndarray | None) -> Prediction:
        t0 = time.perf_counter()
        batch = self.preprocess(images, boxes)
        t1 = time.perf_counter()
        outputs = self.infer(batch.tensor)
        t2 = time.perf_counter()
        pred = self.decode(outputs, batch.transforms, batch.image_sizes)
        t3 = time.perf_counter()
        pred.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "decode": t3 - t2}
        return pred

    def decode(self, outputs: dict[str, np.ndarray], transforms: np.ndarray,
               image_sizes: np.ndarray) -> Prediction:
        dec = self._decode(outputs)  # the head's decoder applies the spec's activations
        return Prediction(keypoints=map_to_image(dec.coords, transforms).astype(np.float32),
                          scores=dec.scores, presence=dec.presence, present=dec.present,
                          image_sizes=np.asarray(image_sizes), keypoints_input=dec.coords, outputs=outputs,
                          instance_scores=dec.instance_scores, names=self._names, skeleton=self._skeleton)


def _weak(image: Any) -> Any:
    """A weak reference to an array (a strong one to anything that cannot be weakly referenced)."""
    try:
        return weakref.ref(image)
    except TypeError:
        return image


def pick_artifact(b: Bundle, name: str | None = None, precision: str | None = None,
                  backend: str | None = None) -> tuple[Artifact, str]:
    """(artifact, backend to run it with). An explicit name wins (run by another installed engine that reads
    its file when its own is missing); then, asked for nothing, the bundle's recorded deployment choice
    (``heatdeploy choose``) when its engine is installed; otherwise the artifacts matching precision/backend
    (fp32 first when no precision is asked), taking the first whose engine is installed, then the first
    another installed engine reads (OpenVINO reads ONNX)."""
    if name is not None:
        art = b.artifact(name)
        if backend is None and not engine_installed(art.backend):  # e.g. onnx-fp32 on an OpenVINO-only box
            other = next((r for r in readers_of(art.path) if engine_installed(r)), None)
            if other is not None:
                return art, other
        return art, backend or art.backend
    if backend is not None:
        # the backend's own artifacts first, else one whose file it reads (OpenVINO runs the ONNX artifact)
        own = [a for a in b.artifacts if a.backend == backend and precision in (None, a.precision)]
        readable = [a for a in b.artifacts if backend in readers_of(a.path) and precision in (None, a.precision)]
        for group in (own, readable):
            if group:
                group.sort(key=lambda a: a.precision != "fp32")  # stable: manifest order within each group
                return group[0], backend
        return b.artifact(precision=precision, backend=backend), backend  # raises, naming what the bundle has
    if precision is None:
        chosen = deployed(b)  # 'heatdeploy choose': the fastest artifact that holds the gate, measured here
        if chosen is not None:
            return chosen, chosen.backend
    matching = [a for a in b.artifacts if precision is None or a.precision == precision]
    if not matching:
        b.artifact(precision=precision)  # raises, naming what the bundle has
    if precision is None:
        matching.sort(key=lambda a: a.precision != "fp32")  # stable: manifest order within each group
    for art in matching:
        if engine_installed(art.backend):
            return art, art.backend
    for art in matching:
        other = next((r for r in readers_of(art.path) if r != art.backend and engine_installed(r)), None)
        if other is not None:
            return art, other
    have = ", ".join(f"{a.name} ({a.backend})" for a in matching)
    raise BackendError(f"{b.root}: no engine installed for its artifacts {have}; "
                       f"{extra_hint(matching[0].backend)}")


def write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    from heatdeploy.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(records, indent=2))


__all__ = ["BackendError", "Pipeline", "Prediction", "pick_artifact", "write_predictions"]

"""ModelSpec: everything needed to run and decode a heatmap model without torch.

The spec is plain JSON with a schema version. It travels inside the ONNX ``metadata_props``
(key ``heatdeploy.spec``), OpenVINO ``rt_info`` and the bundle manifest, so every engine's
artifact can be decoded by the same runtime code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from heatdeploy.errors import HeatdeployError

SCHEMA_VERSION = 1
METADATA_KEY = "heatdeploy.spec"

Layout = Literal["NCHW", "NHWC"]
ColorOrder = Literal["RGB", "BGR"]
ResizeMode = Literal["letterbox", "stretch", "crop"]
Activation = Literal["logits", "probabilities"]
ExistencePer = Literal["keypoint", "instance"]
Align = Literal["center", "udp"]
DecoderName = Literal["argmax", "quarter", "dark", "soft_argmax"]
CoordUnits = Literal["pixels", "normalized"]
HeadKind = Literal["heatmap", "simcc", "centers", "landmarks"]


class SpecError(HeatdeployError, ValueError):
    """A spec that cannot be used; the message names the field and what would fix it."""


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")


def _positive(where: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{where}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """How raw images become the model's input tensor (the runtime's preprocess reads this)."""

    name: str = "image"
    layout: Layout = "NCHW"
    height: int = 256
    width: int = 192
    channels: int = 3
    color: ColorOrder = "RGB"
    scale: float = 1.0 / 255.0  # applied to uint8 pixels before mean/std
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize: ResizeMode = "letterbox"
    pad_value: int = 114

    def validate(self) -> None:
        _choice("input.layout", self.layout, ("NCHW", "NHWC"))
        _choice("input.color", self.color, ("RGB", "BGR"))
        _choice("input.resize", self.resize, ("letterbox", "stretch", "crop"))
        for key in ("height", "width", "channels", "scale"):
            _positive(f"input.{key}", getattr(self, key))
        if self.channels not in (1, 3):
            raise SpecError(f"input.channels: expected 1 or 3, got {self.channels}")
        for key in ("mean", "std"):
            vals = getattr(self, key)
            if len(vals) not in (1, self.channels):
                raise SpecError(
                    f"input.{key}: expected 1 or {self.channels} values, got {len(vals)}"
                )
        if any(s == 0 for s in self.std):
            raise SpecError("input.std: values must be non-zero")


@dataclass(frozen=True)
class HeatmapSpec:
    """Where the heatmaps are and how their pixels map to input pixels."""

    name: str = "heatmaps"
    layout: Layout = "NCHW"
    stride: int = 4
    activation: Activation = "probabilities"  # logits: peak scores go through a sigmoid
    align: Align = "center"  # center: x_hm = (x_in + 0.5) / stride - 0.5 ; udp: x_hm = x_in * (w-1)/(W-1)
    channels: tuple[int, ...] | None = None  # keypoint channels when the tensor holds others too

    def validate(self) -> None:
        _choice("heatmap.layout", self.layout, ("NCHW", "NHWC"))
        _choice("heatmap.activation", self.activation, ("logits", "probabilities"))
        _choice("heatmap.align", self.align, ("center", "udp"))
        _positive("heatmap.stride", self.stride)


@dataclass(frozen=True)
class ExistenceSpec:
    """The presence / visibility head: a binary classifier per keypoint or per instance."""

    name: str = "existence"
    per: ExistencePer = "keypoint"
    activation: Activation = "logits"
    threshold: float = 0.5

    def validate(self) -> None:
        _choice("existence.per", self.per, ("keypoint", "instance"))
        _choice("existence.activation", self.activation, ("logits", "probabilities"))
        if not 0.0 < self.threshold < 1.0:
            raise SpecError(f"existence.threshold: expected 0 < t < 1, got {self.threshold}")


@dataclass(frozen=True)
class SimCCSpec:
    """SimCC head (RTMPose): x and y each classified over ``size * split_ratio`` bins, ``[N,K,L]`` per axis."""

    x_name: str = "simcc_x"
    y_name: str = "simcc_y"
    split_ratio: float = 2.0  # bins per input pixel
    activation: Activation = "logits"  # logits: 1-D Taylor step on the logits; probabilities: on their log
    refine: bool = True  # sub-bin Taylor refinement (SimCC's own resolution is 1 / split_ratio px)

    def validate(self) -> None:
        _positive("simcc.split_ratio", self.split_ratio)
        _choice("simcc.activation", self.activation, ("logits", "probabilities"))
        if self.x_name == self.y_name:
            raise SpecError("simcc.y_name: must differ from simcc.x_name (one output per axis)")


@dataclass(frozen=True)
class CentersSpec:
    """Multi-instance centre heatmap (CenterNet-style): local maxima are instances, offsets place keypoints."""

    name: str = "centers"  # [N,1,h,w] (or NHWC [N,h,w,1]) centre heatmap
    offsets: str = "offsets"  # [N,2K,h,w]: (dx, dy) per keypoint from the centre pixel, heatmap px, x0,y0,x1,...
    layout: Layout = "NCHW"
    stride: int = 4
    activation: Activation = "logits"
    max_instances: int = 20  # top-k centres kept per image
    threshold: float = 0.3  # centre probability for an instance
    pool_kernel: int = 3  # local-maximum window (CenterNet's max-pool NMS)
    nms_distance: float = 1.0  # heatmap px: drop an instance whose mean keypoint distance to a better one is below
    snap_distance: float = 0.0  # heatmap px: move regressed keypoints onto keypoint-heatmap peaks within it (0: off)

    def validate(self) -> None:
        _choice("centers.layout", self.layout, ("NCHW", "NHWC"))
        _choice("centers.activation", self.activation, ("logits", "probabilities"))
        _positive("centers.stride", self.stride)
        _positive("centers.max_instances", self.max_instances)
        if not 0.0 <= self.threshold < 1.0:
            raise SpecError(f"centers.threshold: expected 0 <= t < 1, got {self.threshold}")
        if self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise SpecError(f"centers.pool_kernel: expected an odd size >= 1, got {self.pool_kernel}")
        if self.nms_distance < 0 or self.snap_distance < 0:
            raise SpecError("centers.nms_distance / snap_distance: expected >= 0")
        if self.offsets == self.name:
            raise SpecError("centers.offsets: must differ from centers.name (separate tensors)")


@dataclass(frozen=True)
class LandmarksSpec:
    """A flat regressed vector ``[N, K*F]`` (keypoint-major, e.g. BlazePose's x, y, z, visibility, presence).

    The regressed (x, y) are the coordinates; a heatmap, when the spec has one, refines them by its weighted
    mean around the regressed point (MediaPipe's RefineLandmarksFromHeatmap) instead of replacing them.
    """

    name: str = "landmarks"
    fields: tuple[str, ...] = ("x", "y", "z", "visibility", "presence")
    coords: CoordUnits = "pixels"  # pixels: model-input px; normalized: [0, 1] of the input width / height
    refine_kernel: int = 7  # heatmap px window of the weighted mean; 0: no refinement
    refine_min_score: float = 0.5  # refine only where the window's best heatmap probability reaches this

    def validate(self) -> None:
        _choice("landmarks.coords", self.coords, ("pixels", "normalized"))
        if "x" not in self.fields or "y" not in self.fields:
            raise SpecError(f"landmarks.fields: must name 'x' and 'y', got {list(self.fields)}")
        if len(set(self.fields)) != len(self.fields):
            raise SpecError(f"landmarks.fields: names must be unique, got {list(self.fields)}")
        if self.refine_kernel < 0 or (self.refine_kernel and self.refine_kernel % 2 == 0):
            raise SpecError(f"landmarks.refine_kernel: expected 0 or an odd size, got {self.refine_kernel}")


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder turns heatmaps into coordinates, and its settings."""

    name: DecoderName = "dark"
    sigma: float = 2.0  # Gaussian sigma in heatmap px used for targets and DARK modulation
    blur_kernel: int = 0  # 0: derived from sigma (odd, ~6 sigma + 1)
    score_threshold: float = 0.1  # heatmap peak below this -> absent when no existence head
    soft_argmax_beta: float = 1.0

    def validate(self) -> None:
        _choice("decoder.name", self.name, ("argmax", "quarter", "dark", "soft_argmax"))
        _positive("decoder.sigma", self.sigma)
        if self.blur_kernel < 0 or (self.blur_kernel and self.blur_kernel % 2 == 0):
            raise SpecError(f"decoder.blur_kernel: expected 0 or an odd size, got {self.blur_kernel}")

    def kernel_size(self) -> int:
        if self.blur_kernel:
            return self.blur_kernel
        k = int(round(6 * self.sigma)) + 1
        return k if k % 2 else k + 1


@dataclass(frozen=True)
class ModelSpec:
    """The contract between exporter, bundle and runtime (see shared/ARCHITECTURE.md)."""

    keypoints: tuple[str, ...]
    input: InputSpec = field(default_factory=InputSpec)
    heatmap: HeatmapSpec | None = field(default_factory=HeatmapSpec)  # None: a SimCC or pure-regression model
    existence: ExistenceSpec | None = field(default_factory=ExistenceSpec)
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    simcc: SimCCSpec | None = None
    centers: CentersSpec | None = None
    landmarks: LandmarksSpec | None = None
    skeleton: tuple[tuple[int, int], ...] = ()
    name: str = "model"
    schema_version: int = SCHEMA_VERSION

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def head(self) -> HeadKind:
        """Which decoder family the spec selects: the localisation head the coordinates come from."""
        if self.simcc is not None:
            return "simcc"
        if self.centers is not None:
            return "centers"
        if self.landmarks is not None:
            return "landmarks"
        return "heatmap"

    @property
    def multi_instance(self) -> bool:
        """Centre heads find any number of instances per image: outputs carry an instance axis ``[N,M,K]``."""
        return self.centers is not None

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(h, w) of the keypoint heatmap for this input size and stride."""
        if self.heatmap is None:
            raise SpecError("heatmap: this spec has no heatmap output")
        s = self.heatmap.stride
        return self.input.height // s, self.input.width // s

    @property
    def centers_size(self) -> tuple[int, int]:
        """(h, w) of the centre heatmap."""
        if self.centers is None:
            raise SpecError("centers: this spec has no centre heatmap")
        s = self.centers.stride
        return self.input.height // s, self.input.width // s

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output the decoder reads, primary localisation tensor first."""
        names: list[str] = []
        if self.simcc is not None:
            names += [self.simcc.x_name, self.simcc.y_name]
        if self.centers is not None:
            names += [self.centers.name, self.centers.offsets]
        if self.landmarks is not None:
            names.append(self.landmarks.name)
        if self.heatmap is not None:
            names.append(self.heatmap.name)
        if self.existence is not None:
            names.append(self.existence.name)
        return tuple(names)

    @property
    def primary_output(self) -> str:
        """The tensor whose error histogram parity reports (the keypoint heatmap when there is one)."""
        return self.heatmap.name if self.heatmap is not None else self.output_names[0]

    def validate(self) -> ModelSpec:
        if self.schema_version != SCHEMA_VERSION:
            raise SpecError(
                f"schema_version: this heatdeploy reads version {SCHEMA_VERSION}, got "
                f"{self.schema_version}; upgrade heatdeploy or re-export the spec"
            )
        if not self.keypoints:
            raise SpecError("keypoints: the spec names no keypoints; list their names")
        if len(set(self.keypoints)) != len(self.keypoints):
            raise SpecError("keypoints: names must be unique")
        self.input.validate()
        self._validate_heads()
        self.decoder.validate()
        k = self.num_keypoints
        for i, edge in enumerate(self.skeleton):
            if len(edge) != 2 or not all(isinstance(j, int) and 0 <= j < k for j in edge):
                raise SpecError(f"skeleton[{i}]: expected two keypoint indices in [0, {k}), got {edge!r}")
        if self.heatmap is not None and self.heatmap.channels is not None and len(self.heatmap.channels) != k:
            raise SpecError(
                f"heatmap.channels: selects {len(self.heatmap.channels)} channels but the spec has "
                f"{k} keypoints"
            )
        return self

    def _validate_heads(self) -> None:
        """Each section alone, then how they combine: one localisation head, every tensor named once."""
        for sub in (self.heatmap, self.existence, self.simcc, self.centers, self.landmarks):
            if sub is not None:
                sub.validate()
        if self.simcc is not None and (self.centers is not None or self.landmarks is not None):
            raise SpecError("simcc: a SimCC head cannot be combined with centers or landmarks; keep one head")
        if self.simcc is not None and self.heatmap is not None:
            raise SpecError("heatmap: a SimCC model has no heatmap output; set heatmap to null")
        if self.centers is not None and self.landmarks is not None:
            raise SpecError("landmarks: multi-instance centre heads place keypoints by offsets; drop landmarks")
        if self.heatmap is None and self.simcc is None and self.centers is None and self.landmarks is None:
            raise SpecError("heatmap: the spec has no localisation head; set heatmap (or simcc, centers, landmarks)")
        if self.centers is not None and self.existence is not None:
            raise SpecError("existence: a centre head's instance score is its existence; set existence to null")
        names = self.output_names
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"output names: {', '.join(map(repr, dup))} used for more than one head "
                            "(heatmap, existence, simcc, centers and landmarks are separate tensors)")

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skeleton"] = [list(e) for e in self.skeleton]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> ModelSpec:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            spec = cls(
                keypoints=tuple(_require(data, "keypoints", source)),
                input=_sub(InputSpec, data.get("input", {}), "input"),
                heatmap=(None if "heatmap" in data and data["heatmap"] is None
                         else _sub(HeatmapSpec, data.get("heatmap", {}), "heatmap")),
                existence=_optional(ExistenceSpec, data, "existence"),
                decoder=_sub(DecoderSpec, data.get("decoder", {}), "decoder"),
                simcc=_optional(SimCCSpec, data, "simcc"),
                centers=_optional(CentersSpec, data, "centers"),
                landmarks=_optional(LandmarksSpec, data, "landmarks"),
                skeleton=tuple(tuple(e) for e in data.get("skeleton", ())),
                name=str(data.get("name", "model")),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
            )
            _reject_unknown(data, {f.name for f in fields(cls)}, source)
            return spec.validate()
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "spec") -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise SpecError(f"{p}: cannot read spec file ({exc.strerror})") from None
        return cls.from_json(text, str(p))

    def save(self, path: str | Path) -> None:
        from heatdeploy.fsutil import atomic_write_text

        atomic_write_text(Path(path), self.to_json())


def _require(data: dict[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise SpecError(f"missing required field {key!r}")
    return data[key]


def _reject_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _optional(cls: type, data: dict[str, Any], key: str) -> Any:
    """A section that may be absent or null."""
    return None if data.get(key) is None else _sub(cls, data[key], key)


def _sub(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)

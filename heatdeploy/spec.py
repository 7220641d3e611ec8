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

SCHEMA_VERSION = 1
METADATA_KEY = "heatdeploy.spec"

Layout = Literal["NCHW", "NHWC"]
ColorOrder = Literal["RGB", "BGR"]
ResizeMode = Literal["letterbox", "stretch", "crop"]
Activation = Literal["logits", "probabilities"]
ExistencePer = Literal["keypoint", "instance"]
Align = Literal["center", "udp"]
DecoderName = Literal["argmax", "quarter", "dark", "soft_argmax"]


class SpecError(ValueError):
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
    heatmap: HeatmapSpec = field(default_factory=HeatmapSpec)
    existence: ExistenceSpec | None = field(default_factory=ExistenceSpec)
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    skeleton: tuple[tuple[int, int], ...] = ()
    name: str = "model"
    schema_version: int = SCHEMA_VERSION

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(h, w) of the heatmap for this input size and stride."""
        s = self.heatmap.stride
        return self.input.height // s, self.input.width // s

    @property
    def output_names(self) -> tuple[str, ...]:
        names = [self.heatmap.name]
        if self.existence is not None:
            names.append(self.existence.name)
        return tuple(names)

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
        self.heatmap.validate()
        if self.existence is not None:
            self.existence.validate()
            if self.existence.name == self.heatmap.name:
                raise SpecError("existence.name: must differ from heatmap.name (separate tensors)")
        self.decoder.validate()
        k = self.num_keypoints
        for i, edge in enumerate(self.skeleton):
            if len(edge) != 2 or not all(isinstance(j, int) and 0 <= j < k for j in edge):
                raise SpecError(f"skeleton[{i}]: expected two keypoint indices in [0, {k}), got {edge!r}")
        if self.heatmap.channels is not None and len(self.heatmap.channels) != k:
            raise SpecError(
                f"heatmap.channels: selects {len(self.heatmap.channels)} channels but the spec has "
                f"{k} keypoints"
            )
        return self

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
                heatmap=_sub(HeatmapSpec, data.get("heatmap", {}), "heatmap"),
                existence=(
                    None
                    if data.get("existence") is None
                    else _sub(ExistenceSpec, data["existence"], "existence")
                ),
                decoder=_sub(DecoderSpec, data.get("decoder", {}), "decoder"),
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

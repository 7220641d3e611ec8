"""ModelSpec: everything needed to run and decode a heatmap model without torch.

The spec is plain JSON with a schema version. It travels inside the ONNX ``metadata_props``
(key ``heatdeploy.spec``), OpenVINO ``rt_info`` and the bundle manifest, so every engine's
artifact can be decoded by the same runtime code.
"""

from __future__ import annotations

import json
import stat
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from heatdeploy.errors import HeatdeployError

SCHEMA_VERSION = 1
MAX_SPEC_CHARS = 1 << 20  # a spec is a few KiB
METADATA_KEY = "heatdeploy.spec"

Layout = Literal["NCHW", "NHWC"]
ColorOrder = Literal["RGB", "BGR"]
ResizeMode = Literal["letterbox", "stretch", "crop"]
Activation = Literal["logits", "probabilities"]
ExistencePer = Literal["keypoint", "instance"]
# Named heatmap coordinate conventions (heatdeploy.runtime.codecs): where a heatmap pixel sits in the input,
# and the trainer's DARK kernel and border rules. "center" and "udp" are the older names of the first and third.
Align = Literal["pixel-centre", "mmpose-msra", "mmpose-udp", "mediapipe", "center", "udp"]
ALIGNMENTS: tuple[str, ...] = ("pixel-centre", "mmpose-msra", "mmpose-udp", "mediapipe", "center", "udp")
_ALIAS = {"center": "pixel-centre", "udp": "mmpose-udp"}
DecoderName = Literal["argmax", "quarter", "dark", "soft_argmax"]
CoordUnits = Literal["pixels", "normalized"]
HeadKind = Literal["heatmap", "simcc", "centers", "landmarks", "paf"]


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

    def tensor_shape(self, batch: int) -> tuple[int, int, int, int]:
        """The model input's shape for ``batch`` frames, in this spec's layout."""
        if self.layout == "NCHW":
            return (batch, self.channels, self.height, self.width)
        return (batch, self.height, self.width, self.channels)

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
    # pixel-centre/center: x_in = (x_hm + 0.5) * stride - 0.5 ; mmpose-msra, mediapipe: x_in = x_hm * W/w ;
    # mmpose-udp/udp: x_in = x_hm * (W-1)/(w-1). Each also fixes its DARK kernel and border rules.
    align: Align = "center"
    channels: tuple[int, ...] | None = None  # keypoint channels when the tensor holds others too

    def validate(self) -> None:
        _choice("heatmap.layout", self.layout, ("NCHW", "NHWC"))
        _choice("heatmap.activation", self.activation, ("logits", "probabilities"))
        _choice("heatmap.align", self.align, ALIGNMENTS)
        _positive("heatmap.stride", self.stride)

    @property
    def convention(self) -> str:
        """The canonical convention name of ``align`` (the older names resolved)."""
        return _ALIAS.get(self.align, self.align)


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

# OpenPose's COCO-18 body (also tf-pose-estimation's and the OpenPose-style trt_pose models): 18 parts, then a
# background channel, then 38 PAF channels. Each limb is (part a, part b, PAF x channel, PAF y channel) with
# channels counted from the first PAF channel; the order is OpenPose's (tree limbs first, from the neck).
OPENPOSE_COCO18_PARTS = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                         "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
                         "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear")
OPENPOSE_COCO18_LIMBS: tuple[tuple[int, int, int, int], ...] = (
    (1, 2, 12, 13), (1, 5, 20, 21), (2, 3, 14, 15), (3, 4, 16, 17), (5, 6, 22, 23), (6, 7, 24, 25),
    (1, 8, 0, 1), (8, 9, 2, 3), (9, 10, 4, 5), (1, 11, 6, 7), (11, 12, 8, 9), (12, 13, 10, 11),
    (1, 0, 28, 29), (0, 14, 30, 31), (14, 16, 34, 35), (0, 15, 32, 33), (15, 17, 36, 37),
    (2, 16, 18, 19), (5, 17, 26, 27),
)
# NVIDIA trt_pose's human_pose.json: COCO's 17 keypoints + neck, 21 links. Link k reads PAF channels 2k (the
# row, y, component) and 2k + 1 (the column, x, component), so here x is 2k + 1 and y is 2k.
TRT_POSE_PARTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle", "neck")
_TRT_POSE_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 8), (7, 9), (8, 10), (9, 11), (2, 3),
                      (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (18, 1), (18, 6), (18, 7), (18, 12), (18, 13))
TRT_POSE_LIMBS: tuple[tuple[int, int, int, int], ...] = tuple(
    (a - 1, b - 1, 2 * k + 1, 2 * k) for k, (a, b) in enumerate(_TRT_POSE_SKELETON))
PAF_PRESETS: dict[str, tuple[tuple[int, int, int, int], ...]] = {"openpose-coco18": OPENPOSE_COCO18_LIMBS,
                                                                 "trt_pose-coco18": TRT_POSE_LIMBS}


@dataclass(frozen=True)
class PafSpec:
    """Bottom-up part-affinity fields (OpenPose, tf-pose, trt_pose): limb direction fields group part peaks.

    The part maps are the spec's ``heatmap`` (``heatmap.channels`` picks them out of a shared tensor); the PAFs
    are ``[N,C,h,w]`` (or NHWC) at the same stride, in their own tensor or the same one (``name`` equal to
    ``heatmap.name``, ``offset`` = the first PAF channel, 19 for OpenPose's 57-channel output).
    """

    name: str = "pafs"
    layout: Layout = "NCHW"
    offset: int = 0  # channel of the first PAF channel in the tensor
    limbs: tuple[tuple[int, int, int, int], ...] = ()  # (part a, part b, PAF x, PAF y); empty: the preset's
    preset: str = "openpose-coco18"
    max_people: int = 20  # person slots per image (M of the [N,M,K] outputs)
    peak_threshold: float = 0.1  # part-map probability of a peak
    pool_kernel: int = 3  # local-maximum window of the peak NMS
    max_peaks: int = 24  # peaks kept per part and image
    samples: int = 10  # points sampled along a candidate limb for its PAF line integral
    min_alignment: float = 0.05  # PAF . limb direction for a sample to count as an inlier
    min_inliers: float = 0.8  # fraction of inlier samples a limb needs
    min_parts: int = 3  # parts a person needs
    min_score: float = 0.2  # mean (part + limb) score a person needs

    def __post_init__(self) -> None:
        object.__setattr__(self, "limbs", tuple(tuple(int(v) for v in limb) for limb in self.limbs))

    def limb_table(self) -> tuple[tuple[int, int, int, int], ...]:
        """The limbs to use: ``limbs`` when given, else the named preset's table."""
        return self.limbs or PAF_PRESETS[self.preset]

    def validate(self, num_keypoints: int) -> None:
        _choice("paf.layout", self.layout, ("NCHW", "NHWC"))
        if not self.limbs:
            _choice("paf.preset", self.preset, tuple(PAF_PRESETS))
        for i, limb in enumerate(self.limb_table()):
            a, b, cx, cy = limb if len(limb) == 4 else (-1, -1, -1, -1)
            if not (0 <= a < num_keypoints and 0 <= b < num_keypoints and a != b and cx >= 0 and cy >= 0):
                raise SpecError(f"paf.limbs[{i}]: expected (part a, part b, PAF x, PAF y) with parts in "
                                f"[0, {num_keypoints}) and channels >= 0, got {list(limb)}")
        for key in ("max_people", "max_peaks", "samples", "min_parts"):
            _positive(f"paf.{key}", getattr(self, key))
        if self.offset < 0:
            raise SpecError(f"paf.offset: expected >= 0, got {self.offset}")
        if self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise SpecError(f"paf.pool_kernel: expected an odd size >= 1, got {self.pool_kernel}")
        for key in ("peak_threshold", "min_inliers"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise SpecError(f"paf.{key}: expected 0 <= value <= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder turns heatmaps into coordinates, and its settings."""

    name: DecoderName = "dark"
    sigma: float = 2.0  # Gaussian sigma in heatmap px used for targets and DARK modulation
    blur_kernel: int = 0  # 0: the convention's rule from sigma (runtime/codecs: ours ~6 sigma + 1, MMPose 11/17)
    score_threshold: float = 0.1  # heatmap peak below this -> absent when no existence head
    soft_argmax_beta: float = 1.0

    def validate(self) -> None:
        _choice("decoder.name", self.name, ("argmax", "quarter", "dark", "soft_argmax"))
        _positive("decoder.sigma", self.sigma)
        if self.blur_kernel < 0 or (self.blur_kernel and self.blur_kernel % 2 == 0):
            raise SpecError(f"decoder.blur_kernel: expected 0 or an odd size, got {self.blur_kernel}")


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
    paf: PafSpec | None = None  # bottom-up: part heatmaps grouped into people by part-affinity fields
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
        if self.paf is not None:
            return "paf"
        if self.centers is not None:
            return "centers"
        if self.landmarks is not None:
            return "landmarks"
        return "heatmap"

    @property
    def multi_instance(self) -> bool:
        """Centre and PAF heads find any number of instances per image: outputs carry an axis ``[N,M,K]``."""
        return self.centers is not None or self.paf is not None

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
        if self.paf is not None and (self.heatmap is None or self.paf.name != self.heatmap.name):
            names.append(self.paf.name)
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
        from heatdeploy.spec_bounds import check_bounds

        check_bounds(self)  # types, finite numbers, real-model ranges first: the checks below may then compare
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
        if self.paf is not None:
            self.paf.validate(self.num_keypoints)
            if self.heatmap is None or self.simcc is not None or self.centers is not None or self.landmarks is not None:
                raise SpecError("paf: a PAF head groups the heatmap's part peaks; set heatmap and drop simcc, "
                                "centers and landmarks")
            if self.existence is not None:
                raise SpecError("existence: a PAF head's person score is its existence; set existence to null")
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
                keypoints=_names(_require(data, "keypoints", source), "keypoints"),
                input=_sub(InputSpec, data.get("input", {}), "input"),
                heatmap=(None if "heatmap" in data and data["heatmap"] is None
                         else _sub(HeatmapSpec, data.get("heatmap", {}), "heatmap")),
                existence=_optional(ExistenceSpec, data, "existence"),
                decoder=_sub(DecoderSpec, data.get("decoder", {}), "decoder"),
                simcc=_optional(SimCCSpec, data, "simcc"),
                centers=_optional(CentersSpec, data, "centers"),
                landmarks=_optional(LandmarksSpec, data, "landmarks"),
                paf=_optional(PafSpec, data, "paf"),
                skeleton=tuple(tuple(e) for e in data.get("skeleton", ())),
                name=str(data.get("name", "model")),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
            )
            _reject_unknown(data, {f.name for f in fields(cls)}, source)
            return spec.validate()
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # int(inf), unhashable, ...
            raise SpecError(f"{source}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                            ) from None

    @classmethod
    def from_json(cls, text: str, source: str = "spec") -> ModelSpec:
        if len(text) > MAX_SPEC_CHARS:
            raise SpecError(f"{source}: {len(text)} characters, over the {MAX_SPEC_CHARS} a spec may have")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise SpecError(f"{source}: JSON nested too deeply to be a spec") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        p = Path(path)
        try:
            st = p.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
                raise SpecError(f"{p}: not a regular file; pass a spec JSON file")
            if st.st_size > MAX_SPEC_CHARS:
                raise SpecError(f"{p}: {st.st_size} bytes, over the {MAX_SPEC_CHARS} a spec file may have")
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"{p}: not a text file; a spec is JSON") from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise SpecError(f"{str(p)[:200]}: cannot read spec file ({getattr(exc, 'strerror', None) or exc})"
                            ) from None
        return cls.from_json(text, str(p))

    def save(self, path: str | Path) -> None:
        from heatdeploy.fsutil import atomic_write_text

        atomic_write_text(Path(path), self.to_json())


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A JSON list of names (a bare string would otherwise become one name per character)."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: expected a list of names, got {type(value).__name__}")
    return tuple(value)


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

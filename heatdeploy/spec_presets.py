"""What the graph cannot say about a model from a known trainer: ``spec infer --from <family>``.

Families: mmpose, mediapipe, openpose, trt_pose.

Colour order, pixel scaling, mean/std, resize mode and the heatmap coordinate convention are training
choices, invisible in an ONNX graph. Each trainer family fixes them the same way for all its models, so naming
the family sets them right; the notes say what was set and why, for the user to review.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from heatdeploy.spec import (
    OPENPOSE_COCO18_PARTS,
    PAF_PRESETS,
    TRT_POSE_PARTS,
    InputSpec,
    ModelSpec,
    PafSpec,
    SpecError,
)

PRESETS = ("mmpose", "mediapipe", "openpose", "trt_pose")
# Bottom-up families: keypoint names, PAF limb preset, and PafSpec settings from the family's own parser.
_BOTTOM_UP: dict[str, tuple[tuple[str, ...], str, dict[str, int]]] = {
    "openpose": (OPENPOSE_COCO18_PARTS, "openpose-coco18", {}),
    "trt_pose": (TRT_POSE_PARTS, "trt_pose-coco18", {"pool_kernel": 5, "samples": 7}),  # ParseObjects defaults
}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def preset_keypoints(preset: str | None) -> tuple[str, ...] | None:
    """Default keypoint names a preset implies (OpenPose's and trt_pose's 18-part bodies), or None."""
    return _BOTTOM_UP[preset][0] if preset in _BOTTOM_UP else None


def preset_input(preset: str, inp: InputSpec) -> tuple[InputSpec, str]:
    c = inp.channels
    mean, std = _IMAGENET if c == 3 else ((0.449,), (0.226,))
    if preset == "mmpose":
        return (dataclasses.replace(inp, color="RGB", scale=1 / 255, mean=mean, std=std, resize="letterbox"),
                "MMPose: RGB, x/255 then ImageNet mean/std, the person box kept at the input's aspect (letterbox)")
    if preset == "trt_pose":
        return (dataclasses.replace(inp, color="RGB", scale=1 / 255, mean=mean, std=std, resize="stretch"),
                "trt_pose: RGB, x/255 then ImageNet mean/std, the frame resized to the input (stretch)")
    if preset == "mediapipe":
        return (dataclasses.replace(inp, color="RGB", scale=1 / 255, mean=(0.0,), std=(1.0,), resize="letterbox",
                                    pad_value=0),
                "MediaPipe: RGB in [0, 1] (x/255, no mean/std), aspect kept with zero padding")
    return (dataclasses.replace(inp, color="BGR", scale=1 / 256, mean=(0.5,), std=(1.0,), resize="letterbox",
                                pad_value=128),
            "OpenPose: BGR, x/256 - 0.5, aspect kept with grey (128) padding")


def _channels(dims: tuple[int, ...], layout: str) -> int:
    return dims[1] if layout == "NCHW" else dims[3]


def _paf(spec: ModelSpec, preset: str, outputs: Mapping[str, tuple[int, ...]], notes: list[str]) -> PafSpec | None:
    """The PAF tensor of a bottom-up model: the part tensor's tail, or a separate output with the PAF channels."""
    hm = spec.heatmap
    assert hm is not None
    _, table, settings = _BOTTOM_UP[preset]
    need = 1 + max(max(limb[2], limb[3]) for limb in PAF_PRESETS[table])
    k = spec.num_keypoints
    own = _channels(outputs[hm.name], hm.layout) if hm.name in outputs else 0
    if own >= k + 1 + need:
        notes.append(f"PAFs: channels {k + 1}..{k + need} of {hm.name!r} (parts, background, PAFs in one tensor), "
                     f"{table} limbs")
        return PafSpec(name=hm.name, layout=hm.layout, offset=k + 1, preset=table, **settings)  # type: ignore[arg-type]
    h, w = spec.heatmap_size
    for name, dims in outputs.items():
        if name == hm.name or len(dims) != 4:
            continue
        for layout in ("NCHW", "NHWC"):
            size = dims[2:] if layout == "NCHW" else dims[1:3]
            if tuple(size) == (h, w) and _channels(dims, layout) >= need:
                notes.append(f"PAFs: output {name!r} ({layout}, {_channels(dims, layout)} channels), {table} limbs")
                return PafSpec(name=name, layout=layout, preset=table, **settings)  # type: ignore[arg-type]
    notes.append(f"no PAF tensor found (>= {need} channels at {h}x{w}): people are not grouped; add a paf "
                 "section by hand if the model has one")
    return None


def apply_preset(spec: ModelSpec, preset: str, outputs: Mapping[str, tuple[int, ...]]) -> tuple[ModelSpec, list[str]]:
    """The proposal with the trainer family's input rules and decoder convention; notes say what changed.

    ``outputs`` maps each graph output to its dims (for finding an OpenPose model's PAF tensor).
    """
    if preset not in PRESETS:
        raise SpecError(f"--from: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    notes: list[str] = []
    inp, why = preset_input(preset, spec.input)
    notes.append(f"--from {preset}: {why}")
    hm = spec.heatmap
    changes: dict[str, object] = {"input": inp}
    if hm is not None:
        if preset == "mmpose":
            align, decoder = "mmpose-msra", "quarter"
            notes.append("--from mmpose: heatmap.align mmpose-msra (x_in = x_hm * stride), decoder quarter "
                         "(MSRAHeatmap's default); set decoder dark for models trained with DARK, "
                         "align mmpose-udp for UDP models")
        elif preset == "mediapipe":
            align, decoder = "mediapipe", spec.decoder.name
            notes.append("--from mediapipe: heatmap.align mediapipe (x_in = x_hm * stride, truncated "
                         "refinement windows)")
        else:
            align, decoder = "pixel-centre", "quarter"
            notes.append(f"--from {preset}: heatmap.align pixel-centre (peaks at pixel centres: OpenPose resizes "
                         "its maps by the stride, trt_pose reports (i + 0.5) / H), decoder quarter")
        changes["heatmap"] = dataclasses.replace(hm, align=align)  # type: ignore[arg-type]
        changes["decoder"] = dataclasses.replace(spec.decoder, name=decoder)  # type: ignore[arg-type]
    out = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
    if preset in _BOTTOM_UP and hm is not None and spec.head == "heatmap":
        paf = _paf(out, preset, outputs, notes)
        if paf is not None:
            names = _BOTTOM_UP[preset][0]
            drawn = paf.limb_table()[:17] if paf.preset == "openpose-coco18" else paf.limb_table()  # no ear-shoulder
            skeleton = tuple((a, b) for a, b, _, _ in drawn) if spec.keypoints == names else spec.skeleton
            out = dataclasses.replace(out, paf=paf, existence=None, skeleton=skeleton)
    return out.validate(), notes

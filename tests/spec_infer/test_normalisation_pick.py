"""spec infer picks the input normalisation on sample images, and reads it from TFLite metadata.

The test models are colour detectors built with onnx.helper: keypoint k's heatmap logit at a pixel is
``A - B * ||x - t_k||^2`` (average-pooled by the stride, then a sigmoid), where ``t_k`` is the tensor value the
keypoint's colour becomes under the *true* normalisation and B makes a 20-grey-level change cost 12 logits. Only
the right preprocessing puts the coloured blobs at ``t_k``; any other one leaves the maps flat near 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heatdeploy.spec import InputSpec
from heatdeploy.spec_infer import infer_spec
from heatdeploy.spec_normalisation import CANDIDATES, Roles, pick_normalisation, tflite_normalisation

H, W, STRIDE = 64, 48, 4
COLOURS_RGB = ((230, 40, 120), (30, 200, 230))  # keypoint colours; the background is mid grey
BY_KEY = {c.key: c for c in CANDIDATES}


def _norm(cand_key: str, rgb: np.ndarray) -> np.ndarray:
    """RGB pixel values [..., 3] as the candidate feeds them to the model (channels in its colour order)."""
    c = BY_KEY[cand_key]
    px = rgb if c.color == "RGB" else rgb[..., ::-1]
    return (px * c.scale - np.asarray(c.mean)) / np.asarray(c.std)


def build_detector(path: Path, true_key: str, existence: bool = True) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cols = np.asarray(COLOURS_RGB, np.float64)
    t = _norm(true_key, cols)  # [K, 3]
    delta = np.linalg.norm(_norm(true_key, np.full(3, 148.0)) - _norm(true_key, np.full(3, 128.0)))
    a, b = 6.0, 12.0 / delta**2 + 6.0 / delta**2
    k = len(cols)
    inits = [numpy_helper.from_array(t.reshape(1, k, 3, 1, 1).astype(np.float32), "targets"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array(-b, np.float32), "neg_b"),
             numpy_helper.from_array(np.array(a, np.float32), "a")]
    node = helper.make_node
    nodes = [node("Unsqueeze", ["image", "axis1"], ["x5"]),
             node("Sub", ["x5", "targets"], ["diff"]),
             node("Mul", ["diff", "diff"], ["sq"]),
             node("ReduceSum", ["sq", "axis2"], ["d2"], keepdims=0),
             node("Mul", ["d2", "neg_b"], ["nb"]),
             node("Add", ["nb", "a"], ["logit_px"]),
             node("AveragePool", ["logit_px"], ["logits"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE]),
             node("Sigmoid", ["logits"], ["heatmaps"])]
    outputs = [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", k, H // STRIDE, W // STRIDE])]
    if existence:
        nodes += [node("GlobalMaxPool", ["logits"], ["gmax"]), node("Flatten", ["gmax"], ["existence"])]
        outputs.append(helper.make_tensor_value_info("existence", TensorProto.FLOAT, ["N", k]))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["N", 3, H, W])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def sample_images(n: int = 4, seed: int = 0, size: tuple[int, int] = (H, W)) -> list[np.ndarray]:
    """BGR uint8 frames: grey with one 8x8 blob of each keypoint colour at a seeded place."""
    rng = np.random.default_rng(seed)
    hh, ww = size
    out = []
    for _ in range(n):
        img = np.full((hh, ww, 3), 128, np.uint8)
        for col in COLOURS_RGB:
            y, x = rng.integers(0, hh // 8) * 8, rng.integers(0, ww // 8) * 8
            img[y:y + 8, x:x + 8] = col[::-1]
        out.append(img)
    return out


def _write(folder: Path, images: list[np.ndarray]) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    return folder


@pytest.mark.parametrize("true_key", ["rgb01", "bgr255", "imagenet", "openpose", "rgb11"])
def test_pick_finds_the_true_normalisation(true_key: str, tmp_path: Path) -> None:
    model = build_detector(tmp_path / f"{true_key}.onnx", true_key)
    inp = InputSpec(name="image", height=H, width=W)
    pick = pick_normalisation(model, inp, sample_images(), Roles(maps=(("heatmaps", "NCHW", None),),
                                                                presence=("existence",)))
    want = BY_KEY[true_key]
    assert (pick.best.label, pick.input.color, pick.input.scale) == (want.label, want.color, want.scale)
    others = [s.total for s in pick.scores if s is not pick.best]
    assert pick.best.total > 2 * max(others)
    assert "<- chosen" in pick.notes[-1] and want.label in pick.notes[0]


def test_infer_spec_uses_the_pick_and_judges_activations_under_it(tmp_path: Path) -> None:
    model = build_detector(tmp_path / "bgr.onnx", "bgr255")
    data = _write(tmp_path / "imgs", sample_images(3))
    spec, notes = infer_spec(model, data=data, data_size=3)
    assert (spec.input.color, spec.input.scale, spec.input.mean, spec.input.std) == ("BGR", 1.0, (0.0,), (1.0,))
    assert spec.heatmap is not None and spec.heatmap.activation == "probabilities"
    assert spec.existence is not None and spec.existence.activation == "logits"
    assert any("BGR 0-255 picked on 3 sample images" in n for n in notes)
    assert any("(BGR 0-255)" in n and "existence" in n for n in notes)
    assert not any("defaults kept" in n for n in notes)


def test_resize_is_tried_when_the_images_aspect_differs(tmp_path: Path) -> None:
    model = build_detector(tmp_path / "rgb.onnx", "rgb01", existence=False)
    inp = InputSpec(name="image", height=H, width=W)
    pick = pick_normalisation(model, inp, sample_images(3, size=(64, 64)), Roles(maps=(("heatmaps", "NCHW", None),)))
    assert pick.best.label == "RGB [0,1]"
    assert [s.resize for s in pick.scores].count("stretch") == 1
    assert any(n.startswith("resize ") for n in pick.notes)


def test_a_preset_fixes_the_normalisation(tmp_path: Path) -> None:
    model = build_detector(tmp_path / "op.onnx", "openpose")
    data = _write(tmp_path / "imgs", sample_images(2))
    spec, notes = infer_spec(model, data=data, data_size=2, preset="mediapipe")
    assert (spec.input.color, spec.input.mean) == ("RGB", (0.0,))  # the preset wins; no pick ran
    assert not any("picked on" in n for n in notes)


# --- TFLite metadata ---------------------------------------------------------------------------------

def _fb_vector(b: Any, prepend: Callable[[Any], None], items: Sequence[Any]) -> int:
    """A flatbuffer vector of 4-byte elements (float32, int32 or table offsets), written back to front."""
    b.StartVector(4, len(items), 4)
    for it in reversed(items):
        prepend(it)
    return b.EndVector()


def _metadata_flatbuffer(mean: list[float], std: list[float], rgb: bool = True) -> bytes:
    """A TFLite Support ModelMetadata with one input: ImageProperties(RGB) and NormalizationOptions."""
    import flatbuffers

    b = flatbuffers.Builder(256)

    def floats(vals: list[float]) -> int:
        return _fb_vector(b, b.PrependFloat32, vals)

    def table_vector(items: list[int]) -> int:
        return _fb_vector(b, b.PrependUOffsetTRelative, items)

    def table(n_fields: int, *slots: tuple[str, int, int]) -> int:
        """One table: ``(kind, slot, value)`` with kind o (offset), u8 or i8, prepended in order."""
        prepend = {"o": b.PrependUOffsetTRelativeSlot, "u8": b.PrependUint8Slot, "i8": b.PrependInt8Slot}
        b.StartObject(n_fields)
        for kind, slot, value in slots:
            prepend[kind](slot, value, 0)
        return b.EndObject()

    m, s = floats(mean), floats(std)
    norm = table(2, ("o", 0, m), ("o", 1, s))
    unit = table(2, ("u8", 0, 1), ("o", 1, norm))  # NormalizationOptions
    props = table(2, ("i8", 0, 1 if rgb else 2))
    content = table(3, ("u8", 0, 2), ("o", 1, props))  # ImageProperties
    units = table_vector([unit])
    name = b.CreateString("image")
    tensor = table(7, ("o", 0, name), ("o", 3, content), ("o", 4, units))
    tensors = table_vector([tensor])
    sub = table(9, ("o", 2, tensors))
    subs = table_vector([sub])
    model_name = b.CreateString("tiny pooled detector")
    root = table(8, ("o", 0, model_name), ("o", 3, subs))
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def build_tflite(path: Path, metadata: bytes | None) -> Path:
    """image [1,64,48,3] -> AVERAGE_POOL_2D 4x4/4 -> [1,16,12,3], with a TFLITE_METADATA buffer when given."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(1024)

    def vec_i32(vals: list[int]) -> int:
        return _fb_vector(b, b.PrependInt32, vals)

    def vec_off(items: list[int]) -> int:
        return _fb_vector(b, b.PrependUOffsetTRelative, items)

    buffers = []
    for data in ([b""] + ([metadata] if metadata else [])):
        d = b.CreateByteVector(data) if data else None
        tflite.BufferStart(b)
        if d is not None:
            tflite.BufferAddData(b, d)
        buffers.append(tflite.BufferEnd(b))
    tensors = []
    for name, shape in (("image", [1, H, W, 3]), ("heatmaps", [1, H // STRIDE, W // STRIDE, 3])):
        n, sh = b.CreateString(name), vec_i32(shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, sh)
        tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, 0)
        tflite.TensorAddName(b, n)
        tensors.append(tflite.TensorEnd(b))
    tflite.Pool2DOptionsStart(b)
    tflite.Pool2DOptionsAddPadding(b, tflite.Padding.VALID)
    for f in ("StrideW", "StrideH", "FilterWidth", "FilterHeight"):
        getattr(tflite, f"Pool2DOptionsAdd{f}")(b, STRIDE)
    opts = tflite.Pool2DOptionsEnd(b)
    ins, outs = vec_i32([0]), vec_i32([1])
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, 0)
    tflite.OperatorAddInputs(b, ins)
    tflite.OperatorAddOutputs(b, outs)
    tflite.OperatorAddBuiltinOptionsType(b, tflite.BuiltinOptions.Pool2DOptions)
    tflite.OperatorAddBuiltinOptions(b, opts)
    op = tflite.OperatorEnd(b)
    t_vec, o_vec, gi, go = vec_off(tensors), vec_off([op]), vec_i32([0]), vec_i32([1])
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddInputs(b, gi)
    tflite.SubGraphAddOutputs(b, go)
    tflite.SubGraphAddOperators(b, o_vec)
    sg = tflite.SubGraphEnd(b)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, tflite.BuiltinOperator.AVERAGE_POOL_2D)
    tflite.OperatorCodeAddBuiltinCode(b, tflite.BuiltinOperator.AVERAGE_POOL_2D)
    tflite.OperatorCodeAddVersion(b, 1)
    code = tflite.OperatorCodeEnd(b)
    metas = []
    if metadata:
        mn = b.CreateString("TFLITE_METADATA")
        tflite.MetadataStart(b)
        tflite.MetadataAddName(b, mn)
        tflite.MetadataAddBuffer(b, 1)
        metas.append(tflite.MetadataEnd(b))
    codes, sgs, bufs = vec_off([code]), vec_off([sg]), vec_off(buffers)
    meta_vec = vec_off(metas) if metas else None
    desc = b.CreateString("test")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, sgs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bufs)
    if meta_vec is not None:
        tflite.ModelAddMetadata(b, meta_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_tflite_metadata_normalisation_is_read(tmp_path: Path) -> None:
    pytest.importorskip("tflite")
    meta = _metadata_flatbuffer([127.5, 127.5, 127.5], [127.5, 127.5, 127.5])
    got = tflite_normalisation(build_tflite(tmp_path / "m.tflite", meta))
    assert got is not None and got["mean"] == (127.5,) * 3 and got["std"] == (127.5,) * 3
    assert got["color"] == "RGB" and got["name"] == "tiny pooled detector"
    assert tflite_normalisation(build_tflite(tmp_path / "bare.tflite", None)) is None


def test_infer_spec_takes_the_normalisation_from_tflite_metadata(tmp_path: Path) -> None:
    pytest.importorskip("tflite2onnx", reason="the 'tflite' extra reads .tflite for spec infer")
    meta = _metadata_flatbuffer([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    spec, notes = infer_spec(build_tflite(tmp_path / "m.tflite", meta), data=_write(tmp_path / "i", sample_images(2)))
    inp = spec.input
    assert (inp.color, inp.scale) == ("RGB", pytest.approx(1 / 255))
    assert np.allclose(inp.mean, (0.485, 0.456, 0.406), atol=1e-6) and np.allclose(inp.std, (0.229, 0.224, 0.225))
    assert any("TFLite metadata" in n for n in notes) and not any("picked on" in n for n in notes)


def test_mediapipe_blazepose_has_no_metadata_and_the_pick_says_rgb01(blazepose_tflite: Path, tmp_path: Path) -> None:
    """BlazePose full carries no TFLITE_METADATA (only min_runtime_version etc.); on its own kind of frames
    the pick chooses MediaPipe's RGB [0,1]."""
    pytest.importorskip("tflite2onnx", reason="the 'tflite' extra reads .tflite for spec infer")
    from heatdeploy.models.blazepose import write_blazepose_images

    assert tflite_normalisation(blazepose_tflite) is None
    write_blazepose_images(tmp_path / "bp", 4, seed=0)
    spec, notes = infer_spec(blazepose_tflite, data=tmp_path / "bp", data_size=4)
    assert (spec.input.color, spec.input.scale, spec.input.mean, spec.input.std) == (
        "RGB", pytest.approx(1 / 255), (0.0,), (1.0,))
    assert any("RGB [0,1] picked on 4 sample images" in n for n in notes)


def test_metadata_input_folds_one_std_into_the_scale() -> None:
    from heatdeploy.spec_normalisation import metadata_input

    inp, _ = metadata_input(InputSpec(), {"mean": (127.5,) * 3, "std": (127.5,) * 3, "color": None})
    assert (inp.scale, inp.mean, inp.std) == (pytest.approx(1 / 127.5), (1.0,), (1.0,))
    inp, _ = metadata_input(InputSpec(), {"mean": (0.0,), "std": (255.0,), "color": "RGB"})
    assert (inp.scale, inp.mean, inp.std) == (pytest.approx(1 / 255), (0.0,), (1.0,))
    assert dataclasses.replace(inp).color == "RGB"


def test_cli_prints_the_candidates_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heatdeploy.cli import app
    from heatdeploy.spec import ModelSpec

    model = build_detector(tmp_path / "in.onnx", "imagenet")
    out = tmp_path / "spec.json"
    images = _write(tmp_path / "i", sample_images(2))
    res = CliRunner().invoke(app, ["spec", "infer", str(model), "--images", str(images), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "RGB ImageNet mean/std picked on 2 sample images" in res.output and "<- chosen" in res.output
    assert ModelSpec.load(out).input.std == (0.229, 0.224, 0.225)

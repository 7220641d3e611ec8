"""Preprocess: affine geometry (round trips, rendered dots), normalisation, and image loading."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from heatdeploy.runtime.preprocess import (
    BOX_PADDING,
    Batch,
    ImageError,
    Preprocessor,
    input_affines,
    invert_affines,
    load_image,
    map_to_image,
    to_bgr8,
)
from heatdeploy.spec import InputSpec

SPEC = InputSpec(height=64, width=48)
SIZES = [(40, 100), (120, 30), (64, 48)]  # (h, w): wide, tall, exact fit
BOXES = np.array([[10.0, 5.0, 30.0, 35.0], [2.0, 40.0, 28.0, 60.0], [0.0, 0.0, 47.0, 63.0]])
MODES = [("letterbox", None), ("stretch", None), ("crop", BOXES), ("letterbox", BOXES), ("stretch", BOXES)]


def _apply(affines: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nkj->nki", affines[:, :, :2], pts) + affines[:, None, :, 2]


def _images(sizes=SIZES, fill: int = 0) -> list[np.ndarray]:
    return [np.full((h, w, 3), fill, np.uint8) for h, w in sizes]


# --- geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "boxes"), MODES)
def test_round_trip_is_exact(mode: str, boxes: np.ndarray | None) -> None:
    spec = replace(SPEC, resize=mode)
    batch = Preprocessor(spec)(_images(), boxes)
    forward = input_affines(spec, batch.image_sizes, boxes)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, 130, size=(len(SIZES), 17, 2))
    back = map_to_image(_apply(forward, pts), batch.transforms)
    np.testing.assert_allclose(back, pts, atol=1e-6, rtol=0)


def _render_dot(h: int, w: int, x: float, y: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(blob * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(channel: np.ndarray) -> np.ndarray:
    w = channel.astype(np.float64)
    w = np.where(w > 0.05 * w.max(), w, 0.0)  # ignore rounding dust far from the dot
    yy, xx = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


@pytest.mark.parametrize(("mode", "use_box"), [("letterbox", False), ("stretch", False), ("crop", True)])
def test_rendered_dot_lands_where_the_affine_says(mode: str, use_box: bool) -> None:
    spec = InputSpec(height=256, width=192, resize=mode, pad_value=0, mean=(0.0,), std=(1.0,))
    h, w, dot = 240, 320, np.array([201.3, 97.8])
    boxes = np.array([[150.0, 40.0, 260.0, 180.0]]) if use_box else None
    batch = Preprocessor(spec)([_render_dot(h, w, *dot, sigma=6.0)], boxes)
    expected = _apply(input_affines(spec, batch.image_sizes, boxes), dot[None, None])[0, 0]
    found = _centroid(batch.tensor[0, 0])
    # 0.1 px, well inside the 0.5 px budget, so a half-pixel convention slip (0.2-0.35 px here) fails.
    assert np.abs(found - expected).max() < 0.1, (found, expected)


def test_letterbox_centres_image_and_edges_touch_input_edges() -> None:
    batch = Preprocessor(SPEC)(_images([(40, 100)]))
    corners = np.array([[[-0.5, -0.5], [47.5, 63.5]]])  # input extent under the pixel-centre rule
    (tl, br) = map_to_image(corners, batch.transforms)[0]
    assert tl[0] == pytest.approx(-0.5) and br[0] == pytest.approx(99.5)  # width fits exactly
    assert (tl[1] + br[1]) / 2 == pytest.approx(19.5)  # vertically centred on the image centre
    assert br[1] - tl[1] == pytest.approx(64 * 100 / 48)


def test_stretch_maps_corners_to_corners() -> None:
    batch = Preprocessor(replace(SPEC, resize="stretch"))(_images([(40, 100)]))
    corners = np.array([[[-0.5, -0.5], [47.5, 63.5]]])
    np.testing.assert_allclose(map_to_image(corners, batch.transforms)[0], [[-0.5, -0.5], [99.5, 39.5]])


def test_crop_expands_box_by_padding_then_to_input_aspect() -> None:
    spec = replace(SPEC, resize="crop")  # aspect w/h = 0.75
    box = np.array([[10.0, 20.0, 50.0, 120.0]])  # 40 x 100, centre (30, 70)
    batch = Preprocessor(spec)(_images([(200, 200)]), box)
    corners = np.array([[[-0.5, -0.5], [47.5, 63.5]]])
    (tl, br) = map_to_image(corners, batch.transforms)[0]
    height = 100 * BOX_PADDING  # 125; width grows from 50 to 125 * 0.75 = 93.75
    np.testing.assert_allclose(br - tl, [height * 0.75, height])
    np.testing.assert_allclose((tl + br) / 2, [30.0, 70.0])


def test_crop_needs_boxes_and_checks_them() -> None:
    pre = Preprocessor(replace(SPEC, resize="crop"))
    with pytest.raises(ValueError, match="person box"):
        pre(_images())
    with pytest.raises(ValueError, match="shape"):
        pre(_images(), BOXES[:2])
    with pytest.raises(ValueError, match="x2 >= x1"):
        pre(_images(), BOXES[:, [2, 3, 0, 1]])


def test_invert_affines_handles_rotation() -> None:
    a = np.deg2rad(30)
    m = np.array([[[2 * np.cos(a), -np.sin(a), 5.0], [np.sin(a), 0.5 * np.cos(a), -3.0]]])
    pts = np.array([[[1.0, 2.0], [-7.0, 4.5]]])
    np.testing.assert_allclose(map_to_image(_apply(m, pts), invert_affines(m)), pts, atol=1e-12)


def test_map_to_image_keeps_nan_and_checks_shapes() -> None:
    t = np.array([[[2.0, 0, 1], [0, 2.0, 1]]])
    out = map_to_image(np.array([[[np.nan, np.nan], [1.0, 1.0]]]), t)
    assert np.isnan(out[0, 0]).all() and out[0, 1].tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="points"):
        map_to_image(np.zeros((1, 2)), t)
    with pytest.raises(ValueError, match="transforms"):
        map_to_image(np.zeros((2, 3, 2)), t)


# --- normalisation -------------------------------------------------------------------------------


def _expected_pixel(spec: InputSpec, bgr: tuple[int, int, int]) -> np.ndarray:
    rgb = np.array(bgr[::-1] if spec.color == "RGB" else bgr, dtype=np.float64)
    return (rgb * spec.scale - np.array(spec.mean)) / np.array(spec.std)


@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_colour_scale_mean_std(color: str) -> None:
    spec = replace(SPEC, color=color, resize="stretch")
    batch = Preprocessor(spec)([np.full((30, 20, 3), (10, 120, 250), np.uint8)])
    assert batch.tensor.dtype == np.float32 and batch.tensor.shape == (1, 3, 64, 48)
    np.testing.assert_allclose(batch.tensor[0, :, 5, 5], _expected_pixel(spec, (10, 120, 250)), atol=1e-5)


def test_nhwc_equals_transposed_nchw() -> None:
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    nchw = Preprocessor(SPEC)(imgs).tensor
    nhwc = Preprocessor(replace(SPEC, layout="NHWC"))(imgs).tensor
    assert nhwc.shape == (3, 64, 48, 3)
    # OpenCV's two layouts round the same multiply-add differently by at most an ulp; a layout bug moves values by ~1
    np.testing.assert_allclose(nhwc, nchw.transpose(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_letterbox_padding_uses_pad_value() -> None:
    spec = replace(SPEC, pad_value=114)
    batch = Preprocessor(spec)(_images([(40, 100)], fill=0))
    np.testing.assert_allclose(batch.tensor[0, :, 0, 0], _expected_pixel(spec, (114, 114, 114)), atol=1e-5)
    np.testing.assert_allclose(batch.tensor[0, :, 32, 24], _expected_pixel(spec, (0, 0, 0)), atol=1e-5)


def test_single_channel_is_grey() -> None:
    spec = replace(SPEC, channels=1, mean=(0.5,), std=(0.25,), resize="stretch")
    batch = Preprocessor(spec)([np.full((10, 10, 3), (255, 0, 0), np.uint8)])  # pure blue
    assert batch.tensor.shape == (1, 1, 64, 48)
    assert batch.tensor[0, 0, 3, 3] == pytest.approx((0.114 - 0.5) / 0.25, abs=1e-5)


def test_batch_fields_and_odd_inputs() -> None:
    grey = np.zeros((50, 60), np.uint8)
    rgba16 = np.zeros((20, 30, 4), np.uint16)
    batch = Preprocessor(SPEC)([grey, rgba16])
    assert isinstance(batch, Batch)
    assert batch.transforms.shape == (2, 2, 3) and batch.transforms.dtype == np.float64
    assert batch.image_sizes.tolist() == [[50, 60], [20, 30]]


def test_empty_batch() -> None:
    batch = Preprocessor(SPEC)([])
    assert batch.tensor.shape == (0, 3, 64, 48) and batch.transforms.shape == (0, 2, 3)


# --- to_bgr8 / load_image ------------------------------------------------------------------------


def test_to_bgr8_normalises_arrays() -> None:
    assert to_bgr8(np.full((2, 3), 7, np.uint8)).shape == (2, 3, 3)
    assert to_bgr8(np.full((2, 3, 1), 7, np.uint8))[0, 0].tolist() == [7, 7, 7]
    bgra = np.array([[[1, 2, 3, 4]]], np.uint8)
    assert to_bgr8(bgra)[0, 0].tolist() == [1, 2, 3]
    assert to_bgr8(np.array([[[0, 257, 65535]]], np.uint16))[0, 0].tolist() == [0, 1, 255]
    assert to_bgr8(np.array([[[-1.0, 0.5, 2.0]]]))[0, 0].tolist() == [0, 128, 255]
    img = np.zeros((4, 4, 3), np.uint8)
    assert to_bgr8(img) is img  # already fine: no copy


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_to_bgr8_rejects_with_a_clear_message(array: np.ndarray, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        to_bgr8(array, where="frame 3")
    assert str(info.value).startswith("frame 3:") and "\n" not in str(info.value)


def _write(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def test_load_grey_png(tmp_path: Path) -> None:
    img = load_image(_write(tmp_path / "g.png", np.full((5, 6), 77, np.uint8)))
    assert img.shape == (5, 6, 3) and img.dtype == np.uint8 and (img == 77).all()


def test_load_rgba_png_drops_alpha(tmp_path: Path) -> None:
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[...] = (10, 20, 30, 0)
    img = load_image(_write(tmp_path / "a.png", bgra))
    assert img.shape == (5, 6, 3) and img[0, 0].tolist() == [10, 20, 30]


def test_load_16bit_png(tmp_path: Path) -> None:
    img16 = np.zeros((4, 4, 3), np.uint16)
    img16[..., 0], img16[..., 2] = 65535, 257 * 100
    img = load_image(_write(tmp_path / "deep.png", img16))
    assert img.dtype == np.uint8 and img[0, 0].tolist() == [255, 0, 100]


def test_load_applies_exif_orientation(tmp_path: Path) -> None:
    """A phone photo stored landscape with orientation 6 must come out portrait."""
    ok, enc = cv2.imencode(".jpg", np.zeros((20, 40, 3), np.uint8))
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, 6, 0) + b"\x00" * 4
    payload = b"Exif\x00\x00" + tiff
    jpeg = enc.tobytes()
    (tmp_path / "rot.jpg").write_bytes(
        jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
    )
    assert load_image(tmp_path / "rot.jpg").shape == (40, 20, 3)


def test_load_non_ascii_path(tmp_path: Path) -> None:
    assert load_image(_write(tmp_path / "höhe ü.png", np.zeros((3, 3, 3), np.uint8))).shape == (3, 3, 3)


def test_text_file_named_jpg_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image .*pass a JPEG, PNG"):
        load_image(path)


@pytest.mark.parametrize("kind", ["missing", "empty", "directory"])
def test_unreadable_paths(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ImageError, match=f"{path}: not a readable image"):
        load_image(path)


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_per_size_geometry_equals_the_general_path_and_stays_unshared(mode: str) -> None:
    """Whole frames reuse per-size affines: the same transforms as the vectorized path, batch of one or many,
    and a caller writing into a returned Batch does not change the next one."""
    spec = replace(SPEC, resize=mode)
    pre = Preprocessor(spec)
    imgs = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i, (h, w) in enumerate(SIZES)]
    want = invert_affines(input_affines(spec, np.array([i.shape[:2] for i in imgs])))
    one = pre(imgs[:1])
    np.testing.assert_allclose(one.transforms, want[:1], rtol=0, atol=1e-12)
    one.transforms[:] = 0.0
    one.image_sizes[:] = 0
    for _ in range(2):
        batch = pre(imgs)
        np.testing.assert_allclose(batch.transforms, want, rtol=0, atol=1e-12)
        assert batch.image_sizes.tolist() == [list(i.shape[:2]) for i in imgs]
    boxed = pre(imgs, np.array([[0.0, 0.0, i.shape[1] - 1.0, i.shape[0] - 1.0] for i in imgs]))
    assert boxed.transforms.shape == (3, 2, 3)
    for i, img in enumerate(imgs):  # batch of one (the fast path) and a slot of a batch give the same tensor
        np.testing.assert_array_equal(pre([img]).tensor[0], batch.tensor[i])


@pytest.mark.parametrize("shift", [(32, 0), (0, 7), (-5, 3), (-300, 0), (4, -2)])
def test_whole_pixel_shift_is_the_same_pixels_as_the_warp(shift: tuple[int, int]) -> None:
    from heatdeploy.runtime.preprocess import resize_plan

    spec = replace(SPEC, pad_value=114)
    img = np.random.default_rng(3).integers(0, 256, (64, 30, 3), dtype=np.uint8)
    m = np.array([[[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]])
    assert resize_plan(m[0], (64, 30)) == ((30, 64), shift)
    assert resize_plan(m[0] + [[0, 0, 0.5], [0, 0, 0]], (64, 30)) is None  # a half-pixel shift is a real warp
    assert resize_plan(m[0] + [[0, 0.1, 0], [0, 0, 0]], (64, 30)) is None  # so is a shear
    want = cv2.warpAffine(img, m[0], (spec.width, spec.height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114))
    pre = Preprocessor(spec)
    np.testing.assert_array_equal(pre._warp([img], m)[0], want)
    np.testing.assert_array_equal(pre._warp([img], m, [None])[0], want)  # the warp itself, for the record


@pytest.mark.parametrize(("hw", "plan"), [((64, 20), ((20, 64), (14, 0))), ((128, 96), ((48, 64), (0, 0))),
                                          ((80, 96), ((48, 40), (0, 12))), ((16, 12), None)])
def test_exact_letterbox_is_a_resize_and_paste_sampling_the_warps_points(hw, plan) -> None:
    spec = replace(SPEC, pad_value=7)  # 64 x 48 input
    img = cv2.GaussianBlur(np.random.default_rng(4).integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 2)
    pre = Preprocessor(spec)
    assert pre._frame_geometry(hw)[3] == plan
    forward = input_affines(spec, np.array([hw]))
    warped = cv2.warpAffine(img, forward[0], (48, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(7, 7, 7))
    if plan is None:  # enlarging: the warp itself (resize would repeat the edge where the warp pads)
        np.testing.assert_array_equal(pre([img]).tensor, pre._normalise(warped[None]))
        return
    got = pre._warp([img], forward, [plan])[0]
    diff = np.abs(got.astype(int) - warped)
    # the same sample points: only the two functions' fixed-point rounding differs (warpAffine snaps
    # positions to 1/32 px), at scale 1 not at all
    assert diff.max() <= (0 if plan[0] == (hw[1], hw[0]) else 2) and (diff > 0).mean() < 0.3
    np.testing.assert_array_equal(got == 7, warped == 7)  # the padding lands on the same pixels

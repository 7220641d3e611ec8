"""Raw images -> the model's input tensor, plus the affines that map predictions back to the originals.

Pixel convention (used everywhere here, and by ``cv2.warpAffine``): integer coordinates are pixel
*centres*, so an image of width ``w`` spans ``[-0.5, w - 0.5]``. Every mode maps a centre point ``c``
of the original (the image centre, or a person box centre) to the input centre ``((W-1)/2, (H-1)/2)``
and scales about it, so the image's outer edges land exactly on the input's edges.

Only the warp is per image (one ``cv2.warpAffine`` call each, or ``cv2.resize`` + a paste where that samples
the same points); colour order, scaling, mean/std and the layout run once on the stacked batch. Per frame
size the affines are computed once: a video's frames all share them, and the per-frame cost is the number of
calls more than their arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from heatdeploy.errors import HeatdeployError, InputError
from heatdeploy.spec import InputSpec

# Person boxes are enlarged by this factor before cropping, as MMPose's top-down pipeline does,
# so limbs that stick out of a tight detector box stay in view.
BOX_PADDING = 1.25
_GREY_WEIGHTS_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # ITU-R BT.601, as cv2
_FIX = "pass a JPEG, PNG, BMP or WebP file"


class ImageError(HeatdeployError, ValueError):
    """An image that cannot be used; the one-line message names the file (or array) and the fix."""


# --- loading -------------------------------------------------------------------------------------


def __getattr__(name: str) -> object:
    """``load_image`` lives in runtime/sources.py (the one image reader); kept importable from here."""
    if name == "load_image":
        from heatdeploy.runtime.sources import load_image

        return load_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_bgr8(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Normalise any common array image to contiguous BGR uint8 ``[H, W, 3]`` (no copy if it already is)."""
    if (type(image) is np.ndarray and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.flags.c_contiguous and image.size):
        return image  # a decoded frame: nothing to convert
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{where}: expected a numpy image array, got {type(image).__name__}; {_FIX}")
    image = _to_three_channels(image, where)
    image = _to_uint8(image, where)
    return np.ascontiguousarray(image)


def _to_three_channels(image: np.ndarray, where: str) -> np.ndarray:
    """Grey -> BGR by repetition, BGRA -> BGR by dropping alpha (pixels are not composited)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"{where}: expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}; {_FIX}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{where}: the image is empty (shape {image.shape}); {_FIX}")
    return image


def _to_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Bring 16-bit (/257) and float ([0, 1] -> [0, 255]) pixels to 8 bits, rounding to nearest."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(image.dtype, np.floating):
        scaled = np.nan_to_num(image.astype(np.float32), nan=0.0)
        return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageError(
        f"{where}: unsupported pixel type {image.dtype}; convert it to uint8, uint16 or float in [0, 1]"
    )


# --- geometry ------------------------------------------------------------------------------------


def input_affines(spec: InputSpec, image_sizes: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """Forward affines ``[N, 2, 3]`` (original px -> input px) for each image, vectorized over N.

    ``letterbox`` keeps the aspect and centres the image; ``stretch`` fills the input; ``crop`` (or
    any mode given boxes) takes each person box, enlarged by 1.25 — and, except for ``stretch``, to
    the input's aspect ratio — as the region that fills the input.
    """
    return _affines(spec, image_sizes, boxes)[0]


def _affines(spec: InputSpec, image_sizes: np.ndarray, boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`input_affines` and their inverses (input px -> original px), both ``[N, 2, 3]``."""
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    out_w, out_h = float(spec.width), float(spec.height)
    if boxes is None:
        if spec.resize == "crop":
            raise InputError(
                "input.resize is 'crop': pass one person box (x1, y1, x2, y2) per image, e.g. from a detector"
            )
        centre = (sizes[:, ::-1] - 1.0) / 2.0  # (cx, cy)
        span = sizes[:, ::-1].copy()  # (w, h) of the region that must fit
        keep_aspect = spec.resize == "letterbox"
    else:
        centre, span = _box_regions(boxes, len(sizes))
        keep_aspect = spec.resize != "stretch"
        if keep_aspect:
            span = _expand_to_aspect(span, out_w / out_h)
    scale = np.array([out_w, out_h]) / span
    if keep_aspect and boxes is None:
        scale = np.repeat(scale.min(axis=1, keepdims=True), 2, axis=1)
    return _centred_affines(centre, scale, (out_w, out_h))


def _box_regions(boxes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Box centres and padded (w, h); boxes are in the same pixel-centre coordinates as keypoints."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape != (n, 4):
        raise InputError(f"boxes: expected shape ({n}, 4) — one (x1, y1, x2, y2) per image — got {b.shape}")
    if not np.isfinite(b).all():
        raise InputError("boxes: contain NaN or infinity; drop those detections before preprocessing")
    if (b[:, 2:] < b[:, :2]).any():
        raise InputError("boxes: expected x2 >= x1 and y2 >= y1 (x1, y1, x2, y2 order)")
    centre = (b[:, :2] + b[:, 2:]) / 2.0
    span = np.maximum(b[:, 2:] - b[:, :2], 1.0) * BOX_PADDING  # a degenerate box still crops 1 px
    return centre, span


def _expand_to_aspect(span: np.ndarray, aspect: float) -> np.ndarray:
    """Grow the shorter side so w / h equals the input aspect; never shrinks, as in MMPose."""
    w = np.maximum(span[:, 0], span[:, 1] * aspect)
    return np.stack([w, w / aspect], axis=1)


def _centred_affines(centre: np.ndarray, scale: np.ndarray,
                     out_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``x_in = s * (x - c) + (W - 1) / 2`` per axis: centre maps to centre under the pixel-centre rule.

    Returns the forward affines and, in closed form, their inverses ``x = (x_in - (W - 1) / 2) / s + c``.
    """
    n = len(centre)
    out_centre = (np.array(out_size) - 1.0) / 2.0
    m = np.zeros((2, n, 2, 3), dtype=np.float64)
    m[0, :, 0, 0] = scale[:, 0]
    m[0, :, 1, 1] = scale[:, 1]
    m[0, :, :, 2] = out_centre - scale * centre
    m[1, :, 0, 0] = 1.0 / scale[:, 0]
    m[1, :, 1, 1] = 1.0 / scale[:, 1]
    m[1, :, :, 2] = centre - out_centre / scale
    return m[0], m[1]


def invert_affines(affines: np.ndarray) -> np.ndarray:
    """Invert a stack of 2x3 affines ``[N, 2, 3]`` (general, so rotation would work too)."""
    a = np.asarray(affines, dtype=np.float64)
    lin_inv = np.linalg.inv(a[:, :, :2])
    shift = -np.einsum("nij,nj->ni", lin_inv, a[:, :, 2])
    return np.concatenate([lin_inv, shift[:, :, None]], axis=2)


def map_to_image(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Apply per-image affines to points: ``[N, K, 2]`` (or ``[N, M, K, 2]``) input px -> original px.

    NaN stays NaN.
    """
    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(transforms, dtype=np.float64)
    if pts.ndim not in (3, 4) or pts.shape[-1] != 2:
        raise ValueError(f"points: expected shape [N, K, 2] or [N, M, K, 2], got {pts.shape}")
    if t.shape != (pts.shape[0], 2, 3):
        raise ValueError(f"transforms: expected shape ({pts.shape[0]}, 2, 3) to match points, got {t.shape}")
    flat = pts.reshape(pts.shape[0], -1, 2)
    # x' = a x + b y + c as plain ufuncs (the same sums as an einsum, without its cold dispatch per frame)
    out = np.add.reduce(flat[:, :, None, :] * t[:, None, :, :2], axis=-1) + t[:, None, :, 2]
    return out.reshape(pts.shape)


Plan = tuple[tuple[int, int], tuple[int, int]]  # (resized w, h), (dx, dy): resize, then paste at a whole-pixel shift


def resize_plan(forward: np.ndarray, hw: tuple[int, int]) -> Plan | None:
    """How an axis-aligned affine ``[2, 3]`` of an ``hw`` image is a ``cv2.resize`` then a whole-pixel paste.

    ``cv2.resize`` to ``(w * sx, h * sy)`` maps ``x -> sx * (x + 0.5) - 0.5``, the affine's own mapping up to a
    shift; when that size and the rest of the shift are whole numbers (a letterbox that fits one axis exactly,
    640x480 into 256x192, ...), the two sample the same points. Not for enlarging: there the outer samples
    fall past the edge pixels' centres, where the warp blends in the padding and resize repeats the edge.
    None when they differ.
    """
    m = np.asarray(forward, dtype=np.float64)
    if m[0, 1] != 0.0 or m[1, 0] != 0.0 or not (0.0 < m[0, 0] <= 1.0 and 0.0 < m[1, 1] <= 1.0):
        return None
    scale = np.array([m[0, 0], m[1, 1]])
    size = scale * (hw[1], hw[0])
    shift = m[:, 2] - (scale - 1.0) / 2.0
    whole = np.rint(np.concatenate([size, shift]))
    if not np.allclose(np.concatenate([size, shift]), whole, rtol=0.0, atol=1e-9) or (whole[:2] < 1).any():
        return None
    rw, rh, dx, dy = (int(v) for v in whole)
    return (rw, rh), (dx, dy)


def _paste(image: np.ndarray, shift: tuple[int, int], out: np.ndarray, pad_value: int) -> None:
    """``out[y, x] = image[y - dy, x - dx]`` where that pixel exists, ``pad_value`` elsewhere."""
    (dx, dy), (oh, ow), (ih, iw) = shift, out.shape[:2], image.shape[:2]
    x0, y0, x1, y1 = max(dx, 0), max(dy, 0), min(dx + iw, ow), min(dy + ih, oh)
    if x0 >= x1 or y0 >= y1:
        out[...] = pad_value
        return
    out[:y0] = pad_value
    out[y1:] = pad_value
    out[y0:y1, :x0] = pad_value
    out[y0:y1, x1:] = pad_value
    out[y0:y1, x0:x1] = image[y0 - dy:y1 - dy, x0 - dx:x1 - dx]


# --- batching ------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A preprocessed batch and what is needed to put predictions back on the original images."""

    tensor: np.ndarray  # float32 model input in spec layout, [N,C,H,W] or [N,H,W,C]
    transforms: np.ndarray  # [N,2,3] float64 affine: model-input px -> original px
    image_sizes: np.ndarray  # [N,2] int64 (h, w) of the originals


class Preprocessor:
    """Turns BGR uint8 images of any size into the model input described by an ``InputSpec``."""

    def __init__(self, spec: InputSpec) -> None:
        spec.validate()
        self.spec = spec
        c = spec.channels
        std = np.broadcast_to(np.asarray(spec.std, dtype=np.float64), (c,))
        mean = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64), (c,))
        # (x * scale - mean) / std folded into one multiply-add on the whole batch.
        shape = (c, 1, 1) if spec.layout == "NCHW" else (c,)
        self._gain = (spec.scale / std).astype(np.float32).reshape(shape)
        self._offset = (mean / std).astype(np.float32).reshape(shape)
        # NHWC: colour as one cv2.LUT table of every 8-bit level's float32 value, per channel (one pass).
        levels = np.arange(256, dtype=np.uint8)[:, None] * self._gain.reshape(c) - self._offset.reshape(c)
        self._lut = np.ascontiguousarray(levels).reshape(1, 256, c)
        # NCHW: colour order, scale/mean/std and the planar layout in one pass (cv2.dnn's blob maker, which
        # computes (x - mean / scale) * (scale / std) in the model's channel order after the optional swap).
        if c == 3:
            self._blob = cv2.dnn.Image2BlobParams(
                scalefactor=tuple(float(v) for v in spec.scale / std), size=(spec.width, spec.height),
                mean=tuple(float(v) for v in mean / spec.scale), swapRB=spec.color == "RGB", ddepth=cv2.CV_32F,
                datalayout=cv2.dnn.DNN_LAYOUT_NCHW)
        self._geometry: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, Plan | None]] = {}

    @property
    def pixel_step(self) -> np.ndarray:
        """Tensor units per 8-bit input level, per channel, shaped to broadcast over a batch."""
        return self._gain

    def __call__(self, images: Sequence[np.ndarray], boxes: np.ndarray | None = None) -> Batch:
        """Preprocess ``images`` (one box per image for top-down; repeat an image for several people)."""
        bgr = [to_bgr8(img, where=f"images[{i}]") for i, img in enumerate(images)]
        if boxes is None and bgr:
            geo = [self._frame_geometry(img.shape[:2]) for img in bgr]
            if len(geo) == 1:
                sizes, forward, inverse = (a.copy() for a in geo[0][:3])
            else:
                sizes, forward, inverse = (np.concatenate([g[i] for g in geo]) for i in range(3))
            plans: list[Plan | None] | None = [g[3] for g in geo]
        else:
            sizes = np.array([img.shape[:2] for img in bgr], dtype=np.int64).reshape(-1, 2)
            forward, inverse = _affines(self.spec, sizes, boxes)
            # Box crops (a detector's, or tracked from the last frame) sit at sub-pixel positions: planning a
            # resize for each, every frame, would cost more than it could save. Warp them.
            plans = [None] * len(bgr)
        warped = self._warp(bgr, forward, plans)
        return Batch(tensor=self._normalise(warped), transforms=inverse, image_sizes=sizes)

    def _frame_geometry(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Plan | None]:
        """(size [1,2], forward [1,2,3], inverse [1,2,3], resize plan or None) of a whole frame, once per size."""
        entry = self._geometry.get(hw)
        if entry is None:
            size = np.array([hw], dtype=np.int64)
            forward, inverse = _affines(self.spec, size, None)
            if len(self._geometry) >= 64:  # a stream of ever-new sizes: keep the table small
                self._geometry.clear()
            entry = self._geometry[hw] = (size, forward, inverse, resize_plan(forward[0], hw))
        return entry

    def _warp(self, images: list[np.ndarray], forward: np.ndarray,
              plans: list[Plan | None] | None = None) -> np.ndarray:
        """Warp each image straight into its slot of one ``[N, H, W, 3]`` uint8 buffer.

        An axis-aligned affine with a ``plan`` (else checked here) is ``cv2.resize`` (skipped at scale 1) and a
        paste into the padded slot: the same sample points, and at scale 1 the same pixels, as the bilinear
        warp, in about half its time; a batch of one image already at the input size is returned as a view.
        """
        h, w = self.spec.height, self.spec.width
        if plans is None:
            plans = [resize_plan(m, img.shape[:2]) for img, m in zip(images, forward, strict=True)]
        if len(images) == 1 and plans[0] == ((w, h), (0, 0)) and images[0].shape[:2] == (h, w):
            return images[0][None]
        out = np.empty((len(images), h, w, 3), dtype=np.uint8)
        border = (float(self.spec.pad_value),) * 3
        for i, (img, m) in enumerate(zip(images, forward, strict=True)):
            plan = plans[i]
            if plan is not None:
                size, shift = plan
                src = img if size == (img.shape[1], img.shape[0]) else cv2.resize(img, size,
                                                                                   interpolation=cv2.INTER_LINEAR)
                _paste(src, shift, out[i], self.spec.pad_value)
                continue
            cv2.warpAffine(
                img,
                m,
                (w, h),
                dst=out[i],
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=border,
            )
        return out

    def _normalise(self, batch: np.ndarray) -> np.ndarray:
        """Colour order, grey conversion, scale/mean/std and layout, once for the whole batch.

        Each path reads every 8-bit pixel once and writes its float32 value once, into an array numpy allocates
        (a fresh OpenCV-allocated blob of this size is new pages each call, whose faults cost more than the
        arithmetic): NHWC swaps channels on the 8-bit pixels and looks each level up (``cv2.LUT``); NCHW makes
        the planar blob (``cv2.dnn.blobFromImagesWithParams``).
        """
        n, h, w, _ = batch.shape
        if self.spec.channels == 1:
            x = (batch @ _GREY_WEIGHTS_BGR)[..., None]
            if self.spec.layout == "NCHW":
                x = x.transpose(0, 3, 1, 2)
            out = np.empty(x.shape, dtype=np.float32)
            np.multiply(x, self._gain, out=out)
            out -= self._offset
            return out
        if n == 0:
            shape = (0, 3, h, w) if self.spec.layout == "NCHW" else (0, h, w, 3)
            return np.empty(shape, dtype=np.float32)
        if self.spec.layout == "NHWC":
            tall = np.ascontiguousarray(batch).reshape(n * h, w, 3)
            if self.spec.color == "RGB":
                tall = cv2.cvtColor(tall, cv2.COLOR_BGR2RGB)
            return cv2.LUT(tall, self._lut).reshape(n, h, w, 3)
        _check_blob_maker()
        out = np.empty((n, 3, h, w), dtype=np.float32)
        cv2.dnn.blobFromImagesWithParams(list(batch), out, self._blob)
        return out


_BLOB_CHECKED: list[bool] = []


def _check_blob_maker() -> None:
    """Once per process: OpenCV's blob maker computes the formula for every image of a batch (4.8 swaps the
    scale of the second image on, which would feed batches a wrong tensor without an error)."""
    if _BLOB_CHECKED:
        return
    pixel = np.array([[[10, 120, 250]]], dtype=np.uint8)
    params = cv2.dnn.Image2BlobParams(scalefactor=(1.0, 2.0, 3.0), size=(1, 1), mean=(1.0, 2.0, 3.0), swapRB=True,
                                      ddepth=cv2.CV_32F, datalayout=cv2.dnn.DNN_LAYOUT_NCHW)
    got = np.asarray(cv2.dnn.blobFromImagesWithParams([pixel, pixel], params)).reshape(2, 3)
    if not np.allclose(got, (np.array([250.0, 120.0, 10.0]) - [1, 2, 3]) * [1, 2, 3]):
        raise HeatdeployError(f"OpenCV {cv2.__version__} computes cv2.dnn.blobFromImagesWithParams wrongly for "
                              "batches; pip install 'opencv-python-headless>=4.9,<5'")
    _BLOB_CHECKED.append(True)

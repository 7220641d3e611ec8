"""Heatmap codecs, one per trainer's convention: each renders targets and decodes them the trainer's way.

A model decodes right only under the rules it was trained with: where a heatmap pixel sits in the input,
which DARK kernel and which border rule apply. Each codec here is built from its own parameters (input size,
heatmap size, sigma, decoder), as MMPose codecs are, and keeps encode and decode consistent:

- ``pixel-centre`` (heatdeploy's own; legacy ``center``): heatmap pixel ``j`` covers input pixels
  ``[j*s, (j+1)*s)``, so ``x_in = (x_hm + 0.5) * s - 0.5``.
- ``mmpose-msra`` (MMPose ``MSRAHeatmap``): ``x_in = x_hm * s`` with ``s = W_in / W_hm``; DARK kernel from
  MMPose's documented rule ``sigma = 0.3 * ((ks - 1) * 0.5 - 1) + 0.8``; quarter offset skipping the border
  rows/cols MMPose skips; targets at the rounded point unless DARK (then unbiased, sub-pixel).
- ``mmpose-udp`` (MMPose ``UDPHeatmap``; legacy ``udp``): ``x_in = x_hm * (W_in - 1) / (W_hm - 1)`` (corner
  pixels onto corner pixels, the UDP paper's and MMPose's encode rule) and MMPose's DARK-UDP refinement.
  MMPose's ``UDPHeatmap.decode`` returns ``x_hm * W_in / (W_hm - 1)``, which its box step
  (``x / W_in * box width``) turns into ``x_hm / (W_hm - 1) * box width``: corner-aligned, the same point as
  this rule gives in input pixels.
- ``mediapipe`` (``RefineLandmarksFromHeatmapCalculator``): ``x_in = x_hm * s``; the refinement window is
  centred on the truncated (not rounded) heatmap position, as MediaPipe casts with ``int()``.

Everything is pure numpy over whole ``[N, K, ...]`` batches with no Python loop over keypoints.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np

from heatdeploy.errors import InputError
from heatdeploy.runtime.codecs.refine import (
    QuarterBorder,
    argmax_2d,
    refine_dark,
    refine_dark_udp,
    refine_quarter,
    soft_argmax,
)
from heatdeploy.spec import ModelSpec

WindowRounding = Literal["round", "truncate"]
DECODERS = ("argmax", "quarter", "dark", "soft_argmax")


def pixel_centre_blur_kernel(sigma: float) -> int:
    """heatdeploy's DARK kernel: odd, about 6 sigma + 1 (covers the Gaussian to 3 sigma each side)."""
    k = int(round(6 * sigma)) + 1
    return k if k % 2 else k + 1


def mmpose_blur_kernel(sigma: float) -> int:
    """MMPose's documented kernel rule ``sigma = 0.3 * ((ks - 1) * 0.5 - 1) + 0.8``, solved for the odd size.

    Gives 11 for sigma 2 and 17 for sigma 3, MMPose's config values; never below 3.
    """
    half = math.floor((sigma - 0.8) / 0.3 + 1.0 + 1e-9)
    return max(2 * half + 1, 3)


class HeatmapConvention:
    """Base codec: Gaussian targets and decoding in one object, parametrised by the convention's rules.

    ``input_size`` and ``heatmap_size`` are ``(w, h)``. ``stride``, when given, is the input pixels per
    heatmap pixel the spec declares (kept for ``pixel-centre`` so old specs decode exactly as before);
    the other conventions scale by ``input / heatmap`` per axis, as their trainers do.
    """

    name: ClassVar[str] = ""
    uses_stride: ClassVar[bool] = False  # scale by the spec's declared stride, not input / heatmap size
    quarter_border: ClassVar[QuarterBorder] = "neighbours"
    window_rounding: ClassVar[WindowRounding] = "round"

    def __init__(self, input_size: tuple[int, int], heatmap_size: tuple[int, int], *, sigma: float = 2.0,
                 decoder: str = "dark", blur_kernel: int = 0, soft_argmax_beta: float = 1.0,
                 stride: float | None = None) -> None:
        if decoder not in DECODERS:
            raise InputError(f"decoder.name: unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.decoder = decoder
        self.blur_kernel = int(blur_kernel) if blur_kernel else self.default_blur_kernel(self.sigma)
        self.soft_argmax_beta = float(soft_argmax_beta)
        w_in, h_in = self.input_size
        w_hm, h_hm = self.heatmap_size
        ratio = (w_in / max(w_hm, 1), h_in / max(h_hm, 1))
        self.scale = np.array((stride, stride) if stride and self.uses_stride else ratio, dtype=np.float64)

    @staticmethod
    def default_blur_kernel(sigma: float) -> int:
        return pixel_centre_blur_kernel(sigma)

    # --- coordinate frames ----------------------------------------------------------------------

    def to_input(self, coords_hm: np.ndarray) -> np.ndarray:
        """(x, y) heatmap px -> (x, y) model-input px."""
        return (np.asarray(coords_hm, dtype=np.float64) * self.scale).astype(np.float32)

    def to_heatmap(self, coords_in: np.ndarray) -> np.ndarray:
        """(x, y) model-input px -> (x, y) heatmap px; the inverse of :meth:`to_input`."""
        return (np.asarray(coords_in, dtype=np.float64) / self.scale).astype(np.float32)

    # --- encode ---------------------------------------------------------------------------------

    def _targets(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Gaussian centres ``[N,K,2]``, reach-test centres, and a window centre (None: no window)."""
        return mu, mu, None

    def _near(self, reach_mu: np.ndarray) -> np.ndarray:
        w, h = self.heatmap_size
        reach = 3.0 * self.sigma
        return ((reach_mu > -reach) & (reach_mu < np.array([w - 1 + reach, h - 1 + reach]))).all(axis=-1)

    def encode(self, keypoints_in: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``[N,K,2]`` in input px -> Gaussian targets ``[N,K,h,w]`` and weights ``[N,K]``.

        Targets peak at 1 (label-smoothed one-hots, sigma in heatmap px). Absent, non-finite and
        out-of-reach keypoints get an all-zero target and weight 0.
        """
        kp = np.asarray(keypoints_in, dtype=np.float64)
        pres = np.asarray(present, dtype=bool)
        if kp.ndim != 3 or kp.shape[-1] != 2 or pres.shape != kp.shape[:2]:
            raise InputError(f"encode: expected keypoints [N,K,2] and present [N,K], got {kp.shape} and {pres.shape}")
        w, h = self.heatmap_size
        mu = self.to_heatmap(kp).astype(np.float64)
        finite = np.isfinite(mu).all(axis=-1)
        mu = np.where(finite[..., None], mu, 0.0)
        centre, reach_mu, window = self._targets(mu)
        weights = (pres & finite & self._near(reach_mu)).astype(np.float32)
        inv = -0.5 / (self.sigma * self.sigma)
        dx = np.arange(w) - centre[..., 0:1]  # [N,K,w]
        dy = np.arange(h) - centre[..., 1:2]  # [N,K,h]
        gx = np.exp(inv * dx**2) * weights[..., None]
        gy = np.exp(inv * dy**2)
        if window is not None:  # MMPose pastes a (2*3sigma+1)^2 patch around the rounded point
            r = 3.0 * self.sigma
            gx = gx * (np.abs(np.arange(w) - window[..., 0:1]) <= r)
            gy = gy * (np.abs(np.arange(h) - window[..., 1:2]) <= r)
        return (gy[..., :, None] * gx[..., None, :]).astype(np.float32), weights

    # --- decode ---------------------------------------------------------------------------------

    def _dark(self, heatmaps: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        return refine_dark(heatmaps, peaks, self.blur_kernel)

    def refine(self, heatmaps: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        """Integer peaks ``[N,K,2]`` -> sub-pixel heatmap coordinates by this codec's decoder."""
        if self.decoder == "quarter":
            return refine_quarter(heatmaps, peaks, self.quarter_border)
        if self.decoder == "dark":
            return self._dark(heatmaps, peaks)
        if self.decoder == "soft_argmax":
            return soft_argmax(heatmaps, self.soft_argmax_beta)
        return np.asarray(peaks, dtype=np.float32)

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heatmaps ``[N,K,h,w]`` -> (x, y) in input px ``[N,K,2]``, in heatmap px ``[N,K,2]``, peak ``[N,K]``."""
        peaks, scores = argmax_2d(heatmaps)
        coords_hm = self.refine(heatmaps, peaks)
        return self.to_input(coords_hm), coords_hm, scores

    def window_centres(self, coords_hm: np.ndarray) -> np.ndarray:
        """Integer centre of a refinement window around each point (MediaPipe truncates, others round)."""
        c = np.asarray(coords_hm, dtype=np.float64)
        return np.trunc(c) if self.window_rounding == "truncate" else np.rint(c)


class PixelCentreCodec(HeatmapConvention):
    """heatdeploy's convention: a heatmap pixel's centre is the centre of the input block it covers."""

    name = "pixel-centre"
    uses_stride = True

    def to_input(self, coords_hm: np.ndarray) -> np.ndarray:
        return ((np.asarray(coords_hm, dtype=np.float64) + 0.5) * self.scale - 0.5).astype(np.float32)

    def to_heatmap(self, coords_in: np.ndarray) -> np.ndarray:
        return ((np.asarray(coords_in, dtype=np.float64) + 0.5) / self.scale - 0.5).astype(np.float32)


class MMPoseMSRACodec(HeatmapConvention):
    """MMPose ``MSRAHeatmap``: ``x_in = x_hm * s``; unbiased targets and DARK together, else rounded targets."""

    name = "mmpose-msra"
    quarter_border = "mmpose"

    @staticmethod
    def default_blur_kernel(sigma: float) -> int:
        return mmpose_blur_kernel(sigma)

    def _targets(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.decoder == "dark":  # unbiased: the exact point, whole map
            return mu, mu, None
        rounded = np.trunc(mu + 0.5)  # MMPose: (keypoint + 0.5).astype(int)
        return rounded, rounded, rounded

    def _near(self, reach_mu: np.ndarray) -> np.ndarray:
        # MMPose keeps a target while its 3-sigma box [mu - r, mu + r + 1) overlaps the map.
        w, h = self.heatmap_size
        r = 3.0 * self.sigma
        return ((reach_mu - r < np.array([w, h])) & (reach_mu + r + 1 >= 0)).all(axis=-1)


class MMPoseUDPCodec(MMPoseMSRACodec):
    """MMPose ``UDPHeatmap``: corner-aligned frames, sub-pixel targets in a 3-sigma window, DARK-UDP."""

    name = "mmpose-udp"

    def __init__(self, input_size: tuple[int, int], heatmap_size: tuple[int, int], **kwargs: object) -> None:
        super().__init__(input_size, heatmap_size, **kwargs)  # type: ignore[arg-type]
        (w_in, h_in), (w_hm, h_hm) = self.input_size, self.heatmap_size
        self.scale = np.array([(w_in - 1) / max(w_hm - 1, 1), (h_in - 1) / max(h_hm - 1, 1)], dtype=np.float64)

    def _targets(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rounded = np.trunc(mu + 0.5)
        return mu, rounded, rounded

    def _dark(self, heatmaps: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        return refine_dark_udp(heatmaps, peaks, self.blur_kernel)


class MediaPipeCodec(HeatmapConvention):
    """MediaPipe: ``x_in = x_hm * s`` (``col / hm_width`` normalised), truncated window centres."""

    name = "mediapipe"
    window_rounding = "truncate"


CODECS: dict[str, type[HeatmapConvention]] = {
    "pixel-centre": PixelCentreCodec,
    "center": PixelCentreCodec,
    "mmpose-msra": MMPoseMSRACodec,
    "mmpose-udp": MMPoseUDPCodec,
    "udp": MMPoseUDPCodec,
    "mediapipe": MediaPipeCodec,
}


def codec_from_spec(spec: ModelSpec) -> HeatmapConvention:
    """The codec the spec's ``heatmap.align`` names, built from the spec's sizes and decoder settings."""
    if spec.heatmap is None:
        raise InputError("heatmap: this spec has no heatmap output, so it has no heatmap codec")
    align = spec.heatmap.align
    if align not in CODECS:
        raise InputError(f"heatmap.align: unknown convention {align!r}; expected one of {', '.join(CODECS)}")
    h, w = spec.heatmap_size
    d = spec.decoder
    return CODECS[align]((spec.input.width, spec.input.height), (w, h), sigma=d.sigma, decoder=d.name,
                         blur_kernel=d.blur_kernel, soft_argmax_beta=d.soft_argmax_beta,
                         stride=float(spec.heatmap.stride))

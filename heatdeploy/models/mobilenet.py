"""The second test model: a MobileNetV2-style pose net with NHWC input and three outputs.

Why a second model: the reference net is plain convs with two float-friendly outputs. Edge pose models
(MoveNet, MediaPipe) look different, and the differences are where stock INT8 is expected to go wrong:

- depthwise-separable blocks (ReLU6, inverted residuals with adds): in long-trained MobileNets the
  Conv+BN-folded depthwise filters of one layer differ in scale by two orders of magnitude or more, so one
  per-tensor weight scale (stock ``quantize_static``) leaves many channels a handful of levels. This net is
  trained 4,000 steps on synthetic figures (37 min on 2 cores): its folded depthwise filters spread 4-19x
  per layer, so that trap is weak here (measured: stock moves heatmap keypoints 0.106 px from FP32, ours
  0.062; see tests/models/test_mobilenet_int8.py);
- NHWC input (as TFLite / MediaPipe models take it), permuted to NCHW inside ``forward``;
- ``heatmaps`` ``[N,17,H/4,W/4]`` (NCHW) from a light FPN-style decoder at stride 4;
- ``landmarks`` ``[N,51]``: per keypoint x, y in *input pixels* and a visibility logit, regressed from
  pooled features, and ``presence`` ``[N,1]``: a per-instance logit. Both come out of one regression
  Gemm (``[N,52]``, split), as flat landmark vectors do in MediaPipe-style models (x, y, z, visibility,
  presence per landmark in one tensor). Quantizing that Gemm's output puts coordinates of hundreds of
  pixels and logits near zero on one 8-bit grid with steps of a few units (measured: presence logit
  error up to 1.25 and 52 of 867 visibility logits flipped under stock, 0.089 and 0 under ours), so logits
  near the threshold flip. That is the classic trap of quantizing outputs' producers, and it does show.

The spec's decoder reads ``heatmaps`` + ``presence``; ``landmarks`` is an extra output the runtime
ignores and parity does not compare (parity covers the spec's outputs), so :func:`landmark_agreement`
measures it. heatdeploy's exporter writes only the spec's outputs, so :func:`export_mobilenet_onnx` does
the export and ``export_bundle`` imports the ``.onnx``.

Training (``train_mobilenet``) is reproducible: every batch is drawn from a generator seeded
by (seed, step) as in :mod:`heatdeploy.models.train`; 15% of frames hold no figure, so that with the
synthetic set's own figures mostly outside the frame (~9%) the presence head sees enough negatives.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heatdeploy.calibration.stock import STOCK_NAME, STOCK_PATH, add_stock_int8  # noqa: F401 (re-exported)
from heatdeploy.models.skeleton import KEYPOINTS, SKELETON
from heatdeploy.refdata import SOURCE_DIR, reference_data
from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, InputSpec, ModelSpec

_WEIGHTS = "weights/mobilenet.pt"  # WEIGHTS is looked up when read (__getattr__; heatdeploy/refdata.py)


def __getattr__(name: str) -> Path:
    if name == "WEIGHTS":
        return reference_data(_WEIGHTS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MODEL_REF = "heatdeploy.models.mobilenet:MobilePoseNet"  # module:factory for export_bundle
HEIGHT, WIDTH = 256, 192
OUTPUTS = ("heatmaps", "presence", "landmarks")  # ONNX output order
K = len(KEYPOINTS)


def mobilenet_spec() -> ModelSpec:
    """NHWC RGB in [-1, 1] (MobileNet convention); heatmaps + a per-instance presence logit."""
    return ModelSpec(
        name="heatdeploy-mobilenet-pose",
        keypoints=KEYPOINTS,
        skeleton=SKELETON,
        input=InputSpec(name="image", layout="NHWC", height=HEIGHT, width=WIDTH, color="RGB",
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="letterbox"),
        heatmap=HeatmapSpec(name="heatmaps", layout="NCHW", stride=4, activation="probabilities",
                            align="center"),
        existence=ExistenceSpec(name="presence", per="instance", activation="logits", threshold=0.5),
        decoder=DecoderSpec(name="dark", sigma=2.0),
    ).validate()


# --- the network -----------------------------------------------------------------------------------


def _cbr6(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear project (+ input)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_cbr6(cin, hidden)]
        layers += [_cbr6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _dwsep(ch: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, both ReLU6: the decoder's cheap 3x3 context."""
    return nn.Sequential(_cbr6(ch, ch, 3, groups=ch), _cbr6(ch, ch))


class ScaledLinear(nn.Linear):
    """``y = (W x + b) * scale + shift`` with fixed per-output ``scale``/``shift``.

    Lets a layer whose outputs are pixel coordinates train with unit-scale parameters under Adam, while
    the exported graph holds one plain Gemm with pixel-valued outputs (the product of two constants is
    folded by the exporter) — the tensor a quantizer sees is in pixels, as in real landmark heads.
    """

    def __init__(self, cin: int, cout: int, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__(cin, cout)
        self.register_buffer("scale", scale.float().clone())
        self.register_buffer("shift", shift.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale[:, None], self.bias * self.scale + self.shift)


def _landmark_affine(height: int, width: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output scale/shift of the regression Gemm: x, y around the centre in px; logits unscaled."""
    scale = torch.ones(3 * k + 1)
    shift = torch.zeros(3 * k + 1)
    scale[0:3 * k:3], scale[1:3 * k:3] = width / 2, height / 2
    shift[0:3 * k:3], shift[1:3 * k:3] = (width - 1) / 2, (height - 1) / 2
    return scale, shift


def _up(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling to the lateral's size, plus the lateral.

    Given as a target size rather than ``scale_factor=2``: a Resize by scales makes ORT's symbolic shape
    inference lose the batch dimension (``quant_pre_process`` then fails), a Resize to sizes does not.
    """
    return F.interpolate(x, size=lateral.shape[-2:], mode="nearest") + lateral


class MobilePoseNet(nn.Module):
    """NHWC image -> {"heatmaps" [N,K,H/4,W/4], "presence" [N,1] logit, "landmarks" [N,3K]}."""

    def __init__(self, num_keypoints: int = K, height: int = HEIGHT, width: int = WIDTH,
                 decoder: int = 64) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.stem = _cbr6(3, 16, 3, 2)                                                     # /2
        self.stage1 = InvertedResidual(16, 16, 1, expand=1)
        self.stage2 = nn.Sequential(InvertedResidual(16, 24, 2), InvertedResidual(24, 24))   # /4
        self.stage3 = nn.Sequential(InvertedResidual(24, 32, 2), InvertedResidual(32, 32),
                                    InvertedResidual(32, 32))                              # /8
        self.stage4 = nn.Sequential(InvertedResidual(32, 64, 2), InvertedResidual(64, 64),
                                    InvertedResidual(64, 64), InvertedResidual(64, 96),
                                    InvertedResidual(96, 96))                              # /16
        self.stage5 = nn.Sequential(InvertedResidual(96, 128, 2), InvertedResidual(128, 128))  # /32
        # decoder: top-down with lateral 1x1s, nearest upsampling, a depthwise-separable conv per level
        self.top = _cbr6(128, decoder)
        self.lat4, self.lat3, self.lat2 = _cbr6(96, decoder), _cbr6(32, decoder), _cbr6(24, decoder)
        self.smooth4, self.smooth3, self.smooth2 = _dwsep(decoder), _dwsep(decoder), _dwsep(decoder)
        self.final = nn.Conv2d(decoder, num_keypoints, 1)
        # regression head: pooled /32 features -> landmarks (x, y px, visibility logit) + presence logit
        self.expand = _cbr6(128, 256)
        self.fc = nn.Sequential(nn.Linear(256, 128), nn.ReLU(inplace=True))
        scale, shift = _landmark_affine(height, width, num_keypoints)
        self.regress = ScaledLinear(128, 3 * num_keypoints + 1, scale, shift)

    def heatdeploy_spec(self) -> ModelSpec:
        """Lets ``export_bundle(MODEL_REF, ...)`` find the spec (that path drops ``landmarks``)."""
        return mobilenet_spec()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW; the exporter writes this as the graph's first Transpose
        c2 = self.stage2(self.stage1(self.stem(x)))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        p = self.smooth4(_up(self.top(c5), self.lat4(c4)))
        p = self.smooth3(_up(p, self.lat3(c3)))
        p = self.smooth2(_up(p, self.lat2(c2)))
        heatmaps = self.final(p)
        v = self.regress(self.fc(torch.flatten(F.adaptive_avg_pool2d(self.expand(c5), 1), 1)))
        k3 = 3 * self.num_keypoints
        return {"heatmaps": heatmaps, "presence": v[:, k3:], "landmarks": v[:, :k3]}


class _NchwAdapter(nn.Module):
    """NCHW in, the model's outputs out: lets ``reference.count_macs`` (which feeds NCHW zeros) count it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.inner(x.permute(0, 2, 3, 1))


def model_stats(model: nn.Module | None = None) -> dict[str, int]:
    """Parameters and multiply-accumulates (Conv/Linear) for one HEIGHT x WIDTH image."""
    from heatdeploy.models.reference import count_macs

    model = model or MobilePoseNet()
    return {"params": sum(p.numel() for p in model.parameters()),
            "macs": count_macs(_NchwAdapter(model), HEIGHT, WIDTH)}


def load_mobilenet(weights: str | Path | None = None) -> tuple[MobilePoseNet, ModelSpec]:
    """The net with its shipped (or given) weights, in eval mode, and its spec."""
    path = Path(weights) if weights is not None else reference_data(_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MobileNet weights missing; run "
                                "heatdeploy.models.mobilenet.train_mobilenet(out, steps)")
    model = MobilePoseNet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    return model.eval(), mobilenet_spec()


# --- export ----------------------------------------------------------------------------------------


class _TupleOutputs(nn.Module):
    """The dict outputs as a tuple in ``OUTPUTS`` order, for ``torch.onnx.export``'s output names."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(x)
        return tuple(out[name] for name in OUTPUTS)


def export_mobilenet_onnx(out: str | Path, weights: str | Path | None = None, opset: int = 17) -> Path:
    """FP32 ONNX with all three outputs and the spec embedded; checked against torch.

    heatdeploy's exporter writes only the spec's outputs (heatmaps, presence), so the extra ``landmarks``
    output would be dropped; this writes the graph with it (TorchScript exporter, BN folded, dynamic
    batch) and then goes through the same spec embedding and graph check, so ``export_bundle(path)``
    imports it like any user's ``.onnx``.
    """
    import io
    import warnings

    import onnx
    import onnxruntime as ort

    from heatdeploy.exporters.onnx import check_spec_against_graph, embed_spec
    from heatdeploy.fsutil import atomic_path

    model, spec = load_mobilenet(weights)
    wrapped = _TupleOutputs(model).eval()
    x = torch.randn(2, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation chatter
        want = [t.numpy() for t in wrapped(x)]
        torch.onnx.export(wrapped, (x,), buf, dynamo=False, opset_version=opset, input_names=[spec.input.name],
                          output_names=list(OUTPUTS), do_constant_folding=True,
                          dynamic_axes={n: {0: "batch"} for n in (spec.input.name, *OUTPUTS)},
                          training=torch.onnx.TrainingMode.EVAL)
    proto = onnx.load_from_string(buf.getvalue())
    embed_spec(proto, spec)
    check_spec_against_graph(proto, spec)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 2):
        got = sess.run(list(OUTPUTS), {spec.input.name: x[:n].numpy()})
        for name, g, w in zip(OUTPUTS, got, want, strict=True):
            diff = float(np.abs(g - w[:n]).max())
            tol = 1e-3 * (1.0 + float(np.abs(w).max()))  # landmarks are in pixels: relative tolerance
            if not diff <= tol:
                raise RuntimeError(f"{out}: ONNX output {name!r} differs from torch by {diff:.3g} at batch {n}")
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


def export_mobilenet_bundle(out: str | Path, weights: str | Path | None = None) -> Path:
    """A bundle (onnx-fp32 with all three outputs) via ``export_bundle`` on the exported ``.onnx``."""
    from heatdeploy.api import export_bundle

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="heatdeploy-mobilenet-", dir=out.parent) as tmp:
        onnx_path = export_mobilenet_onnx(Path(tmp) / "mobilenet.onnx", weights)
        export_bundle(str(onnx_path), out)
    return out


# --- data ------------------------------------------------------------------------------------------


def instance_present(present: np.ndarray) -> np.ndarray:
    """The presence target: most keypoints (> half) inside the frame, per image."""
    return np.asarray(present, bool).mean(axis=-1) > 0.5


def render_background(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A frame with no figure: a photograph crop with the synthetic set's blur and noise (presence negative)."""
    import cv2

    from heatdeploy.models.synthetic import _background

    img = _background(rng, height, width)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.5:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255).astype(np.uint8)
    return img


def render_mixed(rng: np.random.Generator, n: int, empty: float = 0.15, height: int = HEIGHT,
                 width: int = WIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic set with a share ``empty`` of figure-free frames: (images, keypoints, present, visible).

    Figure-free frames have NaN keypoints and nothing present. The synthetic set alone has ~9% presence
    negatives (figures mostly outside); the empty frames make the presence head see enough of them.
    """
    from heatdeploy.models.synthetic import render_sample

    images = np.zeros((n, height, width, 3), np.uint8)
    kp = np.full((n, K, 2), np.nan, np.float32)
    present = np.zeros((n, K), bool)
    visible = np.zeros((n, K), bool)
    for i in range(n):
        if rng.random() < empty:
            images[i] = render_background(rng, height, width)
        else:
            s = render_sample(rng, height, width)
            images[i], kp[i], present[i], visible[i] = s.image, s.keypoints, s.present, s.visible
    return images, kp, present, visible


def eval_images(n: int = 64, seed: int = 20261124) -> Any:
    """A parity data set (a ``heatdeploy.datasets.Dataset``) of ``n`` mixed frames with ground truth."""
    from heatdeploy.datasets import Dataset, Truth

    images, kp, present, visible = render_mixed(np.random.default_rng(seed), n)
    return Dataset(kind="synthetic", source=f"mobilenet eval: {n} mixed frames (seed {seed})",
                      names=[f"mixed-{i:04d}" for i in range(n)], arrays=list(images),
                      truth=Truth(np.nan_to_num(kp, nan=-1e4), present, visible),
                      truth_sizes=np.tile(np.array([[HEIGHT, WIDTH]], np.int64), (n, 1)),
                      note="synthetic figures plus 15% figure-free frames")


# --- INT8: stock ORT defaults, and what parity does not compare -------------------------------------

def landmark_agreement(bundle_dir: str | Path, candidate: str, data: Any,
                       reference: str = "onnx-fp32") -> dict[str, float]:
    """The extra ``landmarks`` output, candidate vs reference on the same input tensors.

    Parity's tensor and keypoint metrics cover the spec's outputs only (heatmaps, presence), so the
    flat landmark vector is compared here: coordinate error in input px and visibility-logit sign flips,
    on images where the reference calls the instance present.
    """
    from heatdeploy.runtime.pipeline import Pipeline

    ref, cand = Pipeline.load(bundle_dir, artifact=reference), Pipeline.load(bundle_dir, artifact=candidate)
    err, flips, total = [], 0, 0
    for i in range(0, len(data), 16):
        x = ref.preprocess(data.load(i, i + 16)).tensor
        a, b = ref.infer(x), cand.infer(x)
        keep = a["presence"][:, 0] >= 0  # the codec: p >= 0.5
        la = a["landmarks"].reshape(-1, K, 3)[keep]
        lb = b["landmarks"].reshape(-1, K, 3)[keep]
        err.append(np.linalg.norm(la[..., :2] - lb[..., :2], axis=-1).ravel())
        flips += int(((la[..., 2] > 0) != (lb[..., 2] > 0)).sum())
        total += la[..., 2].size
    e = np.concatenate(err) if err else np.zeros(0)
    return {"coord_mean_px": float(e.mean()) if e.size else math.nan,
            "coord_max_px": float(e.max()) if e.size else math.nan,
            "visibility_flips": flips, "visibility_logits": total}


# --- training --------------------------------------------------------------------------------------


@dataclass
class MobileTrainConfig:
    steps: int = 4000  # the shipped weights
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 30
    heatmap_weight: float = 100.0
    foreground_weight: float = 10.0  # as train.py: pixels near a keypoint weigh more
    landmark_weight: float = 5.0
    empty: float = 0.15  # share of figure-free frames per batch
    seed: int = 0
    val_every: int = 200
    val_size: int = 96
    workers: int = 1  # a renderer process beside the training threads
    threads: int = 2


class _MixedBatches(torch.utils.data.Dataset):
    """Batch number -> tensors; deterministic per (seed, step) whatever the number of workers."""

    def __init__(self, spec: ModelSpec, cfg: MobileTrainConfig) -> None:
        self.spec, self.cfg = spec, cfg

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, step, 1])
        images, kp, present, visible = render_mixed(rng, self.cfg.batch, self.cfg.empty)
        return _targets(self.spec, images, kp, present, visible)


def _targets(spec: ModelSpec, images: np.ndarray, kp: np.ndarray, present: np.ndarray,
             visible: np.ndarray) -> dict[str, torch.Tensor]:
    """Input tensor and targets. Heatmaps of a present instance cover every keypoint: one outside the
    frame is placed on the nearest border pixel, so its peak (which parity compares, presence being per
    instance) is a trained one rather than the argmax of noise."""
    from heatdeploy.runtime.decode import HeatmapCodec
    from heatdeploy.runtime.preprocess import Preprocessor

    h, w = spec.input.height, spec.input.width
    inst = instance_present(present)
    finite = np.isfinite(kp).all(axis=-1)
    clamped = np.stack([np.clip(kp[..., 0], 0, w - 1), np.clip(kp[..., 1], 0, h - 1)], axis=-1)
    clamped = np.where(finite[..., None], clamped, 0.0)
    hm_present = np.where(inst[:, None], finite, present)
    target, weight = HeatmapCodec(spec).encode(clamped, hm_present)
    x = Preprocessor(spec.input)(list(images)).tensor
    lm = np.zeros((len(kp), K, 3), np.float32)
    lm[..., :2] = np.where(finite[..., None], kp, 0.0)
    lm[..., 2] = visible
    return {"x": torch.from_numpy(x), "hm": torch.from_numpy(target), "hm_w": torch.from_numpy(weight),
            "presence": torch.from_numpy(inst.astype(np.float32)[:, None]),
            "landmarks": torch.from_numpy(lm.reshape(len(kp), -1)),
            "lm_w": torch.from_numpy(finite.astype(np.float32))}


def _loss(out: dict[str, torch.Tensor], t: dict[str, torch.Tensor],
          cfg: MobileTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    sq = (out["heatmaps"] - t["hm"]).square()
    per_map = (sq * (1 + cfg.foreground_weight * t["hm"])).mean(dim=(2, 3))
    loss_hm = (per_map * t["hm_w"]).sum() / t["hm_w"].sum().clamp(min=1)
    loss_pr = F.binary_cross_entropy_with_logits(out["presence"], t["presence"])
    pred = out["landmarks"].view(-1, K, 3)
    want = t["landmarks"].view(-1, K, 3)
    norm = torch.tensor([WIDTH, HEIGHT], dtype=pred.dtype)
    lw = t["lm_w"]
    coord = F.smooth_l1_loss(pred[..., :2] / norm, want[..., :2] / norm, reduction="none", beta=0.02).sum(-1)
    vis = F.binary_cross_entropy_with_logits(pred[..., 2], want[..., 2], reduction="none")
    loss_lm = ((coord + 0.1 * vis) * lw).sum() / lw.sum().clamp(min=1)
    loss = cfg.heatmap_weight * loss_hm + loss_pr + cfg.landmark_weight * loss_lm
    return loss, {"heatmap": loss_hm.item(), "presence": loss_pr.item(), "landmarks": loss_lm.item()}


def predict(model: nn.Module, x: np.ndarray, chunk: int = 32) -> dict[str, np.ndarray]:
    """Torch outputs as numpy, in chunks, eval mode."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUTS}
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            for name, t in model(torch.from_numpy(x[i:i + chunk])).items():
                parts[name].append(t.float().numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}


def validate_mobilenet(model: nn.Module, n: int = 96, seed: int = 10_000) -> dict[str, float]:
    """Accuracy on a fixed mixed validation set: PCK@0.05 (visible, on images with a present instance),
    presence accuracy, landmark error (px) and how close presence logits come to the threshold."""
    from heatdeploy.runtime.decode import HeatmapCodec
    from heatdeploy.runtime.metrics import diagonal, pck
    from heatdeploy.runtime.preprocess import Preprocessor

    spec = mobilenet_spec()
    images, kp, present, visible = render_mixed(np.random.default_rng(seed), n)
    x = Preprocessor(spec.input)(list(images)).tensor
    out = predict(model, x)
    dec = HeatmapCodec(spec).decode(out["heatmaps"], out["presence"])
    inst = instance_present(present)
    logit = out["presence"][:, 0]
    sizes = np.tile([HEIGHT, WIDTH], (n, 1))
    vis = visible & inst[:, None]
    lm = out["landmarks"].reshape(n, K, 3)
    fin = np.isfinite(kp).all(-1) & inst[:, None]
    return {
        "pck@0.05_visible": pck(dec.coords, np.nan_to_num(kp), vis, diagonal(sizes), 0.05),
        "presence_accuracy": float(((logit > 0) == inst).mean()),
        "presence_min_abs_logit": float(np.abs(logit).min()),
        "landmark_error_px": float(np.linalg.norm(lm[..., :2] - np.nan_to_num(kp), axis=-1)[fin].mean()),
        "instances": int(inst.sum()), "images": n,
    }


def train_mobilenet(out: str | Path, steps: int = 4000, *, cfg: MobileTrainConfig | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train from scratch on CPU (reproducible: seeded init, data seeded per step); write weights + record.

    Writes ``out`` (a state_dict, atomically) and ``out`` with suffix ``.train.json`` (config, timings,
    validation history).
    """
    from heatdeploy.fsutil import atomic_path, atomic_write_text
    from heatdeploy.models.train import warmup_cosine

    cfg = replace(cfg or MobileTrainConfig(), steps=steps)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    spec = mobilenet_spec()
    model = MobilePoseNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    loader = torch.utils.data.DataLoader(_MixedBatches(spec, cfg), batch_size=None, shuffle=False,
                                         num_workers=cfg.workers, prefetch_factor=4 if cfg.workers else None)
    t0 = time.time()
    history: list[dict[str, Any]] = []
    model.train()
    for step, batch in enumerate(loader):
        loss, parts = _loss(model(batch["x"]), batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            log(f"step {step + 1}/{cfg.steps} loss {loss.item():.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in parts.items()) + f" {time.time() - t0:.0f}s")
        if cfg.val_every and ((step + 1) % cfg.val_every == 0 or step == cfg.steps - 1):
            metrics = validate_mobilenet(model, cfg.val_size)
            history.append({"step": step + 1, **metrics})
            log(f"  val: {json.dumps(metrics)}")
            model.train()
    elapsed = time.time() - t0
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    record = {"config": asdict(cfg), "seconds": round(elapsed, 1), "threads": torch.get_num_threads(),
              "history": history, "torch": torch.__version__, **model_stats(model)}
    atomic_write_text(out.with_suffix(".train.json"), json.dumps(record, indent=2))
    return record


if __name__ == "__main__":  # nice -n 10 python -m heatdeploy.models.mobilenet [steps] [out]
    import sys

    train_mobilenet(Path(sys.argv[2]) if len(sys.argv) > 2 else SOURCE_DIR / _WEIGHTS,
                    int(sys.argv[1]) if len(sys.argv) > 1 else MobileTrainConfig.steps)

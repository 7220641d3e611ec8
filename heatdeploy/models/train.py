"""Reproducible training of the reference model on the synthetic data set (``heatdeploy train-reference``).

Every batch is drawn from a generator seeded by (seed, step), so the data do not depend on the
number of loader workers or the device. The heatmap head is trained as a classifier over
positions with Gaussian ("label-smoothed one-hot") targets from the same codec the runtime
decodes with; the existence head with BCE on "inside the frame".
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heatdeploy.fsutil import atomic_path, atomic_write_text
from heatdeploy.models.reference import ReferencePoseNet, reference_spec
from heatdeploy.models.synthetic import render_batch
from heatdeploy.runtime.decode import HeatmapCodec
from heatdeploy.runtime.metrics import keypoint_report
from heatdeploy.runtime.preprocess import Preprocessor
from heatdeploy.spec import ModelSpec


@dataclass
class TrainConfig:
    steps: int = 1200
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    heatmap_weight: float = 100.0
    foreground_weight: float = 10.0  # extra weight on pixels near a keypoint, so the net leaves the all-zero plateau
    seed: int = 0
    val_every: int = 200
    val_size: int = 128
    workers: int = -1  # -1: auto (0 on CPU, several on CUDA)
    device: str = "auto"


class _Batches(torch.utils.data.Dataset):
    """Batch number -> (images, heatmap targets, weights, present); deterministic per step."""

    def __init__(self, spec: ModelSpec, seed: int, batch: int, steps: int) -> None:
        self.spec, self.seed, self.batch, self.steps = spec, seed, batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, step])
        h, w = self.spec.input.height, self.spec.input.width
        images, kp, present, _ = render_batch(rng, self.batch, h, w)
        x = Preprocessor(self.spec.input)(list(images)).tensor
        target, weight = HeatmapCodec(self.spec).encode(kp, present)
        return (torch.from_numpy(x), torch.from_numpy(target), torch.from_numpy(weight),
                torch.from_numpy(present.astype(np.float32)))


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 2% of the base learning rate."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def predict_torch(model: nn.Module, spec: ModelSpec, x: np.ndarray, device: torch.device,
                  chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Run the torch model in chunks; return (heatmaps, existence logits) as numpy."""
    hms, exs = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            h, e = model(torch.from_numpy(x[i:i + chunk]).to(device))
            hms.append(h.float().cpu().numpy())
            exs.append(e.float().cpu().numpy())
    return np.concatenate(hms), np.concatenate(exs)


def validate(model: nn.Module, spec: ModelSpec, device: torch.device, n: int,
             seed: int = 10_000) -> dict[str, float]:
    """Accuracy on a fixed synthetic validation set (not the shipped evaluation split)."""
    rng = np.random.default_rng(seed)
    images, kp, present, visible = render_batch(rng, n, spec.input.height, spec.input.width)
    x = Preprocessor(spec.input)(list(images)).tensor
    hm, ex = predict_torch(model, spec, x, device)
    dec = HeatmapCodec(spec).decode(hm, ex)
    sizes = np.tile([spec.input.height, spec.input.width], (n, 1))
    return keypoint_report(dec.coords, dec.present, kp, present, visible, sizes)


def train_reference(out: Path, cfg: TrainConfig, log=print) -> dict:
    """Train from scratch and write the state_dict (atomically) plus a JSON training record."""
    torch.manual_seed(cfg.seed)
    spec = reference_spec()
    device = _device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    workers = cfg.workers if cfg.workers >= 0 else (min(12, (os.cpu_count() or 2) - 2)
                                                    if device.type == "cuda" else 0)
    model = ReferencePoseNet(spec.num_keypoints).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    loader = torch.utils.data.DataLoader(_Batches(spec, cfg.seed, cfg.batch, cfg.steps), batch_size=None,
                                         shuffle=False, num_workers=workers,
                                         persistent_workers=False, prefetch_factor=4 if workers else None)
    bce = nn.BCEWithLogitsLoss()
    t0 = time.time()
    history = []
    model.train()
    for step, (x, target, weight, present) in enumerate(loader):
        x, target, weight, present = (t.to(device, non_blocking=True) for t in (x, target, weight, present))
        hm, ex = model(x)
        sq = (hm - target).square()
        per_map = (sq * (1 + cfg.foreground_weight * target)).mean(dim=(2, 3))
        loss_hm = (per_map * weight).sum() / weight.sum().clamp(min=1)
        plain_mse = (sq.mean(dim=(2, 3)) * weight).sum() / weight.sum().clamp(min=1)
        loss_ex = bce(ex, present)
        loss = cfg.heatmap_weight * loss_hm + loss_ex
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            log(f"step {step + 1}/{cfg.steps} loss {loss.item():.4f} (heatmap mse {plain_mse.item():.5f}, "
                f"existence {loss_ex.item():.4f}) {time.time() - t0:.0f}s")
        if cfg.val_every and ((step + 1) % cfg.val_every == 0 or step == cfg.steps - 1):
            metrics = validate(model, spec, device, cfg.val_size)
            history.append({"step": step + 1, **metrics})
            log(f"  val: PCK@0.05 visible {metrics['pck@0.05_visible']:.3f}, existence accuracy "
                f"{metrics['existence_accuracy']:.3f}")
            model.train()
    elapsed = time.time() - t0
    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    record = {"config": asdict(cfg), "device": str(device), "threads": torch.get_num_threads(),
              "workers": workers, "seconds": round(elapsed, 1), "history": history,
              "torch": torch.__version__}
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2))
    return record

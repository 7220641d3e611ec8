"""A tiny heatmap + existence model so exporter tests run in seconds on two CPU cores."""

from __future__ import annotations

import torch
from torch import nn

from heatdeploy.spec import InputSpec, ModelSpec

KEYPOINTS = ("nose", "left_eye", "right_eye")
SIZE = 32


def tiny_spec(**input_kw: object) -> ModelSpec:
    """The spec matching :class:`TinyHeatmapNet` at 32x32 input, stride 4, K=3."""
    inp = InputSpec(height=SIZE, width=SIZE, **input_kw)  # type: ignore[arg-type]
    return ModelSpec(keypoints=KEYPOINTS, input=inp, name="tiny").validate()


class TinyHeatmapNet(nn.Module):
    """Conv backbone to stride 4 -> K sigmoid heatmaps, plus pooled existence logits [N, K]."""

    def __init__(self, k: int = len(KEYPOINTS), width: int = 8, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.heatmap = nn.Sequential(nn.Conv2d(width, k, 1), nn.Sigmoid())
        self.existence = nn.Linear(width, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        f = self.backbone(x)
        hm = self.heatmap(f)
        ex = self.existence(f.mean(dim=(2, 3)))
        if self.as_dict:
            return {"existence": ex, "heatmaps": hm}
        return hm, ex


def build() -> TinyHeatmapNet:
    """Factory for ``tiny_model:build``: deterministic weights so tests are reproducible."""
    torch.manual_seed(0)
    return TinyHeatmapNet()


def build_dict() -> TinyHeatmapNet:
    """Same net returning ``{"existence": ..., "heatmaps": ...}``: outputs must be matched by key."""
    torch.manual_seed(0)
    return TinyHeatmapNet(as_dict=True)


def build_with_spec() -> TinyHeatmapNet:
    """A model that carries its own spec, so no --spec file is needed."""
    m = build()
    m.spec = tiny_spec()  # type: ignore[assignment]
    return m


def not_a_model() -> str:
    return "not a module"


class BrokenNet(TinyHeatmapNet):
    """Fails inside forward, as a model with a shape bug would, to prove a failed export writes nothing."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        raise RuntimeError("boom: forward failed")

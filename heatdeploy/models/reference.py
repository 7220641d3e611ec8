"""The shipped reference model: a SimpleBaseline-style heatmap net with an existence head.

Backbone: strided residual conv stages to stride 32. Neck/head: three 4x4 deconvolutions back to
stride 4, then a 1x1 conv to K heatmaps. Existence head: global-average-pooled stride-32 features
-> K logits (a binary classifier per keypoint, trained with BCE). Plain (non-depthwise) convs,
about 0.8 GMAC (1.6 GFLOP) at 256x192, sized like real edge pose models so INT8 speed-ups are real.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from heatdeploy.models.skeleton import KEYPOINTS, SKELETON
from heatdeploy.refdata import reference_data
from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, InputSpec, ModelSpec

_WEIGHTS = "weights/reference.pt"  # WEIGHTS is looked up when read (__getattr__; heatdeploy/refdata.py)


def __getattr__(name: str) -> Path:
    if name == "WEIGHTS":
        return reference_data(_WEIGHTS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reference_spec() -> ModelSpec:
    return ModelSpec(
        name="heatdeploy-reference-pose",
        keypoints=KEYPOINTS,
        skeleton=SKELETON,
        input=InputSpec(name="image", layout="NCHW", height=256, width=192, color="RGB",
                        resize="letterbox"),
        heatmap=HeatmapSpec(name="heatmaps", layout="NCHW", stride=4, activation="probabilities",
                            align="center"),
        existence=ExistenceSpec(name="existence", per="keypoint", activation="logits", threshold=0.5),
        decoder=DecoderSpec(name="dark", sigma=2.0),
    ).validate()


def _cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _cbr(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idn = x if self.down is None else self.down(x)
        return self.relu(self.conv2(self.conv1(x)) + idn)


class ReferencePoseNet(nn.Module):
    """Heatmaps [N,K,H/4,W/4] and existence logits [N,K] from an NCHW RGB image."""

    def __init__(self, num_keypoints: int = len(KEYPOINTS),
                 widths: tuple[int, ...] = (32, 64, 128, 192, 256), deconv: int = 96) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = _cbr(3, w0, 2)                                          # /2
        self.layer1 = nn.Sequential(BasicBlock(w0, w1, 2))                 # /4
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2))                 # /8
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))  # /16
        self.layer4 = nn.Sequential(BasicBlock(w3, w4, 2))                 # /32
        layers: list[nn.Module] = []
        cin = w4
        for _ in range(3):
            layers += [nn.ConvTranspose2d(cin, deconv, 4, 2, 1, bias=False), nn.BatchNorm2d(deconv),
                       nn.ReLU(inplace=True)]
            cin = deconv
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(deconv, num_keypoints, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.existence = nn.Sequential(nn.Flatten(), nn.Linear(w4, 256), nn.ReLU(inplace=True),
                                       nn.Linear(256, num_keypoints))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.final(self.deconv(f)), self.existence(self.pool(f))


def count_macs(model: nn.Module, height: int = 256, width: int = 192) -> int:
    """Multiply-accumulates of Conv, ConvTranspose and Linear layers for one image."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.ConvTranspose2d):
            total += inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def load_reference(weights: str | Path | None = None) -> tuple[nn.Module, ModelSpec]:
    """The reference net with its shipped (or given) weights, in eval mode, and its spec."""
    path = Path(weights) if weights is not None else reference_data(_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference weights missing; run 'heatdeploy train-reference'")
    model = ReferencePoseNet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    return model.eval(), reference_spec()

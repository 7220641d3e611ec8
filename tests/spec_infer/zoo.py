"""Small random-weight ONNX models in the shapes real third-party keypoint models come in.

Each builder writes one ``.onnx`` (torch.onnx.export, TorchScript exporter, opset 17, dynamic batch) and
returns the facts ``infer_spec`` should recover, so tests compare guesses against the truth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

H, W = 64, 48


@dataclass(frozen=True)
class ZooModel:
    path: Path
    input_layout: str
    heatmap: str
    heatmap_layout: str
    stride: int
    k: int
    heatmap_activation: str
    existence: str | None = None
    existence_per: str | None = None
    existence_activation: str | None = None
    ignored: tuple[str, ...] = ()
    head: str = "heatmap"


def _backbone(out_ch: int, downs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    ch = 3
    for _ in range(downs):
        layers += [nn.Conv2d(ch, 8, 3, stride=2, padding=1), nn.ReLU()]
        ch = 8
    layers.append(nn.Conv2d(ch, out_ch, 1))
    return nn.Sequential(*layers)


class NchwHeatmaps(nn.Module):
    """(1) NCHW in, NCHW sigmoid heatmaps [N,K,h,w], no existence head."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.net = _backbone(k, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


class NhwcLandmarks(nn.Module):
    """(2) NHWC in; NHWC heatmap logits, flat (x,y,z,vis,presence) vector [N,K*5], instance presence [N,1]."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.net = _backbone(k, 2)
        self.flat = nn.Linear(k, k * 5)
        self.presence = nn.Linear(k, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hm = self.net(x.permute(0, 3, 1, 2))
        pooled = hm.mean(dim=(2, 3))
        return hm.permute(0, 2, 3, 1), self.flat(pooled), torch.sigmoid(self.presence(pooled))


class SharedNhwc(nn.Module):
    """(3) NCHW in; one NHWC tensor with K keypoint + 1 background + 2E PAF channels, per-keypoint [N,K,1] logits."""

    def __init__(self, k: int, edges: int) -> None:
        super().__init__()
        self.k = k
        self.net = _backbone(k + 1 + 2 * edges, 3)
        self.vis = nn.Linear(k + 1 + 2 * edges, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(self.net(x))
        return y.permute(0, 2, 3, 1), (self.vis(y.mean(dim=(2, 3))) - 1.0).unsqueeze(-1)  # clearly logits


class SimccHead(nn.Module):
    """(4) NCHW in; SimCC logits over x and y bins at split ratio 2 ([N,K,2W], [N,K,2H]), per-keypoint [N,K] logits."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.net = _backbone(k, 2)
        cells = (H // 4) * (W // 4)
        self.x = nn.Linear(cells, 2 * W)
        self.y = nn.Linear(cells, 2 * H)
        self.vis = nn.Linear(cells, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.net(x).flatten(2)  # [N,K,h*w]: one feature vector per keypoint, as RTMPose's GAU head sees
        return 4.0 * self.x(f), 4.0 * self.y(f), self.vis(f)[..., 0] + 2.0  # mostly present, clearly logits


class CentreHead(nn.Module):
    """(5) NCHW in; CenterNet-style multi-person head: centre logits [N,1,h,w], keypoint offsets [N,2K,h,w]
    (heatmap px) and keypoint heatmaps [N,K,h,w] (sigmoid) for snapping."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.net = _backbone(1 + 2 * k + k, 2)
        self.k = k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.net(x)
        k = self.k
        return 3.0 * y[:, :1], 2.0 * y[:, 1:1 + 2 * k], torch.sigmoid(y[:, 1 + 2 * k:])


def _export(model: nn.Module, example: torch.Tensor, path: Path, outputs: list[str]) -> Path:
    torch.manual_seed(0)
    model.eval()
    axes = {"image": {0: "N"}, **{n: {0: "N"} for n in outputs}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deliberate here
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def build_nchw(root: Path, k: int = 4) -> ZooModel:
    torch.manual_seed(1)
    p = _export(NchwHeatmaps(k), torch.randn(1, 3, H, W), root / "nchw.onnx", ["heatmaps"])
    return ZooModel(p, "NCHW", "heatmaps", "NCHW", 4, k, "probabilities")


def build_nhwc_landmarks(root: Path, k: int = 5) -> ZooModel:
    torch.manual_seed(2)
    p = _export(NhwcLandmarks(k), torch.randn(1, H, W, 3), root / "nhwc_landmarks.onnx",
                ["hm", "landmarks", "presence"])
    return ZooModel(p, "NHWC", "hm", "NHWC", 4, k, "logits", "presence", "instance", "probabilities",
                    head="landmarks")


def build_shared(root: Path, k: int = 4, edges: int = 3) -> ZooModel:
    torch.manual_seed(3)
    p = _export(SharedNhwc(k, edges), torch.randn(1, 3, H, W), root / "shared.onnx", ["net_output", "visibility"])
    return ZooModel(p, "NCHW", "net_output", "NHWC", 8, k, "probabilities", "visibility", "keypoint", "logits")


def build_simcc(root: Path, k: int = 4) -> ZooModel:
    torch.manual_seed(4)
    p = _export(SimccHead(k), torch.randn(1, 3, H, W), root / "simcc.onnx", ["simcc_x", "simcc_y", "vis"])
    return ZooModel(p, "NCHW", "", "", 4, k, "logits", "vis", "keypoint", "logits", head="simcc")


def build_centres(root: Path, k: int = 3) -> ZooModel:
    torch.manual_seed(5)
    p = _export(CentreHead(k), torch.randn(1, 3, H, W), root / "centres.onnx", ["center", "offsets", "kp_maps"])
    return ZooModel(p, "NCHW", "kp_maps", "NCHW", 4, k, "logits", head="centers")


def build_no_heatmap(root: Path) -> Path:
    """A classifier-shaped graph ([N,3] out) built with onnx.helper: nothing heatmap-like."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, H, W])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "cls", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = root / "classifier.onnx"
    onnx.save(model, str(path))
    return path


def strip_output_shapes(src: Path, dest: Path) -> Path:
    """Copy of ``src`` whose graph outputs carry only their element type (as some exporters write them)."""
    import onnx

    proto = onnx.load(str(src))
    for o in proto.graph.output:
        o.type.tensor_type.ClearField("shape")
    onnx.save(proto, str(dest))
    return dest

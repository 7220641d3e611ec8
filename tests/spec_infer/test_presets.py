"""``infer_spec(preset=...)``: a trainer family's input rules and convention, and OpenPose's PAF head found."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from heatdeploy.runtime.heads import decode_outputs
from heatdeploy.spec import OPENPOSE_COCO18_PARTS, TRT_POSE_PARTS, SpecError
from heatdeploy.spec_infer import infer_spec

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import zoo  # noqa: E402


class OpenPoseLike(nn.Module):
    """NCHW BGR in; one NHWC tensor: 18 part maps, background, 38 PAF channels (OpenPose / tf-pose)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = zoo._backbone(18 + 1 + 38, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)).permute(0, 2, 3, 1)


class OpenPoseSplit(nn.Module):
    """Parts and PAFs as two NCHW outputs (trt_pose style: cmap [N,18,h,w], paf [N,C,h,w])."""

    def __init__(self, pafs: int = 38) -> None:
        super().__init__()
        self.net = zoo._backbone(18 + pafs, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.net(x)
        return torch.sigmoid(y[:, :18]), torch.tanh(y[:, 18:])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    torch.manual_seed(7)
    return {
        "openpose": zoo._export(OpenPoseLike(), torch.randn(1, 3, zoo.H, zoo.W), root / "openpose.onnx",
                                ["net_output"]),
        "split": zoo._export(OpenPoseSplit(), torch.randn(1, 3, zoo.H, zoo.W), root / "split.onnx",
                             ["cmap", "paf"]),
        "trt_pose": zoo._export(OpenPoseSplit(42), torch.randn(1, 3, zoo.H, zoo.W), root / "trt_pose.onnx",
                                ["cmap", "paf"]),
        "mmpose": zoo.build_nchw(root, k=17).path,
        "mediapipe": zoo.build_nhwc_landmarks(root).path,
    }


def test_openpose_preset_finds_parts_and_pafs_in_one_tensor(built: dict[str, Path]) -> None:
    spec, notes = infer_spec(built["openpose"], preset="openpose")
    assert spec.keypoints == OPENPOSE_COCO18_PARTS
    assert spec.head == "paf" and spec.paf is not None and spec.heatmap is not None
    assert (spec.paf.name, spec.paf.layout, spec.paf.offset) == ("net_output", "NHWC", 19)
    assert spec.heatmap.channels == tuple(range(18))
    inp = spec.input
    assert (inp.color, inp.scale, inp.mean, inp.std, inp.pad_value) == ("BGR", 1 / 256, (0.5,), (1.0,), 128)
    assert spec.heatmap.align == "pixel-centre"
    assert any("PAFs: channels 19..56" in n for n in notes)
    # The proposal decodes the model's own output shape.
    out = np.random.default_rng(0).random((2, zoo.H // 8, zoo.W // 8, 57)).astype(np.float32)
    dec = decode_outputs(spec, {"net_output": out})
    assert dec.coords.shape == (2, spec.paf.max_people, 18, 2)


def test_openpose_preset_finds_a_separate_paf_output(built: dict[str, Path]) -> None:
    spec, _ = infer_spec(built["split"], preset="openpose")
    assert spec.paf is not None and (spec.paf.name, spec.paf.layout, spec.paf.offset) == ("paf", "NCHW", 0)
    assert spec.heatmap is not None and spec.heatmap.name == "cmap"


def test_trt_pose_preset(built: dict[str, Path]) -> None:
    spec, notes = infer_spec(built["trt_pose"], preset="trt_pose")
    assert spec.keypoints == TRT_POSE_PARTS and spec.head == "paf" and spec.paf is not None
    assert (spec.paf.name, spec.paf.preset, spec.paf.pool_kernel, spec.paf.samples) == ("paf", "trt_pose-coco18", 5, 7)
    assert (spec.input.color, spec.input.resize, spec.input.mean) == ("RGB", "stretch", (0.485, 0.456, 0.406))
    assert len(spec.skeleton) == 21 and any("trt_pose-coco18 limbs" in n for n in notes)


def test_mmpose_and_mediapipe_presets(built: dict[str, Path]) -> None:
    mm, notes = infer_spec(built["mmpose"], preset="mmpose")
    assert mm.heatmap is not None and mm.heatmap.align == "mmpose-msra" and mm.decoder.name == "quarter"
    assert (mm.input.color, mm.input.mean) == ("RGB", (0.485, 0.456, 0.406))
    assert not any("defaults kept" in n for n in notes)
    mp, _ = infer_spec(built["mediapipe"], preset="mediapipe")
    assert mp.heatmap is not None and mp.heatmap.align == "mediapipe" and mp.head == "landmarks"
    assert (mp.input.color, mp.input.scale, mp.input.mean, mp.input.std) == ("RGB", 1 / 255, (0.0,), (1.0,))


def test_unknown_preset_is_one_clear_error(built: dict[str, Path]) -> None:
    with pytest.raises(SpecError, match="--from: unknown preset 'detectron'; expected one of mmpose"):
        infer_spec(built["mmpose"], preset="detectron")


def test_cli_from_openpose_writes_a_paf_spec(built: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heatdeploy.cli import app
    from heatdeploy.spec import ModelSpec

    out = tmp_path / "spec.json"
    res = CliRunner().invoke(app, ["spec", "infer", str(built["openpose"]), "--from", "openpose", "--out", str(out)])
    assert res.exit_code == 0, res.output
    spec = ModelSpec.load(out)
    assert spec.head == "paf" and spec.input.color == "BGR"
    assert "--from openpose" in res.output
    res = CliRunner().invoke(app, ["spec", "infer", str(built["openpose"]), "--from", "caffe"])
    assert res.exit_code == 2 and "unknown preset 'caffe'" in res.output

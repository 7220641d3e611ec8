"""Test helpers: a tiny heatmap + existence ONNX model (3 convs + deconv + sigmoid head + pooled existence
head, 64x48) built with onnx.helper and seeded weights, and smooth random images, so calibration tests run
in about a second on two cores.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, InputSpec, ModelSpec

K = 3
H, W = 64, 48


def tiny_spec() -> ModelSpec:
    return ModelSpec(
        keypoints=("a", "b", "c"),
        input=InputSpec(name="image", height=H, width=W),
        heatmap=HeatmapSpec(name="heatmaps", stride=4, activation="probabilities"),
        existence=ExistenceSpec(name="existence", per="keypoint", activation="logits"),
        decoder=DecoderSpec(name="quarter"),
        name="tiny-calib",
    ).validate()


def build_tiny_model(path: Path, seed: int = 0, batch: int | str = "N") -> Path:
    """image [N,3,64,48] -> heatmaps [N,3,16,12] (sigmoid) and existence logits [N,3]."""
    rng = np.random.default_rng(seed)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = {
        "w1": he(8, 3, 3, 3), "b1": np.full(8, 0.05, np.float32),
        "w2": he(16, 8, 3, 3), "b2": np.full(16, 0.05, np.float32),
        "w3": he(16, 16, 3, 3), "b3": np.full(16, 0.05, np.float32),
        "w4": he(16, 8, 4, 4), "b4": np.full(8, 0.05, np.float32),
        "w5": he(K, 8, 1, 1), "b5": np.full(K, -1.0, np.float32),
        "w6": he(K, 16), "b6": np.zeros(K, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], "conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], "conv3", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("ConvTranspose", ["r3", "w4", "b4"], ["d1"], "deconv", strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d1"], ["rd"], "relu_d"),
        helper.make_node("Conv", ["rd", "w5", "b5"], ["logits"], "head_conv"),
        helper.make_node("Sigmoid", ["logits"], ["heatmaps"], "head_sigmoid"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pooled"], "pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "w6", "b6"], ["existence"], "exist_fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, H, W])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, K, H // 4, W // 4]),
         helper.make_tensor_value_info("existence", TensorProto.FLOAT, [batch, K])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_images(folder: Path, n: int, seed: int = 0, ext: str = ".png") -> list[Path]:
    """Smooth random colour images of assorted sizes (blobs on gradients), so activations vary."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(30, 70))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            img[..., c] = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(4, 20) ** 2))
        img += (rng.uniform(0, 60) * xx / w)[..., None]
        p = folder / f"img_{i:03d}{ext}"
        cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8))
        paths.append(p)
    return paths

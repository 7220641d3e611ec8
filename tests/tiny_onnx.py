"""A tiny heatmap + existence ONNX model (3 convs + deconv + sigmoid head + pooled existence head, 64x48),
built with onnx.helper from seeded weights, so calibration and OpenVINO tests run in seconds on two cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, InputSpec, ModelSpec

K = 3
H, W = 64, 48


def tiny_spec(name: str = "tiny") -> ModelSpec:
    return ModelSpec(
        keypoints=("a", "b", "c"),
        input=InputSpec(name="image", height=H, width=W),
        heatmap=HeatmapSpec(name="heatmaps", stride=4, activation="probabilities"),
        existence=ExistenceSpec(name="existence", per="keypoint", activation="logits"),
        decoder=DecoderSpec(name="quarter"),
        name=name,
    ).validate()


def build_tiny_onnx(path: Path, seed: int = 0, batch: int | str = "N", existence_hidden: int | None = None,
                    graph_name: str = "tiny") -> Path:
    """image [N,3,64,48] -> heatmaps [N,3,16,12] (sigmoid) and existence logits [N,3].

    The existence head is one Gemm ``exist_fc``, or with ``existence_hidden`` two (``exist_fc1`` -> Relu ->
    ``exist_fc2``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
    }
    node = helper.make_node
    nodes = [
        node("Conv", ["image", "w1", "b1"], ["c1"], "conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"], "relu1"),
        node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["r2"], "relu2"),
        node("Conv", ["r2", "w3", "b3"], ["c3"], "conv3", strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["c3"], ["r3"], "relu3"),
        node("ConvTranspose", ["r3", "w4", "b4"], ["d1"], "deconv", strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["d1"], ["rd"], "relu_d"),
        node("Conv", ["rd", "w5", "b5"], ["logits"], "head_conv"),
        node("Sigmoid", ["logits"], ["heatmaps"], "head_sigmoid"),
        node("GlobalAveragePool", ["r3"], ["pooled"], "pool"),
        node("Flatten", ["pooled"], ["flat"], "flatten"),
    ]
    if existence_hidden is None:
        inits |= {"w6": he(K, 16), "b6": np.zeros(K, np.float32)}
        nodes.append(node("Gemm", ["flat", "w6", "b6"], ["existence"], "exist_fc", transB=1))
    else:
        inits |= {"w6": he(existence_hidden, 16), "b6": np.zeros(existence_hidden, np.float32),
                  "w7": he(K, existence_hidden), "b7": np.zeros(K, np.float32)}
        nodes += [node("Gemm", ["flat", "w6", "b6"], ["fc1"], "exist_fc1", transB=1),
                  node("Relu", ["fc1"], ["rfc1"], "exist_relu"),
                  node("Gemm", ["rfc1", "w7", "b7"], ["existence"], "exist_fc2", transB=1)]
    graph = helper.make_graph(
        nodes, graph_name,
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

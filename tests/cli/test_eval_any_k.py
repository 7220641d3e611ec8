"""``heatdeploy eval`` on a 39-keypoint model (BlazePose's count) with the user's own labels: a labels.json
split and a COCO keypoints file (OKS AP beside PCK); without labels it refuses in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy.cli import app
from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, InputSpec, ModelSpec

onnx = pytest.importorskip("onnx")
runner = CliRunner()
K, H, W = 39, 64, 48
SIGMA = 0.05

ErrorLine = Callable[..., str]  # the cli_error_line fixture (tests/conftest.py)


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _build_k39(path: Path) -> Path:
    """image [N,3,64,48] -> heatmaps [N,39,16,12] (sigmoid), existence logits [N,39]; seeded weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((16, 3, 3, 3)) * 0.4, "w2": rng.standard_normal((K, 16, 3, 3)) * 0.3,
         "w3": rng.standard_normal((K, 16)) * 0.5}
    node = helper.make_node
    nodes = [node("Conv", ["image", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"]),
             node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Sigmoid", ["c2"], ["heatmaps"]),
             node("GlobalAveragePool", ["r1"], ["p"]), node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "w3"], ["existence"], transB=1)]
    graph = helper.make_graph(
        nodes, "k39", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, H, W])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", K, H // 4, W // 4]),
         helper.make_tensor_value_info("existence", TensorProto.FLOAT, ["N", K])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def k39(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A bundle of the 39-keypoint model and 4 images with 2 people (boxes) each."""
    root = tmp_path_factory.mktemp("k39")
    spec = ModelSpec(keypoints=tuple(f"lm{i}" for i in range(K)), input=InputSpec(name="image", height=H, width=W),
                     heatmap=HeatmapSpec(name="heatmaps", stride=4, activation="probabilities"),
                     existence=ExistenceSpec(name="existence", per="keypoint", activation="logits"),
                     decoder=DecoderSpec(name="quarter"), name="k39").validate()
    (root / "spec.json").write_text(spec.to_json())
    bundle = root / "bundle"
    res = _invoke("export", _build_k39(root / "k39.onnx"), "--spec", root / "spec.json", "--out", bundle)
    assert res.exit_code == 0, res.output
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    boxes = {}
    for i in range(4):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        boxes[i] = [(10.0 + 5 * i, 8.0, 60.0, 90.0), (85.0, 20.0 + 3 * i, 55.0, 80.0)]  # x, y, w, h
    return {"bundle": bundle, "images": images, "boxes": boxes, "root": root}


def _own_labels(k39: dict) -> list[np.ndarray]:
    """The model's own keypoints for each (image, box) crop, as the runtime computes them."""
    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(k39["bundle"])
    out = []
    for i, bxs in k39["boxes"].items():
        im = cv2.imread(str(k39["images"] / f"{i}.png"))
        xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in bxs])
        out.append(pipe.predict([im] * len(bxs), boxes=xyxy).keypoints)
    return out


def _write_coco(path: Path, k39: dict, kps: list[np.ndarray], sigmas: bool = True) -> Path:
    images, anns = [], []
    for i, bxs in k39["boxes"].items():
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 120, "width": 160})
        for j, (x, y, w, h) in enumerate(bxs):
            xyv = np.column_stack([kps[i][j], np.full(K, 2)])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": [x, y, w, h],
                         "area": w * h * 0.5, "num_keypoints": K, "keypoints": xyv.reshape(-1).tolist()})
    cat = {"id": 1, "name": "person", "keypoints": [f"lm{i}" for i in range(K)]}
    if sigmas:
        cat["sigmas"] = [SIGMA] * K
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path


def _eval(k39: dict, *args: object) -> dict:
    res = _invoke("eval", k39["bundle"], *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_coco_eval_on_39_keypoints_with_own_labels(k39: dict, tmp_path: Path) -> None:
    """Labels equal to the model's keypoints: AP 1 and PCK 1. Half the people moved 3 px: their OKS is what the
    rule gives for 3 px, so AP stays 1 at thresholds below it and drops to the unmoved half above it; PCK (3 px
    vs 0.05 of the 200 px diagonal) keeps them. Moved 12 px: PCK drops to the unmoved half too."""
    own = _own_labels(k39)
    exact = _eval(k39, "--data", _write_coco(tmp_path / "exact.json", k39, own), "--images", k39["images"])
    assert exact["oks_ap"] == pytest.approx(1.0) and exact["pck@0.05_visible"] == 1.0
    assert exact["persons"] == 8 and exact["keypoints_visible"] == 8 * K and exact["sigmas"] == "the file"

    def moved_by(dx: float) -> dict:
        moved = [kp.copy() for kp in own]
        for kp in moved:
            kp[0, :, 0] += dx  # the first person of each image: every keypoint dx px right
        return _eval(k39, "--data", _write_coco(tmp_path / f"moved{dx}.json", k39, moved), "--images", k39["images"])

    rep = moved_by(3.0)
    oks_moved = np.exp(-9.0 / (2 * 60.0 * 90.0 * 0.5 * (2 * SIGMA) ** 2))  # 0.846: every moved person's OKS
    per_t = np.array(rep["oks_ap_per_threshold"])
    low, high = per_t[np.linspace(0.5, 0.95, 10) < oks_moved], per_t[np.linspace(0.5, 0.95, 10) > oks_moved]
    assert len(low) == 7 and np.allclose(low, 1.0)
    # above it only the unmoved half matches: AP = precision 1 up to recall 1/2 at best (51/101 points), less
    # when the model's scores rank moved people first
    assert len(high) == 3 and np.all((high > 0.2) & (high <= 51 / 101 + 1e-9)) and np.ptp(high) == 0
    assert rep["oks_ap"] == pytest.approx((7 + 3 * high[0]) / 10)
    assert rep["pck@0.05_visible"] == 1.0 and rep["mean_error_px_visible"] == pytest.approx(1.5, abs=1e-3)
    far = moved_by(12.0)
    assert far["pck@0.05_visible"] == 0.5 and far["oks_ap"] < 0.51


def test_labelled_split_on_39_keypoints(k39: dict, tmp_path: Path) -> None:
    """heatdeploy's labels.json format with 39 keypoints: PCK against the user's labels (no 17-point default)."""
    from heatdeploy.runtime import Pipeline

    split = tmp_path / "split"
    split.mkdir()
    pipe = Pipeline.load(k39["bundle"])
    entries = []
    for i in range(4):
        im = cv2.imread(str(k39["images"] / f"{i}.png"))
        cv2.imwrite(str(split / f"{i}.png"), im)
        kp = pipe.predict([im]).keypoints[0]
        entries.append({"file": f"{i}.png", "height": 120, "width": 160, "keypoints": kp.tolist(),
                        "present": [1] * K, "visible": [1] * K})
    (split / "labels.json").write_text(json.dumps({"keypoints": list(pipe.spec.keypoints), "images": entries}))
    rep = _eval(k39, "--data", split)
    assert rep["pck@0.05_visible"] == 1.0 and rep["keypoints_visible"] == 4 * K and rep["images"] == 4


def test_eval_refuses_without_labels(cli_error_line: ErrorLine, k39: dict, tmp_path: Path) -> None:
    assert "--data" in cli_error_line("eval", k39["bundle"])  # the shipped split is not its truth
    line = cli_error_line("eval", k39["bundle"], "--data", k39["images"])  # images, no labels
    assert "no ground truth" in line and "COCO" in line
    own = _own_labels(k39)
    coco17 = json.loads(_write_coco(tmp_path / "c.json", k39, own).read_text())
    for a in coco17["annotations"]:
        a["keypoints"] = a["keypoints"][:17 * 3]
    coco17["categories"][0]["keypoints"] = coco17["categories"][0]["keypoints"][:17]
    del coco17["categories"][0]["sigmas"]
    (tmp_path / "c17.json").write_text(json.dumps(coco17))
    line = cli_error_line("eval", k39["bundle"], "--data", tmp_path / "c17.json", "--images", k39["images"])
    assert "17 keypoints, the model 39" in line


def test_coco_without_sigmas_reports_pck_and_says_why_no_ap(k39: dict, tmp_path: Path) -> None:
    path = _write_coco(tmp_path / "nos.json", k39, _own_labels(k39), sigmas=False)
    rep = _eval(k39, "--data", path, "--images", k39["images"])
    assert rep["pck@0.05_visible"] == 1.0 and "sigmas" in rep["oks_ap"]


def test_coco_eval_of_a_multi_person_paf_model(tmp_path: Path) -> None:
    """A bottom-up (PAF) model through ONNX Runtime: every person it finds is a detection. Labels = its three
    people: AP 1; a fourth labelled person it cannot find: precision 1 up to recall 3/4, so AP = 76/101 at every
    threshold; PCK is not claimed (people are matched by OKS only)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from onnx import TensorProto, helper, numpy_helper
    from test_paf import openpose_spec, openpose_tensor, three_people

    from heatdeploy.exporters.onnx import embed_spec
    from heatdeploy.runtime import Pipeline

    spec = openpose_spec()
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["rendered", "nothing"], ["net_output"])]
    graph = helper.make_graph(
        nodes, "paf", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 256, 256, 3])],
        [helper.make_tensor_value_info("net_output", TensorProto.FLOAT, ["N", 64, 64, 57])],
        [numpy_helper.from_array(openpose_tensor(three_people()).astype(np.float32), "rendered"),
         numpy_helper.from_array(np.zeros((1,), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    embed_spec(model, spec)
    path = tmp_path / "paf.onnx"
    onnx.save(model, str(path))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "0.png"), np.zeros((256, 256, 3), np.uint8))
    pred = Pipeline.load(path).predict([images / "0.png"])
    slots = np.flatnonzero(pred.instance_scores[0] > 0)
    assert len(slots) == 3
    k = spec.num_keypoints

    def write(extra: bool) -> Path:
        anns = []
        people = [(pred.keypoints[0, s], pred.present[0, s]) for s in slots]
        if extra:
            people.append((np.full((k, 2), 240.0) - np.arange(k)[:, None], np.ones(k, bool)))
        for kp, found in people:
            xy = np.where(found[:, None], np.nan_to_num(kp), 0.0)
            lo, hi = xy[found].min(0), xy[found].max(0)
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [*lo.tolist(), *(hi - lo).tolist()], "area": float(np.prod(hi - lo + 1)),
                         "num_keypoints": int(found.sum()),
                         "keypoints": np.column_stack([xy, 2 * found]).reshape(-1).tolist()})
        doc = {"images": [{"id": 1, "file_name": "0.png", "height": 256, "width": 256}], "annotations": anns,
               "categories": [{"id": 1, "name": "person", "keypoints": list(spec.keypoints), "sigmas": [0.05] * k}]}
        out = tmp_path / f"coco{int(extra)}.json"
        out.write_text(json.dumps(doc))
        return out

    res = _invoke("eval", path, "--data", write(False), "--images", images, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["oks_ap"] == pytest.approx(1.0) and rep["detections"] == 3 and rep["pck"].startswith("n/a")
    res = _invoke("eval", path, "--data", write(True), "--images", images, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["persons"] == 4 and np.allclose(rep["oks_ap_per_threshold"], 76 / 101, atol=1e-6)

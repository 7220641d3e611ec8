"""COCO keypoints: the reader, OKS against hand computations, AP on hand-built cases, and (when pycocotools is
installed) our AP against pycocotools' COCOeval on a small synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from heatdeploy.coco import COCO_SIGMAS, CocoError, Detections, oks, oks_ap, read_coco


def _write_set(root: Path, persons: list[list[dict]], k: int, sigmas: list[float] | None = None,
               size: tuple[int, int] = (120, 160)) -> Path:
    """A COCO file with one image per entry of ``persons``: each person {kp [K,3], bbox, area, crowd}."""
    root.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, people in enumerate(persons):
        cv2.imwrite(str(root / f"{i}.png"), np.zeros((*size, 3), np.uint8))
        images.append({"id": 100 + i, "file_name": f"{i}.png", "height": size[0], "width": size[1]})
        for p in people:
            kp = np.asarray(p["kp"], float)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 1, "iscrowd": int(p.get("crowd", 0)),
                         "keypoints": kp.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()),
                         "bbox": list(p["bbox"]), "area": float(p["area"])})
    cat: dict = {"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(k)], "skeleton": []}
    if sigmas is not None:
        cat["sigmas"] = sigmas
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path


def _person(xy: np.ndarray, flags: np.ndarray | None = None) -> dict:
    flags = np.full(len(xy), 2) if flags is None else flags
    lo, hi = xy.min(0), xy.max(0)
    w, h = hi - lo + 10
    return {"kp": np.column_stack([xy, flags]), "bbox": [*(lo - 5), w, h], "area": float(w * h * 0.6)}


def test_perfect_prediction_is_oks_1_and_ap_1(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    people = [[_person(rng.uniform(20, 100, (17, 2))) for _ in range(n)] for n in (1, 2, 3)]
    coco = read_coco(_write_set(tmp_path, people, 17))
    assert coco.sigma_source == "COCO's 17 defaults" and np.allclose(coco.sigmas, COCO_SIGMAS)
    o = oks(coco.keypoints, coco.keypoints, coco.flags, coco.areas, coco.boxes, coco.sigmas)
    assert np.allclose(np.diag(o), 1.0)
    det = Detections(coco.ann_image, coco.keypoints.copy(), np.linspace(1, 0.5, len(coco.ann_image)))
    r = oks_ap(coco, det)
    assert r["oks_ap"] == pytest.approx(1.0) and r["oks_ap50"] == 1.0 and r["oks_ap75"] == 1.0


def test_shifted_prediction_matches_hand_computation() -> None:
    gt = np.array([[[10.0, 10.0], [20.0, 30.0], [40.0, 5.0]]])
    flags = np.array([[2, 1, 0]])  # the third is not labelled: left out of the mean
    sigmas = np.array([0.1, 0.2, 0.3])
    det = gt + np.array([3.0, 4.0])  # every keypoint 5 px off
    area = 100.0
    got = oks(det, gt, flags, np.array([area]), np.array([[0.0, 0.0, 50.0, 40.0]]), sigmas)
    k2 = (2 * sigmas[:2]) ** 2
    want = np.mean(np.exp(-25.0 / (2 * area * k2)))
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(want, rel=1e-9)


def test_person_without_labels_scores_distance_outside_its_grown_box() -> None:
    box = np.array([[10.0, 20.0, 10.0, 10.0]])  # grown: x in [0, 30], y in [10, 40]
    det = np.array([[[5.0, 15.0], [33.0, 15.0]]])  # inside; 3 px right of the grown box
    got = oks(det, np.zeros((1, 2, 2)), np.zeros((1, 2), int), np.array([50.0]), box, np.array([0.5, 0.5]))
    want = (1.0 + np.exp(-9.0 / (2 * 50.0 * 1.0))) / 2
    assert got[0, 0] == pytest.approx(want, rel=1e-9)


def test_ap_ranks_a_confident_false_positive_first(tmp_path: Path) -> None:
    """Two persons, three detections: the most confident one is elsewhere. Precision 0/1, 1/2, 2/3 at recall
    0, .5, 1 -> made monotone it is 2/3 at every recall point, so AP = 2/3 at every threshold."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(20, 60, (17, 2)), rng.uniform(80, 120, (17, 2))
    coco = read_coco(_write_set(tmp_path, [[_person(a), _person(b)]], 17))
    kps = np.stack([a + 200.0, a, b])
    r = oks_ap(coco, Detections(np.zeros(3, int), kps, np.array([0.9, 0.8, 0.7])))
    assert r["oks_ap"] == pytest.approx(2 / 3) and r["persons"] == 2


def test_crowd_and_unlabelled_persons_are_ignored(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a, c = rng.uniform(20, 60, (17, 2)), rng.uniform(70, 110, (17, 2))
    crowd = _person(c) | {"crowd": 1}
    empty = _person(rng.uniform(0, 100, (17, 2)), np.zeros(17, int))
    coco = read_coco(_write_set(tmp_path, [[_person(a), crowd, empty]], 17))
    assert coco.ignore.tolist() == [False, True, True]
    # a detection on the crowd costs nothing; a missed crowd or unlabelled person neither
    r = oks_ap(coco, Detections(np.zeros(2, int), np.stack([c, a]), np.array([0.9, 0.8])))
    assert r["oks_ap"] == pytest.approx(1.0) and r["persons"] == 1


def test_reader_refusals(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = _write_set(tmp_path / "s", [[_person(rng.uniform(20, 60, (5, 2)))]], 5)
    with pytest.raises(CocoError, match="5 keypoints, the model 17"):
        read_coco(path, num_keypoints=17)
    with pytest.raises(CocoError, match="--images"):
        read_coco(path, tmp_path / "nowhere")
    coco = read_coco(path)
    assert coco.sigmas is None  # 5 keypoints and no sigmas in the file: no OKS, said so
    with pytest.raises(CocoError, match="sigmas"):
        oks_ap(coco, Detections(np.zeros(1, int), coco.keypoints, np.ones(1)))
    (tmp_path / "s" / "0.png").unlink()
    with pytest.raises(CocoError, match="not found"):
        read_coco(path)
    bad = tmp_path / "bad.json"
    bad.write_text("{\"images\": []}")
    with pytest.raises(CocoError, match="annotations"):
        read_coco(bad)


def _noisy_set(tmp_path: Path, k: int, seed: int) -> tuple[Path, list[dict]]:
    """Random persons per image (a crowd and an unlabelled one among them) and detections near / off them."""
    rng = np.random.default_rng(seed)
    persons, dets = [], []
    for i in range(8):
        people = []
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.uniform(10, 150, (k, 2))
            flags = rng.choice([0, 1, 2], k, p=[0.2, 0.3, 0.5])
            people.append(_person(xy, flags))
            noise = rng.normal(0, rng.uniform(0.5, 12), (k, 2))
            dets.append({"image_id": 100 + i, "kp": xy + noise, "score": float(rng.uniform(0.2, 1))})
        if i == 2:
            people.append(_person(rng.uniform(10, 150, (k, 2))) | {"crowd": 1})
        if i == 3:
            people.append(_person(rng.uniform(10, 150, (k, 2)), np.zeros(k, int)))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            dets.append({"image_id": 100 + i, "kp": rng.uniform(0, 160, (k, 2)), "score": float(rng.uniform(0, 1))})
        persons.append(people)
    sigmas = None if k == 17 else rng.uniform(0.03, 0.1, k).round(4).tolist()
    return _write_set(tmp_path, persons, k, sigmas), dets


@pytest.mark.parametrize(("k", "seed"), [(17, 0), (17, 1), (39, 2)])
def test_ap_matches_pycocotools(tmp_path: Path, k: int, seed: int) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path, dets = _noisy_set(tmp_path, k, seed)
    coco = read_coco(path)
    ids = {100 + i: i for i in range(len(coco.files))}
    ours = oks_ap(coco, Detections(np.array([ids[d["image_id"]] for d in dets]),
                                   np.stack([d["kp"] for d in dets]), np.array([d["score"] for d in dets])))

    gt = COCO()
    gt.dataset = json.loads(path.read_text())
    gt.createIndex()
    res = gt.loadRes([{"image_id": d["image_id"], "category_id": 1, "score": d["score"],
                       "keypoints": np.column_stack([d["kp"], np.ones(k)]).reshape(-1).tolist()} for d in dets])
    ev = COCOeval(gt, res, "keypoints")
    if coco.sigmas is not None:
        ev.params.kpt_oks_sigmas = coco.sigmas
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    theirs = ev.eval["precision"][:, :, 0, 0, -1].mean(axis=1)  # [T] AP per threshold, area all, 20 dets
    assert ours["persons"] > 3
    np.testing.assert_allclose(ours["oks_ap_per_threshold"], theirs, atol=1e-6)
    assert ours["oks_ap"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert ours["oks_ap50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert ours["oks_ap75"] == pytest.approx(ev.stats[2], abs=1e-6)
    assert 0.05 < ours["oks_ap"] < 0.95  # neither trivial end

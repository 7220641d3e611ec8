"""COCO keypoints: read a person-keypoints JSON (what MMPose and Ultralytics users have) and score detections
with COCO's OKS AP, so a user compares with the AP their trainer printed.

The maths follows the COCO keypoint evaluation as documented (cocodataset.org/#keypoints-eval) and as
pycocotools applies it; written here from that description:

- OKS between a detection and a labelled person = mean over the labelled keypoints (v > 0) of
  ``exp(-d^2 / (2 s^2 k^2))`` with ``s^2`` the person's area and ``k = 2 sigma``. A person with no labelled
  keypoint measures ``d`` as the distance outside its box enlarged by one box size each side.
- Crowd persons and persons with ``num_keypoints == 0`` are ignored: matching one costs nothing, missing one too.
- Per OKS threshold 0.50:0.05:0.95, detections (at most 20 per image, highest score first) are matched greedily
  to the unmatched person they overlap most; precision is made monotone in recall and read at 101 recall
  points; AP is the mean over the recall points, then over the thresholds.

Coordinates are taken as the file gives them (no half-pixel shift), as pycocotools and MMPose compare them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.datasets import DataError

# COCO's per-keypoint sigmas for its 17 person keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles), as the COCO keypoint evaluation defines them
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 20  # per image, as COCO's keypoint evaluation


class CocoError(DataError):
    """A COCO keypoints file that cannot be used; the message names the file and the fix."""


@dataclass
class CocoSet:
    """Images and their labelled persons (annotations), in the file's pixel coordinates."""

    source: str
    files: list[Path]  # [I] image files
    image_sizes: np.ndarray  # [I,2] (h, w)
    ann_image: np.ndarray  # [A] index into files
    keypoints: np.ndarray  # [A,K,2] (x, y)
    flags: np.ndarray  # [A,K] COCO visibility: 0 not labelled, 1 labelled but hidden, 2 visible
    boxes: np.ndarray  # [A,4] (x, y, w, h)
    areas: np.ndarray  # [A]
    crowd: np.ndarray  # [A] bool: iscrowd (a matched crowd stays available to other detections)
    ignore: np.ndarray  # [A] bool: crowd, or no labelled keypoint
    names: tuple[str, ...]  # keypoint names from the category ('' when the file has none)
    sigmas: np.ndarray | None  # [K], or None when neither the file nor COCO's 17 defaults apply
    sigma_source: str = ""

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[1])

    def boxes_xyxy(self, index: np.ndarray) -> np.ndarray:
        """The annotations' boxes as (x1, y1, x2, y2), what the runtime's top-down crop takes."""
        b = self.boxes[index].astype(np.float64)
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def read_coco(path: str | Path, images: str | Path | None = None, num_keypoints: int | None = None) -> CocoSet:
    """A COCO keypoints JSON; ``images`` is the folder ``file_name`` is relative to (default: the file's folder).

    One keypoint category is read (the first with keypoints); ``num_keypoints`` (the model's) must match it.
    """
    path = Path(path)
    root = Path(images) if images is not None else path.parent
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CocoError(f"{path}: not a readable JSON file ({exc}); pass a COCO keypoints file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise CocoError(f"{path}: no 'images' and 'annotations' lists; pass a COCO keypoints file "
                        "(person_keypoints_*.json layout)")
    if not root.is_dir():
        raise CocoError(f"{root}: the images folder does not exist; pass --images DIR (the folder the file's "
                        "file_name entries are relative to)")
    try:
        return _parse(doc, path, root, num_keypoints)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CocoError(f"{path}: malformed COCO keypoints entry ({type(exc).__name__}: {exc}); each image "
                        "needs id, file_name, height, width and each annotation image_id, keypoints [x,y,v]*K, "
                        "bbox [x,y,w,h]") from None


def _parse(doc: dict[str, Any], path: Path, root: Path, num_keypoints: int | None) -> CocoSet:
    cats = [c for c in doc.get("categories") or [] if c.get("keypoints")]
    cat = cats[0] if cats else None
    anns = [a for a in doc["annotations"] if cat is None or a.get("category_id", cat["id"]) == cat["id"]]
    anns = [a for a in anns if a.get("keypoints")]
    if not anns:
        raise CocoError(f"{path}: no annotation carries keypoints; pass a COCO keypoints file")
    k = len(anns[0]["keypoints"]) // 3
    if cat is not None and len(cat["keypoints"]) != k:
        raise CocoError(f"{path}: the category names {len(cat['keypoints'])} keypoints, the annotations carry "
                        f"{k}; fix the file")
    if num_keypoints is not None and k != num_keypoints:
        raise CocoError(f"{path}: the labels have {k} keypoints, the model {num_keypoints}; pass labels made "
                        "for this model")
    index = {img["id"]: i for i, img in enumerate(doc["images"])}
    files = [root / img["file_name"] for img in doc["images"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CocoError(f"{missing[0]}: image listed in {path.name} not found ({len(missing)} missing); pass "
                        "--images DIR, the folder its file_name entries are relative to")
    kp = np.array([a["keypoints"] for a in anns], np.float64)
    if kp.ndim != 2 or kp.shape[1] != 3 * k:
        raise CocoError(f"{path}: annotations carry different keypoint counts; every one needs 3*{k} numbers")
    kp = kp.reshape(len(anns), k, 3)
    flags = kp[..., 2].astype(np.int64)
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(len(anns), 4)
    areas = np.array([a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns], np.float64)
    num = np.array([a.get("num_keypoints", int((f > 0).sum())) for a, f in zip(anns, flags, strict=True)])
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns])
    names = tuple(cat["keypoints"]) if cat is not None else ("",) * k
    sigmas, where = _sigmas(doc, cat, k, path)
    return CocoSet(source=str(path), files=files,
                   image_sizes=np.array([[img["height"], img["width"]] for img in doc["images"]], np.int64),
                   ann_image=np.array([index[a["image_id"]] for a in anns], np.int64), keypoints=kp[..., :2],
                   flags=flags, boxes=boxes, areas=areas, crowd=crowd, ignore=crowd | (num == 0), names=names,
                   sigmas=sigmas, sigma_source=where)


def _sigmas(doc: dict[str, Any], cat: dict[str, Any] | None, k: int, path: Path) -> tuple[np.ndarray | None, str]:
    """Per-keypoint sigmas: the category's (or the file's) ``sigmas``, else COCO's when there are 17."""
    given = (cat or {}).get("sigmas", doc.get("sigmas"))
    if given is not None:
        s = np.asarray(given, np.float64)
        if s.shape != (k,) or not np.all(np.isfinite(s) & (s > 0)):
            raise CocoError(f"{path}: 'sigmas' must be {k} positive numbers (one per keypoint), got {s.shape}")
        return s, "the file"
    if k == len(COCO_SIGMAS):
        return COCO_SIGMAS.copy(), "COCO's 17 defaults"
    return None, ""


def oks(det: np.ndarray, gt: np.ndarray, flags: np.ndarray, areas: np.ndarray, boxes: np.ndarray,
        sigmas: np.ndarray) -> np.ndarray:
    """OKS of every detection [D,K,2] with every person [G,K,2] -> [D,G] (see the module docstring)."""
    det, gt = np.asarray(det, np.float64), np.asarray(gt, np.float64)
    var = (2 * np.asarray(sigmas, np.float64)) ** 2  # k^2
    labelled = np.asarray(flags) > 0  # [G,K]
    d = det[:, None] - gt[None]  # [D,G,K,2]
    # a person with no labelled keypoint: distance outside its box grown by one box size each side
    b = np.asarray(boxes, np.float64)
    lo, hi = b[:, :2] - b[:, 2:], b[:, :2] + 2 * b[:, 2:]  # [G,2]
    outside = np.maximum(lo[None, :, None] - det[:, None], 0) + np.maximum(det[:, None] - hi[None, :, None], 0)
    none = ~labelled.any(axis=1)  # [G]
    d = np.where(none[None, :, None, None], outside, d)
    e = (d ** 2).sum(-1) / var / (np.asarray(areas, np.float64)[None, :, None] + np.spacing(1)) / 2  # [D,G,K]
    use = np.where(none[:, None], True, labelled)[None]  # [1,G,K]
    return np.where(use, np.exp(-e), 0.0).sum(-1) / use.sum(-1)  # where: an unlabelled NaN stays out


def match(overlaps: np.ndarray, ignore: np.ndarray, crowd: np.ndarray,
          thresholds: np.ndarray = OKS_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of one image's detections (sorted by score) -> (matched, ignored), each [T,D].

    Each detection, best first, takes the unmatched non-ignored person it overlaps most at or above the
    threshold, else an ignored one (crowds may be taken again); one matched to an ignored person is ignored.
    Vectorised over thresholds; the loop over detections is the greedy order itself.
    """
    t, (n_det, n_gt) = len(thresholds), overlaps.shape
    matched = np.zeros((t, n_det), bool)
    ignored = np.zeros((t, n_det), bool)
    taken = np.zeros((t, n_gt), bool)
    limit = np.minimum(thresholds, 1 - 1e-10)[:, None]
    rows = np.arange(t)
    for i in range(n_det):
        ok = (overlaps[i][None] >= limit) & (~taken | crowd[None])  # [T,G]
        for pool in (~ignore, ignore):  # non-ignored persons first
            cand = np.where(ok & pool[None] & ~matched[:, i:i + 1], overlaps[i][None], -1.0)
            best = n_gt - 1 - np.argmax(cand[:, ::-1], axis=1)  # the last of equals, as pycocotools
            hit = (cand[rows, best] >= 0) & ~matched[:, i]
            matched[hit, i] = True
            ignored[hit, i] = ignore[best[hit]]
            taken[rows[hit], best[hit]] = True
    return matched, ignored


def average_precision(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, n_persons: int) -> np.ndarray:
    """AP per threshold [T] from all detections' scores [D] and match flags [T,D] (NaN without persons)."""
    if n_persons == 0:
        return np.full(matched.shape[0], np.nan)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    m, ig = matched[:, order], ignored[:, order]
    tp = np.cumsum(m & ~ig, axis=1, dtype=np.float64)
    fp = np.cumsum(~m & ~ig, axis=1, dtype=np.float64)
    recall = tp / n_persons
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone in recall
    ap = np.zeros(matched.shape[0])
    for j in range(matched.shape[0]):  # one pass per threshold (10)
        at = np.searchsorted(recall[j], RECALL_POINTS, side="left")
        valid = at < recall.shape[1]
        ap[j] = np.where(valid, precision[j][np.minimum(at, recall.shape[1] - 1)], 0.0).mean()
    return ap


@dataclass
class Detections:
    """Keypoint detections of a COCO set's images: which image, keypoints [D,K,2] and a score each."""

    image: np.ndarray  # [D] index into CocoSet.files
    keypoints: np.ndarray  # [D,K,2]
    scores: np.ndarray  # [D]


def oks_ap(coco: CocoSet, det: Detections, sigmas: np.ndarray | None = None) -> dict[str, Any]:
    """COCO keypoint AP, AP50, AP75 (and AP per threshold) of ``det`` against ``coco``'s persons."""
    sig = coco.sigmas if sigmas is None else np.asarray(sigmas, np.float64)
    if sig is None:
        raise CocoError(f"{coco.source}: no per-keypoint sigmas for {coco.num_keypoints} keypoints (COCO's "
                        "defaults are for 17); add 'sigmas' (one per keypoint) to the keypoint category")
    scores, matched, ignored = [], [], []
    n_persons = int((~coco.ignore).sum())
    for img in np.unique(np.concatenate([coco.ann_image, det.image])):  # images, not keypoints or items
        g = np.flatnonzero(coco.ann_image == img)
        g = g[np.argsort(coco.ignore[g], kind="stable")]  # non-ignored persons first
        d = np.flatnonzero(det.image == img)
        d = d[np.argsort(-det.scores[d], kind="mergesort")][:MAX_DETECTIONS]
        if not len(d):
            continue
        if len(g):
            o = oks(det.keypoints[d], coco.keypoints[g], coco.flags[g], coco.areas[g], coco.boxes[g], sig)
            m, ig = match(o, coco.ignore[g], coco.crowd[g])
        else:
            m = ig = np.zeros((len(OKS_THRESHOLDS), len(d)), bool)
        scores.append(det.scores[d])
        matched.append(m)
        ignored.append(ig)
    if not scores:
        ap = np.zeros(len(OKS_THRESHOLDS)) if n_persons else np.full(len(OKS_THRESHOLDS), np.nan)
    else:
        ap = average_precision(np.concatenate(scores), np.concatenate(matched, axis=1),
                               np.concatenate(ignored, axis=1), n_persons)
    return {"oks_ap": float(np.mean(ap)), "oks_ap50": float(ap[0]), "oks_ap75": float(ap[5]),
            "oks_ap_per_threshold": [round(float(a), 6) for a in ap], "persons": n_persons,
            "detections": int(len(det.scores)), "sigmas": coco.sigma_source if sigmas is None else "given"}


__all__ = ["COCO_SIGMAS", "CocoError", "CocoSet", "Detections", "MAX_DETECTIONS", "OKS_THRESHOLDS",
           "average_precision", "match", "oks", "oks_ap", "read_coco"]

"""Accuracy of a loaded pipeline against ground truth (PCK, existence accuracy; COCO OKS AP on a COCO file).

The data comes through :mod:`heatdeploy.datasets`, as parity's does: a labelled split, ``synthetic:N``, or
nothing for the shipped reference (its evaluation split). On any other model the shipped split is truth for
someone else's figures, so leaving the data out is an error asking for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy import make_callable
from heatdeploy.datasets import DataError, Dataset, is_reference, labelled_dataset, load_dataset
from heatdeploy.runtime.metrics import keypoint_report
from heatdeploy.runtime.pipeline import Pipeline, Prediction
from heatdeploy.runtime.sources import load_image
from heatdeploy.spec import ModelSpec


def eval_dataset(spec: ModelSpec, data: Dataset | Any | str | os.PathLike[str] | None) -> Dataset:
    """``data`` as a Dataset with ground truth; a read ``LabelledSet`` is taken as it is."""
    if isinstance(data, Dataset):
        if data.truth is None:
            raise DataError(f"{data.source}: no ground truth to evaluate against; pass a labelled split")
        return data
    if hasattr(data, "files") and hasattr(data, "keypoints"):  # models.evalset.LabelledSet
        from heatdeploy.models import evalset
        from heatdeploy.refdata import ReferenceDataMissing

        try:
            shipped = Path(data.root).resolve() == evalset.EVAL_DIR.resolve()
        except ReferenceDataMissing:  # the shipped split is not installed, so data is not it
            shipped = False
        if shipped and not is_reference(spec):
            raise DataError(f"model {spec.name!r} is not the shipped reference, so the shipped evaluation split "
                            "says nothing about it; pass --data: a labelled split (folder with labels.json)")
        return labelled_dataset(spec, data)
    return load_dataset(spec, data, require_truth=True)


def predict_dataset(pipe: Pipeline, data: Dataset, batch_size: int = 16,
                    advance: Callable[[int], None] | None = None) -> Prediction:
    """Predict every image of ``data`` in batches, reporting progress through ``advance``."""
    from heatdeploy.runtime.pipeline import _concat

    preds = []
    for start in range(0, len(data), batch_size):
        images = data.load(start, min(start + batch_size, len(data)))
        preds.append(pipe.predict(images, batch_size=batch_size))
        if advance is not None:
            advance(len(images))
    return _concat(preds)


def evaluate(pipe: Pipeline, data: Dataset | Any | str | os.PathLike[str] | None = None, batch_size: int = 16,
             alpha: float = 0.05, advance: Callable[[int], None] | None = None) -> tuple[Prediction, dict[str, Any]]:
    """Run the pipeline over the data and score it against its ground truth."""
    ds = eval_dataset(pipe.spec, data)
    assert ds.truth is not None
    pred = predict_dataset(pipe, ds, batch_size, advance)
    sizes = ds.truth_sizes if ds.truth_sizes is not None else pred.image_sizes
    if not np.array_equal(pred.image_sizes, sizes):
        raise DataError(f"{ds.source}: image sizes on disk differ from labels.json; regenerate the split")
    kps, present = pred.keypoints, pred.present
    if pred.instance_scores is not None:  # one labelled figure per image: score the best instance (slot 0)
        kps, present = kps[:, 0], present[:, 0]
    t = ds.truth
    report = keypoint_report(kps, present, t.keypoints, t.present, t.visible, sizes, alpha)
    report["images"] = len(ds)
    return pred, report


def evaluate_coco(pipe: Pipeline, coco: Any, batch_size: int = 16, alpha: float = 0.05,
                  advance: Callable[[int], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """COCO OKS AP (AP, AP50, AP75) beside PCK on a read :class:`heatdeploy.coco.CocoSet`.

    A single-instance model predicts one top-down crop per labelled person from its ground-truth box (as
    MMPose's ``use_gt_bbox`` evaluation), scored by its mean keypoint peak; a multi-instance model predicts
    whole images and each instance is a detection. PCK needs a prediction per person, so only the former has it.
    """
    from heatdeploy.coco import CocoError, Detections, oks_ap

    spec = pipe.spec
    if coco.num_keypoints != spec.num_keypoints:
        raise CocoError(f"{coco.source}: the labels have {coco.num_keypoints} keypoints, the model "
                        f"{spec.num_keypoints}; pass labels made for this model")
    report: dict[str, Any] = {}
    if spec.multi_instance:
        images = np.unique(coco.ann_image)
        preds = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            preds.append(pipe.predict([coco.files[i] for i in chunk], batch_size=batch_size))
            _check_sizes(coco, chunk, preds[-1].image_sizes)
            if advance is not None:
                advance(len(chunk))
        from heatdeploy.runtime.pipeline import _concat

        pred = _concat(preds)
        assert pred.instance_scores is not None
        slots = pred.present.any(axis=-1) & (pred.instance_scores > 0)  # [N,M] instances found
        det = Detections(images[np.nonzero(slots)[0]], pred.keypoints[slots], pred.instance_scores[slots])
        report["pck"] = "n/a: a multi-instance model's people are matched by OKS only"
    else:
        persons = np.flatnonzero(~coco.ignore)
        kps, scores, present = [], [], []
        for start in range(0, len(persons), batch_size):
            chunk = persons[start:start + batch_size]
            which = coco.ann_image[chunk]
            loaded = {int(i): load_image(coco.files[i]) for i in np.unique(which)}  # each image read once
            pred = pipe.predict([loaded[int(i)] for i in which], boxes=coco.boxes_xyxy(chunk), batch_size=batch_size)
            _check_sizes(coco, which, pred.image_sizes)
            kps.append(pred.keypoints)
            scores.append(pred.scores.mean(axis=1))
            present.append(pred.present)
            if advance is not None:
                advance(len(chunk))
        det = Detections(coco.ann_image[persons], np.concatenate(kps), np.concatenate(scores))
        flags = coco.flags[persons]
        report |= keypoint_report(det.keypoints, np.concatenate(present), coco.keypoints[persons], flags > 0,
                                  flags == 2, coco.image_sizes[coco.ann_image[persons]], alpha)
    if coco.sigmas is None:
        report["oks_ap"] = (f"n/a: no per-keypoint sigmas for {coco.num_keypoints} keypoints (COCO's defaults are "
                            "for 17); add 'sigmas' to the file's keypoint category")
    else:
        report |= oks_ap(coco, det)
    report["images"] = len(np.unique(coco.ann_image))
    return det, report


def _check_sizes(coco: Any, images: np.ndarray, sizes: np.ndarray) -> None:
    bad = np.flatnonzero((coco.image_sizes[images] != np.asarray(sizes)).any(axis=1))
    if len(bad):
        i = int(images[bad[0]])
        raise DataError(f"{coco.files[i]}: the image is {tuple(sizes[bad[0]])} (h, w) but {coco.source} says "
                        f"{tuple(coco.image_sizes[i])}; pass the images the file was made for")


# ``heatdeploy.evaluate`` is this module and the API call ``heatdeploy.evaluate(bundle, ...)`` alike.
make_callable(__name__)

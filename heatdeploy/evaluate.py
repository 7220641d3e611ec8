"""Accuracy of a loaded pipeline against a labelled split (PCK, existence accuracy)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heatdeploy import make_callable
from heatdeploy.models.evalset import LabelledSet
from heatdeploy.runtime.metrics import keypoint_report
from heatdeploy.runtime.pipeline import Pipeline, Prediction


def predict_files(pipe: Pipeline, files: list, batch_size: int = 16,
                  advance: Callable[[int], None] | None = None) -> Prediction:
    """Predict a list of image files in batches, reporting progress through ``advance``."""
    from heatdeploy.runtime.pipeline import _concat

    preds = []
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        preds.append(pipe.predict(chunk, batch_size=batch_size))
        if advance is not None:
            advance(len(chunk))
    return _concat(preds)


def evaluate(pipe: Pipeline, data: LabelledSet, batch_size: int = 16, alpha: float = 0.05,
             advance: Callable[[int], None] | None = None) -> tuple[Prediction, dict[str, float]]:
    """Run the pipeline over the split and score it against ground truth."""
    pred = predict_files(pipe, data.files, batch_size, advance)
    if not np.array_equal(pred.image_sizes, data.image_sizes):
        raise ValueError(f"{data.root}: image sizes on disk differ from labels.json; regenerate the split")
    kps, present = pred.keypoints, pred.present
    if pred.instance_scores is not None:  # one labelled figure per image: score the best instance (slot 0)
        kps, present = kps[:, 0], present[:, 0]
    report = keypoint_report(kps, present, data.keypoints, data.present, data.visible, data.image_sizes, alpha)
    report["images"] = len(data.files)
    return pred, report


# ``heatdeploy.evaluate`` is this module and the API call ``heatdeploy.evaluate(bundle, ...)`` alike.
make_callable(__name__)

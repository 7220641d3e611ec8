"""Accuracy of a loaded pipeline against ground truth (PCK, existence accuracy).

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
from heatdeploy.spec import ModelSpec


def eval_dataset(spec: ModelSpec, data: Dataset | Any | str | os.PathLike[str] | None) -> Dataset:
    """``data`` as a Dataset with ground truth; a read ``LabelledSet`` is taken as it is."""
    if isinstance(data, Dataset):
        if data.truth is None:
            raise DataError(f"{data.source}: no ground truth to evaluate against; pass a labelled split")
        return data
    if hasattr(data, "files") and hasattr(data, "keypoints"):  # models.evalset.LabelledSet
        from heatdeploy.models.evalset import EVAL_DIR

        if Path(data.root).resolve() == EVAL_DIR.resolve() and not is_reference(spec):
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


# ``heatdeploy.evaluate`` is this module and the API call ``heatdeploy.evaluate(bundle, ...)`` alike.
make_callable(__name__)

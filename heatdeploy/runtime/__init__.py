"""The torch-free runtime: numpy, OpenCV and one engine (imported only by its backend)."""

from heatdeploy.runtime.pipeline import Pipeline, Prediction

__all__ = ["Pipeline", "Prediction"]

"""heatdeploy: deploy heatmap keypoint models with existence heads to edge engines, with parity proof."""

__version__ = "0.1.0"

"""Heatmap codecs: refinement primitives and one encode/decode object per trainer's coordinate convention."""

from heatdeploy.runtime.codecs.conventions import (
    CODECS,
    HeatmapConvention,
    MediaPipeCodec,
    MMPoseMSRACodec,
    MMPoseUDPCodec,
    PixelCentreCodec,
    codec_from_spec,
    mmpose_blur_kernel,
    pixel_centre_blur_kernel,
)

__all__ = ["CODECS", "HeatmapConvention", "MMPoseMSRACodec", "MMPoseUDPCodec", "MediaPipeCodec", "PixelCentreCodec",
           "codec_from_spec", "mmpose_blur_kernel", "pixel_centre_blur_kernel"]

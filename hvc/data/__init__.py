"""Training data for HVC: coordinate-aware crops, video frames and static images.

* :mod:`hvc.data.crops`  -- random resized crops with their ``[x1, y1, x2, y2]`` boxes,
  ImageNet normalisation (deliberately not the reference's CIFAR-10 constants).
* :mod:`hvc.data.video`  -- YouTube-VOS layout, clips and the clips-per-video epoch.
* :mod:`hvc.data.images` -- COCO / PASCAL VOC / MSRA10k / any folders, shuffled every epoch;
  robust decoding and the two-view items shared with the video data.
* :mod:`hvc.data.sampler` -- the resumable, shardable :class:`EpochSampler` (order and crop seeds
  of every epoch) used by both.
"""
from ..tables import IMAGENET_MEAN, IMAGENET_STD
from .crops import RandomResizedCropCoord, box_to_coords, normalize_batch
from .images import (IMAGE_PRESETS, CorruptImageWarning, StaticImageDataset, TwoViewDataset, UnreadableImageError,
                     load_rgb)
from .sampler import EpochSampler
from .video import VideoEntry, VideoFrameDataset, load_video_index, read_index_csv, scan_video_folders

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "RandomResizedCropCoord", "box_to_coords", "normalize_batch",
    "IMAGE_PRESETS", "CorruptImageWarning", "EpochSampler", "StaticImageDataset", "TwoViewDataset",
    "UnreadableImageError", "load_rgb", "VideoEntry", "VideoFrameDataset", "load_video_index",
    "read_index_csv", "scan_video_folders",
]

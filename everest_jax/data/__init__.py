"""Input data: sources of clips and their preprocessing.

Modules: errors (why an example is bad), decode (PyAV frame reading with seeks), sources (list
files, TFDS, any random-access source), sampling (which frames), randaugment and augment (which
pixels), normalize (ImageNet normalisation), robust (replacing and counting bad examples), pipeline (the Grain wiring), synthetic
(procedural videos with masks).
"""

from everest_jax.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_video
from everest_jax.data.synthetic import SyntheticVideos
from everest_jax.data.errors import Reason, TooManyBadExamples, VideoError
from everest_jax.data.sampling import CandidateSampler, SegmentSampler, StrideSampler
from everest_jax.data.sources import TfdsVideoSource, VideoEntry, VideoListSource, parse_list_file, read_clip
from everest_jax.data.augment import EvalAugment, FinetuneAugment, NoAugment, PretrainAugment
from everest_jax.data.randaugment import RandAugment
from everest_jax.data.robust import BadExampleReport
from everest_jax.data.pipeline import build_dataset, clip_transforms, make_iterator, shard_indices

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "BadExampleReport", "CandidateSampler", "EvalAugment", "FinetuneAugment", "NoAugment", "PretrainAugment",
    "RandAugment", "Reason", "SegmentSampler", "StrideSampler", "SyntheticVideos", "TfdsVideoSource",
    "TooManyBadExamples", "VideoEntry", "VideoError", "VideoListSource", "build_dataset", "clip_transforms",
    "make_iterator", "normalize_video", "parse_list_file", "read_clip", "shard_indices",
]

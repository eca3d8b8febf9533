"""Input data: sources of clips and their preprocessing."""

from everest_jax.data.synthetic import SyntheticVideos, normalize_video

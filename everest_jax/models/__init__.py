"""Networks: the shared ViT block (`vit`) and the VideoMAE/EVEREST models (`videomae`)."""

from everest_jax.models.videomae import Classifier, PretrainingModel, TubeletEmbed, VideoEncoder
from everest_jax.models.vit import Block, Transformer, sincos_table, stack_blocks

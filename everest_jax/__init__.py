"""EVEREST in JAX: masked video pre-training and inference on the motion-rich tokens only."""

from everest_jax.config import ConfigError, ModelConfig

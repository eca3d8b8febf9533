"""VideoMAE / EVEREST networks: tubelet embedding, encoder, pre-training model, classifier.

Video is channels-last, (B, T, H, W, C), ImageNet-normalised. Parameter names follow the official
release (`encoder/patch_embed`, `encoder/block_{i}/attn/query`, `encoder_to_decoder`, `mask_token`,
`decoder/head`, `fc_norm`, `head`), so checkpoints map one to one (see `everest_jax.convert`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from everest_jax import selection
from everest_jax.config import ModelConfig
from everest_jax.models.vit import Transformer, layer_norm, logical, sincos_table, xavier


def gather_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
    """(B, N, D), (B, M) int -> (B, M, D)."""
    return jnp.take_along_axis(x, idx[:, :, None], axis=1)


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = (t, p, p), bias included. (B, T, H, W, C) -> (B, T', L, D)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, video):
        c = self.config
        t, p = c.tubelet_size, c.patch_size
        if video.shape[1:] != (c.num_frames, *c.image_size, c.in_channels):
            raise ValueError(f"video shape {video.shape} does not match the config's "
                             f"(B, {c.num_frames}, {c.image_size[0]}, {c.image_size[1]}, {c.in_channels})")
        x = nn.Conv(c.width, (t, p, p), strides=(t, p, p), padding="VALID", dtype=c.dtype, name="proj",
                    kernel_init=logical(xavier(), (None, None, None, None, "embed")),
                    bias_init=logical(nn.initializers.zeros, ("embed",)))(video.astype(c.dtype))
        b, steps, h, w, d = x.shape
        return x.reshape(b, steps, h * w, d)


class VideoEncoder(nn.Module):
    """Tubelet embedding plus the encoder stack over a chosen subset of tokens.

    `embed(video)` gives the (B, T', L, D) embeddings that token selection scores; `__call__`
    adds the sinusoidal position of each chosen token and runs the blocks on them only.
    """

    config: ModelConfig
    final_norm: bool = True

    def setup(self):
        c = self.config
        self.patch_embed = TubeletEmbed(c)
        self.transformer = Transformer(c.depth, c.num_heads, c.mlp_dim, c.norm_eps, c.drop_path,
                                       c.remat, c.scan, c.dtype, c.attention_impl)
        self.norm = layer_norm(c.norm_eps, c.dtype) if self.final_norm else None

    def embed(self, video):
        return self.patch_embed(video)

    def __call__(self, embeddings, token_idx, deterministic: bool = True):
        """Encode tokens `token_idx` (B, M) of `embeddings` (B, T', L, D) -> (B, M, D)."""
        c = self.config
        b = embeddings.shape[0]
        x = embeddings.reshape(b, -1, c.width)
        pos = jnp.asarray(sincos_table(c.num_tokens, c.width))
        x = gather_tokens(x, token_idx) + pos[token_idx].astype(x.dtype)
        x = self.transformer(x, deterministic)
        return self.norm(x) if self.norm is not None else x


class PretrainingModel(nn.Module):
    """Masked video autoencoder (VideoMAE architecture) that reconstructs only `target_idx` tokens.

    Call with explicit `visible_idx` (B, V) / `target_idx` (B, M) to reproduce a given mask, or
    without them to draw masks with `config.masking` (EVEREST needs the 'masking' rng; the
    baselines too). Returns `(pred, aux)`: pred (B, M, t*p*p*C) float32 predictions for the
    target tokens in `target_idx` order, aux {'visible_idx', 'target_idx', 'scores'}.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, video, visible_idx=None, target_idx=None, *, train: bool = False):
        c = self.config
        encoder = VideoEncoder(c, final_norm=True, name="encoder")
        embeddings = encoder.embed(video)  # (B, T', L, D)
        scores = selection.token_scores(video, embeddings, c)
        if visible_idx is None:
            visible_idx, target_idx = selection.pretrain_masks(self.make_rng("masking"), scores, c)
        x = encoder(embeddings, visible_idx, deterministic=not train)
        x = nn.Dense(c.decoder_width, use_bias=False, dtype=c.dtype, name="encoder_to_decoder",
                     kernel_init=logical(xavier(), ("embed", "decoder_embed")))(x)
        mask_token = self.param("mask_token", logical(nn.initializers.truncated_normal(0.02),
                                                      (None, None, "decoder_embed")), (1, 1, c.decoder_width))
        pos = jnp.asarray(sincos_table(c.num_tokens, c.decoder_width))
        x = jnp.concatenate([x + pos[visible_idx].astype(x.dtype),
                             (mask_token + pos[target_idx]).astype(x.dtype)], axis=1)
        x = Transformer(c.decoder_depth, c.decoder_heads, c.decoder_mlp_dim, c.norm_eps, 0.0,
                        c.remat, c.scan, c.dtype, c.attention_impl, name="decoder")(x, deterministic=not train)
        x = x[:, visible_idx.shape[1]:]
        x = layer_norm(c.head_norm_eps, c.dtype, "decoder_norm")(x)
        pred = nn.Dense(c.patch_dim, dtype=c.dtype, name="decoder_head",
                        kernel_init=logical(xavier(), ("decoder_embed", None)),
                        bias_init=logical(nn.initializers.zeros, (None,)))(x)
        aux = dict(visible_idx=visible_idx, target_idx=target_idx, scores=scores)
        return pred.astype(jnp.float32), aux


class Classifier(nn.Module):
    """Fine-tuning / inference network: encoder on the top release_count(rho, N) motion tokens, mean pool,
    fc_norm, dropout, linear head. rho = `config.finetune_keep_ratio` (1.0 = all tokens).

    `keep_idx` (B, K) overrides the selection. Returns `(logits (B, classes) float32, aux)` with
    aux {'keep_idx', 'scores'}.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, video, keep_idx=None, *, train: bool = False):
        c = self.config
        if c.num_classes <= 0:
            raise ValueError(f"model.num_classes={c.num_classes} must be positive for a classifier")
        encoder = VideoEncoder(c, final_norm=not c.use_mean_pooling, name="encoder")
        embeddings = encoder.embed(video)
        b = embeddings.shape[0]
        scores = None
        if keep_idx is None:
            if c.finetune_keep_count < c.num_tokens:
                scores = selection.token_scores(video, embeddings, c)
                keep_idx = selection.finetune_token_keep(scores, c.finetune_keep_ratio)
            else:
                keep_idx = jnp.broadcast_to(jnp.arange(c.num_tokens, dtype=jnp.int32), (b, c.num_tokens))
        x = encoder(embeddings, keep_idx, deterministic=not train)
        if c.use_mean_pooling:
            x = layer_norm(c.head_norm_eps, c.dtype, "fc_norm")(x.mean(axis=1))
        else:
            x = x[:, 0]
        x = nn.Dropout(c.head_dropout, deterministic=not train)(x)
        scale = c.head_init_scale
        logits = nn.Dense(c.num_classes, dtype=c.dtype, name="head",
                          kernel_init=logical(lambda *a: scale * nn.initializers.truncated_normal(0.02)(*a),
                                              ("embed", "classes")),
                          bias_init=logical(nn.initializers.zeros, ("classes",)))(x)
        return logits.astype(jnp.float32), dict(keep_idx=keep_idx, scores=scores)

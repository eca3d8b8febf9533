"""Numerical parity with Hugging Face `transformers` VideoMAE, an independent implementation.

Both networks are built from the same random weights (HF's, converted by `everest_jax.convert`),
fed the same video and the same token mask, and compared: decoder outputs, loss and logits.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from everest_jax import convert, selection  # noqa: E402
from everest_jax.models import Classifier, PretrainingModel  # noqa: E402
from everest_jax.targets import reconstruction_loss  # noqa: E402

ATOL = 1e-4

# Two shapes: a default-like one and one with a non-default frame count, tubelet and patch.
SHAPES = [
    dict(num_frames=8, tubelet_size=2, image_size=32, patch_size=8),
    dict(num_frames=6, tubelet_size=3, image_size=48, patch_size=16),
]


def hf_config(shape, **kw):
    return transformers.VideoMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
        decoder_intermediate_size=128, num_channels=3, qkv_bias=True, norm_pix_loss=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **shape, **kw)


def random_weights(model, seed):
    """HF initialises biases and LayerNorms to constants; randomise everything so parity is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("key.bias"):
                continue
            p.copy_(0.05 * torch.randn(p.shape, generator=g) + (1.0 if "layernorm" in name and "weight" in name else 0.0))
    return model.eval()


def video_pair(shape, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    t, s = shape["num_frames"], shape["image_size"]
    # Smooth moving content plus noise, ImageNet-normalised range.
    v = rng.normal(size=(batch, t, s, s, 3)).astype(np.float32)
    return v, torch.from_numpy(v.transpose(0, 1, 4, 2, 3).copy())  # ours (B,T,H,W,C); HF (B,T,C,H,W)


def ours_config(hf_dict, **overrides):
    return convert.hf_model_config(hf_dict, **overrides)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x32_t2_p8", "6x48_t3_p16"])
@pytest.mark.parametrize("masking", ["tube", "random"])
def test_pretraining_matches_hf(shape, masking):
    hf_cfg = hf_config(shape, use_mean_pooling=False)  # as HF's pre-training configs: encoder norm on
    hf = random_weights(transformers.VideoMAEForPreTraining(hf_cfg), seed=1)
    config = ours_config(hf_cfg.to_dict(), masking=masking)
    kind, params = convert.convert_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    assert kind == "pretrain"

    video, video_t = video_pair(shape)
    rng = jax.random.key(3)
    if masking == "tube":
        visible, target = selection.tube_mask(rng, 2, config.grid, 0.75)
    else:
        visible, target = selection.random_mask(rng, 2, config.num_tokens, 0.75)
    bool_masked = np.zeros((2, config.num_tokens), bool)
    np.put_along_axis(bool_masked, np.asarray(target), True, axis=1)

    with torch.no_grad():
        out = hf(video_t, bool_masked_pos=torch.from_numpy(bool_masked))
    pred, _ = PretrainingModel(config).apply({"params": params}, jnp.asarray(video), visible, target)
    loss = reconstruction_loss(pred, jnp.asarray(video), target, config.tubelet_size, config.patch_size)

    np.testing.assert_allclose(np.asarray(pred), out.logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(float(loss), out.loss.item(), atol=ATOL, rtol=1e-5)


def test_everest_visible_tokens_encode_as_hf():
    """EVEREST decodes only its K-V targets, which HF cannot (it reconstructs every masked token),
    so the EVEREST path is checked on the encoder: the motion-selected visible tokens encode
    exactly as HF's encoder encodes the same tokens."""
    shape = SHAPES[0]
    hf_cfg = hf_config(shape, use_mean_pooling=False)
    hf = random_weights(transformers.VideoMAEForPreTraining(hf_cfg), seed=2)
    config = ours_config(hf_cfg.to_dict(), masking="everest")
    _, params = convert.convert_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    video, video_t = video_pair(shape, seed=5)

    model = PretrainingModel(config)
    pred, aux = model.apply({"params": params}, jnp.asarray(video), rngs={"masking": jax.random.key(0)})
    visible = np.asarray(aux["visible_idx"])
    bool_masked = np.ones((2, config.num_tokens), bool)
    np.put_along_axis(bool_masked, visible, False, axis=1)
    with torch.no_grad():
        hf_enc = hf.videomae(video_t, bool_masked_pos=torch.from_numpy(bool_masked)).last_hidden_state

    from everest_jax.models import VideoEncoder

    def run_encoder(module, video, idx):
        return module(module.embed(video), idx)

    ours_enc = VideoEncoder(config, name="encoder").apply(
        {"params": params["encoder"]}, jnp.asarray(video), aux["visible_idx"], method=run_encoder)
    np.testing.assert_allclose(np.asarray(ours_enc), hf_enc.numpy(), atol=ATOL, rtol=0)
    assert pred.shape == (2, config.pretrain_counts[1], config.patch_dim)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x32_t2_p8", "6x48_t3_p16"])
def test_classifier_matches_hf(shape):
    hf_cfg = hf_config(shape, num_labels=5, use_mean_pooling=True)
    hf = random_weights(transformers.VideoMAEForVideoClassification(hf_cfg), seed=4)
    config = ours_config(hf_cfg.to_dict(), finetune_keep_ratio=1.0)
    kind, params = convert.convert_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    assert kind == "classifier" and config.num_classes == 5
    video, video_t = video_pair(shape, seed=7)
    with torch.no_grad():
        want = hf(video_t).logits.numpy()
    logits, _ = Classifier(config).apply({"params": params}, jnp.asarray(video))
    np.testing.assert_allclose(np.asarray(logits), want, atol=ATOL, rtol=0)


def test_token_dropping_classifier_matches_hf_on_the_same_tokens():
    """Fine-tune-time selection (rho=0.6): our classifier on its kept tokens equals HF's encoder
    run on the same tokens (given as bool_masked_pos), mean-pooled through HF's fc_norm + head."""
    shape = SHAPES[1]
    hf_cfg = hf_config(shape, num_labels=5, use_mean_pooling=True)
    hf = random_weights(transformers.VideoMAEForVideoClassification(hf_cfg), seed=6)
    config = ours_config(hf_cfg.to_dict(), finetune_keep_ratio=0.6)
    _, params = convert.convert_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    video, video_t = video_pair(shape, seed=8)
    logits, aux = Classifier(config).apply({"params": params}, jnp.asarray(video))
    keep = np.asarray(aux["keep_idx"])
    assert keep.shape == (2, config.finetune_keep_count)
    masked = np.ones((2, config.num_tokens), bool)
    np.put_along_axis(masked, keep, False, axis=1)
    with torch.no_grad():
        seq = hf.videomae(video_t, bool_masked_pos=torch.from_numpy(masked)).last_hidden_state
        want = hf.classifier(hf.fc_norm(seq.mean(1))).numpy()
    np.testing.assert_allclose(np.asarray(logits), want, atol=ATOL, rtol=0)


def test_classifier_without_mean_pooling_matches_hf():
    shape = SHAPES[0]
    hf_cfg = hf_config(shape, num_labels=3, use_mean_pooling=False)
    hf = random_weights(transformers.VideoMAEForVideoClassification(hf_cfg), seed=9)
    config = ours_config(hf_cfg.to_dict(), finetune_keep_ratio=1.0)
    _, params = convert.convert_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    assert "fc_norm" not in params and "norm" in params["encoder"]
    video, video_t = video_pair(shape, seed=10)
    with torch.no_grad():
        want = hf(video_t).logits.numpy()
    logits, _ = Classifier(config).apply({"params": params}, jnp.asarray(video))
    np.testing.assert_allclose(np.asarray(logits), want, atol=ATOL, rtol=0)


def test_scanned_layout_gives_the_same_outputs():
    shape = SHAPES[0]
    hf_cfg = hf_config(shape, num_labels=5, use_mean_pooling=True)
    hf = random_weights(transformers.VideoMAEForVideoClassification(hf_cfg), seed=11)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    config = ours_config(hf_cfg.to_dict(), finetune_keep_ratio=1.0)
    _, params = convert.convert_state_dict(sd, config)
    _, scanned = convert.convert_state_dict(sd, dataclasses.replace(config, scan=True))
    assert scanned["encoder"]["transformer"]["blocks"]["attn"]["query"]["kernel"].shape == (2, 64, 4, 16)
    video, _ = video_pair(shape, seed=12)
    a, _ = Classifier(config).apply({"params": params}, jnp.asarray(video))
    b, _ = Classifier(dataclasses.replace(config, scan=True)).apply({"params": scanned}, jnp.asarray(video))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)

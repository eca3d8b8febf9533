"""Checkpoint import: official .pth layouts, safetensors, the CLI, Orbax output, and refusals."""

import json
import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from everest_jax import checkpoint, convert  # noqa: E402
from everest_jax.models import Classifier, PretrainingModel  # noqa: E402
from test_hf_parity import hf_config, random_weights, video_pair  # noqa: E402

SHAPE = dict(num_frames=8, tubelet_size=2, image_size=32, patch_size=8)


def official_block(sd, src, dst):
    """HF layer -> official VideoMAE block keys (fused qkv, q_bias/v_bias), as the release names them."""
    a = src + "attention.attention."
    return {
        dst + "norm1.weight": sd[src + "layernorm_before.weight"], dst + "norm1.bias": sd[src + "layernorm_before.bias"],
        dst + "attn.qkv.weight": torch.cat([sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]]),
        dst + "attn.q_bias": sd[a + "query.bias"], dst + "attn.v_bias": sd[a + "value.bias"],
        dst + "attn.proj.weight": sd[src + "attention.output.dense.weight"],
        dst + "attn.proj.bias": sd[src + "attention.output.dense.bias"],
        dst + "norm2.weight": sd[src + "layernorm_after.weight"], dst + "norm2.bias": sd[src + "layernorm_after.bias"],
        dst + "mlp.fc1.weight": sd[src + "intermediate.dense.weight"], dst + "mlp.fc1.bias": sd[src + "intermediate.dense.bias"],
        dst + "mlp.fc2.weight": sd[src + "output.dense.weight"], dst + "mlp.fc2.bias": sd[src + "output.dense.bias"],
    }


def official_pretrain_state_dict(hf):
    sd = hf.state_dict()
    out = {"encoder.patch_embed.proj.weight": sd["videomae.embeddings.patch_embeddings.projection.weight"],
           "encoder.patch_embed.proj.bias": sd["videomae.embeddings.patch_embeddings.projection.bias"],
           "encoder.norm.weight": sd["videomae.layernorm.weight"], "encoder.norm.bias": sd["videomae.layernorm.bias"],
           "encoder_to_decoder.weight": sd["encoder_to_decoder.weight"], "mask_token": sd["mask_token"],
           "decoder.norm.weight": sd["decoder.norm.weight"], "decoder.norm.bias": sd["decoder.norm.bias"],
           "decoder.head.weight": sd["decoder.head.weight"], "decoder.head.bias": sd["decoder.head.bias"],
           "encoder.pos_embed": torch.zeros(1, 5, 5)}  # a fixed table some releases store: ignored
    for i in range(hf.config.num_hidden_layers):
        out.update(official_block(sd, f"videomae.encoder.layer.{i}.", f"encoder.blocks.{i}."))
    for i in range(hf.config.decoder_num_hidden_layers):
        out.update(official_block(sd, f"decoder.decoder_layers.{i}.", f"decoder.blocks.{i}."))
    return out


def official_finetune_state_dict(hf):
    sd = hf.state_dict()
    out = {"patch_embed.proj.weight": sd["videomae.embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["videomae.embeddings.patch_embeddings.projection.bias"],
           "fc_norm.weight": sd["fc_norm.weight"], "fc_norm.bias": sd["fc_norm.bias"],
           "head.weight": sd["classifier.weight"], "head.bias": sd["classifier.bias"]}
    for i in range(hf.config.num_hidden_layers):
        out.update(official_block(sd, f"videomae.encoder.layer.{i}.", f"blocks.{i}."))
    return out


@pytest.fixture(scope="module")
def hf_pretrain():
    return random_weights(transformers.VideoMAEForPreTraining(hf_config(SHAPE, use_mean_pooling=False)), seed=21)


@pytest.fixture(scope="module")
def hf_classifier():
    return random_weights(transformers.VideoMAEForVideoClassification(
        hf_config(SHAPE, num_labels=4, use_mean_pooling=True)), seed=22)


def cli(tmp_path, src, *flags):
    out = tmp_path / "converted"
    convert.main([str(src), str(out), "--num_frames", "8", "--image_size", "32", "--num_heads", "4",
                  "--decoder_heads", "2", *flags])
    return checkpoint.load_params(out)


def test_official_pretrain_pth_through_cli_matches_hf(tmp_path, hf_pretrain):
    src = tmp_path / "checkpoint.pth"
    torch.save({"model": official_pretrain_state_dict(hf_pretrain), "epoch": 799}, src)
    config, kind, params = cli(tmp_path, src, "--size", "tiny")
    assert kind == "pretrain"
    assert (config.width, config.depth, config.decoder_width, config.decoder_depth) == (64, 2, 32, 2)
    assert config.norm_eps == 1e-6  # the official release's eps, not HF's

    # The official file (eps 1e-6) and HF (eps 1e-12 / 1e-5) differ only in LayerNorm eps, so
    # compare against HF run with the official eps.
    for m in hf_pretrain.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6
    video, video_t = video_pair(SHAPE, seed=1)
    visible = np.tile(np.arange(0, 64, 4), (2, 1)).astype(np.int32)
    target = np.stack([np.setdiff1d(np.arange(64), v) for v in visible]).astype(np.int32)
    masked = np.ones((2, 64), bool)
    np.put_along_axis(masked, visible, False, axis=1)
    with torch.no_grad():
        want = hf_pretrain(video_t, bool_masked_pos=torch.from_numpy(masked)).logits.numpy()
    pred, _ = PretrainingModel(config).apply({"params": params}, jnp.asarray(video), visible, target)
    np.testing.assert_allclose(np.asarray(pred), want, atol=1e-4, rtol=0)


def test_official_finetune_pth_matches_hf(tmp_path, hf_classifier):
    src = tmp_path / "finetuned.pth"
    torch.save({"module": official_finetune_state_dict(hf_classifier)}, src)
    config, kind, params = cli(tmp_path, src, "--size", "tiny")
    assert kind == "classifier" and config.num_classes == 4 and config.use_mean_pooling
    for m in hf_classifier.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6
    video, video_t = video_pair(SHAPE, seed=2)
    with torch.no_grad():
        want = hf_classifier(video_t).logits.numpy()
    config = config.__class__(**{**config.to_dict(), "finetune_keep_ratio": 1.0})
    logits, _ = Classifier(config).apply({"params": params}, jnp.asarray(video))
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=0)


def test_hf_safetensors_with_config_json(tmp_path, hf_classifier):
    hf_classifier.save_pretrained(tmp_path / "hf")  # writes model.safetensors + config.json
    config, kind, params = cli(tmp_path, tmp_path / "hf" / "model.safetensors",
                               "--hf_config", str(tmp_path / "hf" / "config.json"))
    assert kind == "classifier" and config.norm_eps == hf_classifier.config.layer_norm_eps
    sd = hf_classifier.state_dict()
    np.testing.assert_array_equal(params["head"]["kernel"], sd["classifier.weight"].numpy().T)
    np.testing.assert_array_equal(params["encoder"]["patch_embed"]["proj"]["kernel"],
                                  sd["videomae.embeddings.patch_embeddings.projection.weight"].numpy().transpose(2, 3, 4, 1, 0))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/everest_convert_pwned",))


def test_pickled_code_is_never_executed(tmp_path):
    marker = "/tmp/everest_convert_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    src = tmp_path / "evil.pth"
    with open(src, "wb") as f:
        pickle.dump({"model": _Exploit()}, f)
    with pytest.raises(convert.ConvertError, match=r"refused to load.*weights-only loader: Unsupported.*nothing is unpickled") as err:
        convert.load_state_dict(src)
    assert not os.path.exists(marker) and "weights_only" not in str(err.value)  # no advice to unpickle


@pytest.mark.parametrize("payload, message", [
    ([1, 2, 3], "not a state dict"),
    ({"model": {"epoch": 3}}, "not a tensor"),
    ({}, "not a state dict"),
])
def test_not_a_state_dict(tmp_path, payload, message):
    src = tmp_path / "bad.pth"
    torch.save(payload, src)
    with pytest.raises(convert.ConvertError, match=message):
        convert.load_state_dict(src)


def test_truncated_and_missing_files(tmp_path, hf_classifier):
    src = tmp_path / "ok.pth"
    torch.save(official_finetune_state_dict(hf_classifier), src)
    (tmp_path / "cut.pth").write_bytes(src.read_bytes()[:500])
    with pytest.raises(convert.ConvertError, match="refused to load"):
        convert.load_state_dict(tmp_path / "cut.pth")
    with pytest.raises(convert.ConvertError, match="no such checkpoint"):
        convert.load_state_dict(tmp_path / "absent.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(convert.ConvertError, match="safetensors"):
        convert.load_state_dict(tmp_path / "junk.safetensors")


def test_layout_and_shape_errors(hf_classifier):
    sd = {k: v.numpy() for k, v in official_finetune_state_dict(hf_classifier).items()}
    config = convert.hf_model_config(hf_classifier.config.to_dict(), norm_eps=1e-6, head_norm_eps=1e-6)
    with pytest.raises(convert.ConvertError, match="unrecognised checkpoint layout"):
        convert.convert_state_dict({"foo.weight": np.zeros(3)}, config)
    with pytest.raises(convert.ConvertError, match="unexpected key"):
        convert.convert_state_dict({**sd, "blocks.0.attn.relative_bias": np.zeros(3)}, config)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(convert.ConvertError, match="missing key 'blocks.1.mlp.fc2.bias'"):
        convert.convert_state_dict(missing, config)
    wrong = config.__class__(**{**config.to_dict(), "patch_size": 16})
    with pytest.raises(convert.ConvertError, match="patch_embed"):
        convert.convert_state_dict(sd, wrong)


def test_saved_config_round_trips(tmp_path, hf_classifier):
    src = tmp_path / "m.pth"
    torch.save(official_finetune_state_dict(hf_classifier), src)
    config, _, _ = cli(tmp_path, src)
    meta = json.loads((tmp_path / "converted" / checkpoint.CONFIG_FILE).read_text())
    assert meta["kind"] == "classifier" and meta["model"]["num_classes"] == 4
    assert (config.size, config.width, config.depth, config.tubelet_size, config.patch_size) == ("tiny", 64, 2, 2, 8)

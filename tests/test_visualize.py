"""The visualisation command on a real clip: valid PNG/GIF/MP4 files whose shaded tokens are the
selection functions' output, recomputed here independently of the model code."""

import av
import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from everest_jax import checkpoint, selection, visualize
from everest_jax.config import ModelConfig
from everest_jax.data import normalize_video
from everest_jax.models import PretrainingModel

CONFIG = ModelConfig(size="tiny", num_frames=8, image_size=64, patch_size=8)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Run the command on bikes.mp4 with a (randomly initialised) pre-training checkpoint."""
    from tests.conftest import sample_video_path

    tmp = tmp_path_factory.mktemp("vis")
    video = np.zeros((1, 8, 64, 64, 3), np.float32)
    params = PretrainingModel(CONFIG).init({"params": jax.random.key(3), "masking": jax.random.key(3)}, video)["params"]
    params = jax.tree.map(np.asarray, nn.unbox(params))
    checkpoint.save_params(tmp / "ckpt", params, CONFIG, "pretrain")
    path = sample_video_path("bikes.mp4")
    assert visualize.main([str(path), "--out", str(tmp / "out"), "--checkpoint", str(tmp / "ckpt"), "--stride", "6"]) == 0
    clip = visualize.load_clip(path, 8, 6, (64, 64))
    return tmp / "out", clip, params


def independent_scores(clip, params):
    """Motion scores from the checkpoint's patch-embedding kernel applied by hand (NumPy)."""
    kernel = params["encoder"]["patch_embed"]["proj"]["kernel"]  # (t, p, p, C, D)
    bias = params["encoder"]["patch_embed"]["proj"]["bias"]
    x = normalize_video(clip).reshape(4, 2, 8, 8, 8, 8, 3).transpose(0, 2, 4, 1, 3, 5, 6)  # (T',H',W',t,p,p,C)
    emb = x.reshape(4, 64, -1) @ kernel.reshape(-1, kernel.shape[-1]) + bias  # (T', L, D)
    d = np.sqrt(((emb[1:] - emb[:-1]) ** 2).sum(-1))
    return np.concatenate([d[:1], d]).reshape(-1)


def test_token_states_are_the_selection_of_the_clip(outputs):
    out, clip, params = outputs
    tokens = np.load(out / "tokens.npz")
    scores = independent_scores(clip, params)
    np.testing.assert_allclose(tokens["scores"].reshape(-1), scores, rtol=1e-4, atol=1e-4)
    states = tokens["states"].reshape(-1)
    v, m = CONFIG.pretrain_counts
    assert (states == visualize.VISIBLE).sum() == v and (states == visualize.TARGET).sum() == m
    top_k = set(np.argsort(-scores, kind="stable")[:v + m].tolist())
    assert set(np.flatnonzero(states != visualize.DROPPED).tolist()) == top_k  # kept = top-K, split in two
    keep = np.asarray(selection.finetune_token_keep(scores[None], CONFIG.finetune_keep_ratio))[0]
    assert set(np.flatnonzero(tokens["keep"].reshape(-1)).tolist()) == set(keep.tolist())


def test_gif_and_mp4_shade_exactly_those_tokens(outputs):
    out, clip, _ = outputs
    states = np.load(out / "tokens.npz")["states"]
    gif = Image.open(out / "selection.gif")
    assert gif.n_frames == 8 and gif.size == (64, 64)
    x = clip.astype(np.float32)
    hypotheses = {visualize.DROPPED: x * visualize.DIM,
                  **{s: (1 - visualize.ALPHA) * x + visualize.ALPHA * np.asarray(c, np.float32)
                     for s, c in visualize.COLOURS.items()}}
    for f in range(8):
        gif.seek(f)
        frame = np.asarray(gif.convert("RGB"), np.float32)
        for i in range(8):
            for j in range(8):
                cell = np.s_[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8]
                err = {s: np.abs(frame[cell] - h[f][cell]).mean() for s, h in hypotheses.items()}
                assert min(err, key=err.get) == states[f // 2, i, j], (f, i, j, err)
    with av.open(str(out / "selection.mp4")) as container:
        frames = [fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)


def test_pngs_are_written_and_bad_input_is_one_line(outputs, tmp_path, capsys):
    out, _, _ = outputs
    for name in ("selection.png", "reconstruction.png"):
        with Image.open(out / name) as image:
            image.verify()
        assert Image.open(out / name).format == "PNG"
    assert visualize.main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.mp4" in err[0]
    assert not (tmp_path / "o").exists()

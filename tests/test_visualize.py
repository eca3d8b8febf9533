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
from stmg_jax import checkpoint as stmg_checkpoint
from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.generator import init_generators
from stmg_jax.model import SegNet
from stmg_jax.stream_eval import load_video, to_uint8
from stmg_jax.testing import random_net_variables

CONFIG = ModelConfig(size="tiny", num_frames=8, image_size=64, patch_size=8)
STMG_NET = SegNetConfig(num_classes=5, widths=(16, 32, 64, 128), decoder_width=32)
STMG_STREAM = StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 1)), key_every=8)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Run the command on bikes.mp4 with a (randomly initialised) pre-training checkpoint."""
    from tests.conftest import sample_video_path

    tmp = tmp_path_factory.mktemp("vis")
    video = np.zeros((1, 8, 64, 64, 3), np.float32)
    params = PretrainingModel(CONFIG).init({"params": jax.random.key(3), "masking": jax.random.key(3)}, video)["params"]
    params = jax.tree.map(np.asarray, nn.unbox(params))
    checkpoint.save_params(tmp / "ckpt", params, CONFIG, "pretrain")
    stmg = {"net": random_net_variables(STMG_NET, (64, 64), seed=1),
            "gen": init_generators(jax.random.key(1), STMG_NET, STMG_STREAM)}
    stmg_checkpoint.save_params(tmp / "stmg", stmg, STMG_NET, STMG_STREAM)
    path = sample_video_path("bikes.mp4")
    assert visualize.main([str(path), "--out", str(tmp / "out"), "--checkpoint", str(tmp / "ckpt"), "--stride", "6",
                           "--stmg-checkpoint", str(tmp / "stmg"), "--stmg-size", "64", "64",
                           "--stmg-frames", "12"]) == 0
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
    assert len(err) == 1 and err[0].startswith("video error:") and "missing.mp4" in err[0]
    assert not (tmp_path / "o").exists()


def test_stmg_overlay_shows_the_streamed_segmentation_and_recompute_map(outputs):
    """The GIF's left half is the segmentation and its right half the recompute map of stmg.npz,
    read back from the pixels; the key frame (frame 0) recomputes everything and equals the dense
    network; later frames of the moving clip recompute some regions and reuse others."""
    out, _, _ = outputs
    from tests.conftest import sample_video_path

    saved = np.load(out / "stmg.npz")
    pred, recompute = saved["pred"], saved["recompute"]
    assert pred.shape == (12, 64, 64) and recompute.shape == (12, 64, 64)
    frames = load_video(sample_video_path("bikes.mp4"), (64, 64), 12)
    net_vars = stmg_checkpoint.load_params(out.parent / "stmg")[2]["net"]
    dense0 = np.asarray(SegNet(STMG_NET).apply(net_vars, frames[:1]))[0].argmax(-1)
    np.testing.assert_array_equal(pred[0], dense0)
    assert np.all(recompute[0] == 1.0)
    later = recompute[1:8]  # frames 1..7: no key frame
    assert 0.0 < later.mean() < 1.0, later.mean()

    video = to_uint8(frames).astype(np.float32)
    gif = Image.open(out / "stmg_overlay.gif")
    assert gif.n_frames == 12 and gif.size == (128, 64)
    for f in range(12):
        gif.seek(f)
        right = np.asarray(gif.convert("RGB"), np.float32)[:, 64:]
        # green channel: f_G * (0.35 + 0.65 r) * 0.6 -> r, on pixels bright enough to read it from
        bright = video[f, ..., 1] > 60
        r = (right[..., 1] / (0.6 * np.maximum(video[f, ..., 1], 1)) - 0.35) / 0.65
        assert np.abs(r - recompute[f])[bright].mean() < 0.08, f
    for name in ("stmg_overlay.png",):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    with av.open(str(out / "stmg_overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12

"""Information-intensive frame selection end to end: config, pipeline, the jitted pre-training step
(sharded), and the pairs it chooses on a real clip."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sample_video_path

from configs import quickstart
from everest_jax import inputs, objectives, selection, sharding, train, trainer
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.data import decode, sampling
from everest_jax.models import TubeletEmbed
from everest_jax.targets import reconstruction_loss


def candidate_config(num_frames=8, tubelet=2, alpha=1.5, masking="everest"):
    c = quickstart.get_config(f"masking={masking}")
    c.model.update(num_frames=num_frames, tubelet_size=tubelet)
    c.data.update(sampling="candidate", candidate_alpha=alpha, num_examples=64)
    c.batch_size, c.total_steps, c.warmup_steps = 8, 10, 0
    c.mesh.update(data=2, fsdp=2, num_devices=4)
    return c


@pytest.mark.parametrize("num_frames, tubelet, alpha, candidates, masking",
                         [(8, 2, 1.5, 12, "everest"), (8, 4, 2.0, 16, "tube")])
def test_train_step_chooses_the_pairs_the_selection_functions_choose(num_frames, tubelet, alpha, candidates,
                                                                     masking):
    """Documented: frame selection is independent of the masking; VideoMAE's tube masking can use
    it too (the pairs are chosen by EVEREST's token scores, then the tube mask is drawn)."""
    config = candidate_config(num_frames, tubelet, alpha, masking)
    model_config = train.validate(config)
    assert inputs.clip_frames(config, model_config) == candidates
    mesh = sharding.make_mesh(config.mesh.to_dict())
    task, spec = train.PretrainTask(config, model_config), train.run_spec(config)
    parts = trainer.setup(spec, task, mesh)  # the real step of `python -m everest_jax.main`
    state, step, model = parts.fresh_state(task, mesh, spec.rules), parts.train_step, task.model

    local = next(inputs.train_iterator(config, model_config, config.batch_size, 0, 1))
    assert local["video"].shape == (8, candidates, 32, 32, 3)  # the pipeline delivers 2*alpha*tau frames
    params = jax.device_get(state.params)
    batch = sharding.global_batch({k: local[k] for k in ("video", "label")}, mesh, config.batch_size)
    _, metrics = step(state, batch)
    chosen = np.asarray(metrics["frame_pairs"])

    # By hand: the step's rng, the first split for frames, the selection functions.
    rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    frame_rng, rng = jax.random.split(rng)
    video = jnp.asarray(local["video"])
    cand = dataclasses.replace(model_config, num_frames=candidates)
    emb = TubeletEmbed(cand).apply({"params": params["encoder"]["patch_embed"]}, video)
    pair_scores = selection.frame_pair_scores(selection.motion_scores(emb), candidates // tubelet, 0.3)
    want = np.asarray(selection.sample_frame_pairs(frame_rng, pair_scores, num_frames // tubelet))
    np.testing.assert_array_equal(chosen, want)
    assert chosen.shape == (8, num_frames // tubelet) and np.all(np.diff(chosen, axis=1) > 0)
    # ... and EVEREST ran on exactly those frames: the step's loss is the loss of the gathered clip.
    clip = selection.gather_frame_pairs(video, jnp.asarray(want), tubelet)
    np.testing.assert_array_equal(clip[:, :tubelet], video[np.arange(8)[:, None], want[:, :1] * tubelet
                                                            + np.arange(tubelet)])
    # On the step's mesh (a near-tie in the token ranking may break otherwise on another layout).
    mask_rng, dropout_rng = jax.random.split(rng)

    def hand_loss(p, x):
        pred, aux = model.apply({"params": p}, x, train=True, rngs={"masking": mask_rng, "dropout": dropout_rng})
        return reconstruction_loss(pred, x, aux["target_idx"], tubelet, model_config.patch_size), aux

    with jax.set_mesh(mesh), nn.logical_axis_rules(spec.rules):
        loss, aux = jax.jit(hand_loss)(jax.device_put(params, parts.shardings.params),
                                       jax.device_put(clip, sharding.batch_sharding(mesh, 5)))
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    assert aux["visible_idx"].shape == (8, model_config.pretrain_counts[0])  # the masking's own counts


def test_frame_selection_prefers_the_moving_pairs_of_a_real_clip():
    """bikes.mp4 (250 frames, camera moving at a varying pace): 24 candidate frames (16 frames,
    alpha 1.5) spread over the whole video; over many draws the 8 chosen pairs change more than
    the candidate pairs on average, and the most-changing quarter is chosen above chance."""
    frames = decode.decode_all(sample_video_path("bikes.mp4"))
    sampler = sampling.CandidateSampler(16, 1.5, 2, train=False)
    clip = frames[sampler(len(frames))[0]][:, 8:264:4, 192:448:4].astype(np.float32) / 255.0  # (24, 64, 64, 3)
    config = ModelConfig(size="tiny", num_frames=16, image_size=64, patch_size=16)
    params = nn.unbox(TubeletEmbed(dataclasses.replace(config, num_frames=24)).init(
        jax.random.key(0), jnp.zeros((1, 24, 64, 64, 3))))["params"]
    video = jnp.asarray((clip - 0.45) / 0.225)[None]

    draws = 400
    pick = jax.jit(jax.vmap(lambda r: objectives.select_frames({"encoder": {"patch_embed": params}}, config,
                                                               video, r)[1][0]))
    chosen = np.asarray(pick(jax.random.split(jax.random.key(0), draws)))  # (draws, 8)
    # Independent measure: each pair's mean |pixel change| from the previous pair (pair 0: pair 1's).
    pairs = clip.reshape(12, -1)
    change = np.abs(pairs[1:] - pairs[:-1]).mean(-1)
    change = np.concatenate([change[:1], change])
    rate = np.bincount(chosen.ravel(), minlength=12) / draws  # how often each pair is chosen
    chance = 8 / 12
    assert change[chosen].mean() > 1.1 * change.mean()
    top, bottom = np.argsort(-change)[:3], np.argsort(change)[:3]
    assert rate[top].mean() > chance > rate[bottom].mean(), (rate, change)


@pytest.mark.parametrize("job", ["finetune", "evaluate"])
def test_frame_selection_is_refused_outside_pretraining(job, tmp_path):
    config = quickstart.get_config(f"job={job}")
    config.data.sampling = "candidate"
    config.init_from = str(tmp_path)
    with pytest.raises(ConfigError, match="data.sampling='candidate'.*pre-training"):
        train.validate(config)


@pytest.mark.parametrize("alpha", [0.5, 1.3])
def test_bad_candidate_alpha_is_refused(alpha):
    config = candidate_config(alpha=alpha)
    with pytest.raises(ConfigError, match="data.candidate_alpha"):
        train.validate(config)


def test_long_video_config_pretrains_from_video_files(tmp_path):
    """configs/long_videos.py (local=1) on encoded clips: 12 candidate frames per video, decoded
    through the Grain pipeline, 2 sharded steps, parameters written."""
    from configs import long_videos
    from everest_jax.data import SyntheticVideos, encode

    videos = SyntheticVideos(num_examples=4, num_frames=30, image_size=(64, 80), seed=1)
    lines = []
    for i in range(len(videos)):
        encode.write_video(tmp_path / f"v{i}.mp4", videos[i]["video"], gop=5)
        lines.append(f"v{i}.mp4 0\n")
    (tmp_path / "train.txt").write_text("".join(lines))
    full = long_videos.get_config("size=B,videos=9600,epochs=100")
    assert (full.data.sampling, full.data.candidate_alpha, full.model.masking) == ("candidate", 1.5, "everest")
    assert full.total_steps == 100 * (9600 // 256) and full.warmup_steps == 40 * (9600 // 256)
    config = long_videos.get_config("local=1,batch=4")
    config.data.update(root=str(tmp_path), train_list=str(tmp_path / "train.txt"))
    config.update(total_steps=2, warmup_steps=0, log_every=1)
    config.mesh.update(data=2, fsdp=2, num_devices=4)
    config.checkpoint.async_save = False
    model_config = train.validate(config)
    assert inputs.clip_frames(config, model_config) == 12
    final = train.run(config, str(tmp_path / "run"))
    assert final["step"] == 2 and np.isfinite(final["loss"]) and final["bad_videos"] == 0

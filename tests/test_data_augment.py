"""Spatial augmentation: one set of parameters per clip, output sizes, test crop positions."""

import numpy as np
import pytest

from everest_jax.data import (EvalAugment, FinetuneAugment, NoAugment, PretrainAugment, RandAugment,
                              normalize_video)
from everest_jax.data import augment as aug
from everest_jax.data import randaugment


def static_clip(h=60, w=80, t=6, seed=0):
    """{'video': (1, T, H, W, 3)}: one random frame repeated, so any per-frame difference in the
    output comes from parameters that differ between frames."""
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {"video": np.broadcast_to(frame, (1, t, h, w, 3)).copy(), "label": 3}


@pytest.mark.parametrize("augment", [
    PretrainAugment(size=32),
    FinetuneAugment(size=32, erase_prob=0.0),
    FinetuneAugment(size=(24, 40), erase_prob=0.0, rand_augment=RandAugment(magnitude=9, prob=1.0)),
], ids=["pretrain", "finetune", "finetune-strong"])
def test_every_frame_of_a_clip_gets_the_same_crop_flip_and_colour(augment):
    outs = [augment(static_clip(), np.random.default_rng(seed))["video"] for seed in range(12)]
    size = augment.size if isinstance(augment.size, tuple) else (augment.size, augment.size)
    for out in outs:
        assert out.shape == (6, *size, 3) and out.dtype == np.float32
        for t in range(1, 6):
            np.testing.assert_array_equal(out[t], out[0])
    # ... while different clips (seeds) do get different parameters (pretraining has only
    # 10 crop sizes x 13 offsets, so a few seeds may coincide).
    assert len({o.tobytes() for o in outs}) >= 9


def test_random_erasing_box_is_the_same_in_every_frame():
    video = np.zeros((5, 40, 40, 3), np.float32)
    for seed in range(5):
        out = aug.random_erase(video, np.random.default_rng(seed), prob=1.0)
        erased = np.any(out != 0, axis=-1)  # (T, H, W)
        assert erased[0].any() and erased[0].mean() <= 1 / 3 + 0.05
        for t in range(1, 5):
            np.testing.assert_array_equal(erased[t], erased[0])
    assert np.all(aug.random_erase(video, np.random.default_rng(0), prob=0.0) == 0)


def test_multi_scale_crop_sizes_and_fixed_offsets():
    rng = np.random.default_rng(0)
    seen_sizes, base = set(), 100
    sizes = [100, 87, 75, 66]  # int(100 * (1, .875, .75, .66))
    for _ in range(3000):
        top, left, h, w = aug.multi_scale_crop_params(100, 130, (66, 66), rng)
        seen_sizes.add((h, w))
        hs, ws = (100 - h) // 4, (130 - w) // 4
        assert top % hs == 0 if hs else top == 0
        assert left % ws == 0 if ws else left == 0
        assert top + h <= 100 and left + w <= 130
    # Pairs of scales at most one step apart (max_distort=1): 10 of the 16 pairs.
    want = {(sizes[i], sizes[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert seen_sizes == want and base == sizes[0]
    out = PretrainAugment(size=(48, 64))({"video": np.zeros((1, 4, 90, 120, 3), np.uint8), "label": 0}, rng)
    assert out["video"].shape == (4, 48, 64, 3)


def test_scale_one_without_resize_is_exactly_normalisation():
    clip = static_clip(h=32, w=32)
    out = PretrainAugment(size=32, scales=(1,))(clip, np.random.default_rng(0))
    np.testing.assert_array_equal(out["video"], normalize_video(clip["video"][0]))
    assert out["label"] == 3 and out["label"].dtype == np.int32


def x_coded_video(h, w, views=1, t=2):
    """(V, T, H, W, 3): red = column index, green = row index, blue = view index."""
    v = np.zeros((views, t, h, w, 3), np.uint8)
    v[..., 0] = np.arange(w)[None, None, None, :]
    v[..., 1] = np.arange(h)[None, None, :, None]
    v[..., 2] = np.arange(views)[:, None, None, None]
    return v


def test_three_test_crops_cover_left_centre_right_and_top_middle_bottom():
    wide = EvalAugment(size=32, num_crops=3).views({"video": x_coded_video(32, 96), "label": 0})["video"]
    assert wide.shape == (3, 2, 32, 32, 3)
    assert [int(c[0, 0, 0, 0]) for c in wide] == [0, 32, 64]  # first column of each crop
    assert [int(c[0, 0, -1, 0]) for c in wide] == [31, 63, 95]
    tall = EvalAugment(size=32, num_crops=3).views({"video": x_coded_video(96, 32), "label": 0})["video"]
    assert [int(c[0, 0, 0, 1]) for c in tall] == [0, 32, 64]  # first row of each crop
    centre = EvalAugment(size=32, num_crops=1).views({"video": x_coded_video(32, 96), "label": 0})["video"]
    assert centre.shape == (1, 2, 32, 32, 3) and int(centre[0, 0, 0, 0, 0]) == 32


def test_test_views_resize_the_short_side_and_are_clip_major():
    video = x_coded_video(64, 160, views=2)  # short side 64 -> 32, long side 160 -> 80
    out = EvalAugment(size=32, short_side=32, num_crops=3).views({"video": video, "label": 0})["video"]
    assert out.shape == (6, 2, 32, 32, 3)
    np.testing.assert_array_equal(out[:, 0, 0, 0, 2], [0, 0, 0, 1, 1, 1])  # clip 0's crops first
    # Crops start at columns 0, 24, 48 of the 80-wide resize: originals 0, 48, 96 (x2).
    np.testing.assert_allclose([c[0, :, :, 0].mean() for c in out[:3]], [31, 79, 127], atol=2)
    full = EvalAugment(size=32, short_side=32, num_crops=3)({"video": video, "label": 1})
    assert full["video"].dtype == np.float32 and full["video"].shape == (6, 2, 32, 32, 3)


def test_masks_follow_crops_and_flips():
    """A bright square and its mask must stay aligned through random crops and flips."""
    video = np.zeros((1, 3, 64, 64, 3), np.uint8)
    mask = np.zeros((1, 3, 64, 64), np.uint8)
    video[:, :, 10:30, 5:25] = 255
    mask[:, :, 10:30, 5:25] = 1
    for seed in range(10):
        for augment in (PretrainAugment(size=32), FinetuneAugment(size=32, rand_augment=None, erase_prob=0.0)):
            out = augment({"video": video, "mask": mask, "label": 0}, np.random.default_rng(seed))
            bright = out["video"][..., 0] > 0.5
            assert out["mask"].shape == (3, 32, 32)
            # Bilinear edges differ by at most a pixel ring from the nearest-neighbour mask.
            assert np.mean(bright != out["mask"].astype(bool)) < 0.08


def test_no_augment_passes_frames_through():
    clip = static_clip()
    out = NoAugment()(clip)
    np.testing.assert_array_equal(out["video"], clip["video"][0])


def test_rand_augment_samples_n_ops_with_clipped_magnitudes():
    ra = RandAugment(prob=1.0)
    rng = np.random.default_rng(0)
    ops = [ra.sample(rng) for _ in range(200)]
    assert all(len(o) == 4 for o in ops)
    rotations = [arg for o in ops for name, arg in o if name == "Rotate"]
    assert rotations and all(abs(r) <= 30 for r in rotations) and min(rotations) < 0 < max(rotations)
    assert max(abs(r) for r in rotations) > 7 / 10 * 30 * 0.9  # magnitudes scatter around 7
    assert sum(len(o) for o in (RandAugment().sample(rng) for _ in range(400))) / 400 == pytest.approx(2, abs=0.3)


@pytest.mark.parametrize("name", randaugment.OPS)
def test_every_rand_augment_op_runs_on_clips_and_masks(name):
    video = static_clip(h=24, w=32, t=3)["video"][0]
    mask = np.zeros((3, 24, 32), np.uint8)
    mask[:, 8:16, 8:16] = 1

    class Only(RandAugment):
        def sample(self, rng):
            return [(name, randaugment._level_arg(name, 9.0, rng))]

    out, out_mask = Only()(video, np.random.default_rng(0), mask)
    assert out.shape == video.shape and out.dtype == np.uint8 and out_mask.shape == mask.shape
    np.testing.assert_array_equal(out[1], out[0])
    if name in ("Invert", "Rotate", "ShearX", "TranslateXRel", "SolarizeIncreasing"):
        assert not np.array_equal(out, video)  # the op did something
    assert np.array_equal(out_mask, mask) == (name not in randaugment.GEOMETRIC)

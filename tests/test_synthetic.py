"""The procedural synthetic videos: deterministic, labelled by motion, with true masks."""

import numpy as np
import pytest

from everest_jax.data import SyntheticVideos, normalize_video
from everest_jax.data import IMAGENET_MEAN, IMAGENET_STD


def test_examples_are_deterministic_functions_of_seed_and_index():
    a, b = SyntheticVideos(num_examples=8, seed=3), SyntheticVideos(num_examples=8, seed=3)
    for i in (0, 5):
        np.testing.assert_array_equal(a[i]["video"], b[i]["video"])
        assert a[i]["label"] == b[i]["label"]
    assert not np.array_equal(a[0]["video"], SyntheticVideos(num_examples=8, seed=4)[0]["video"])
    assert not np.array_equal(a[0]["video"], a[1]["video"])
    with pytest.raises(IndexError):
        a[8]


def test_shapes_and_types():
    ds = SyntheticVideos(num_examples=2, num_frames=6, image_size=(48, 64), num_classes=8)
    ex = ds[1]
    assert ex["video"].shape == (6, 48, 64, 3) and ex["video"].dtype == np.uint8
    assert ex["mask"].shape == (6, 48, 64) and set(np.unique(ex["mask"])) <= {0, 1}
    assert 0 <= ex["label"] < 8


@pytest.mark.parametrize("num_classes", [4, 8])
def test_label_is_the_direction_the_masked_shape_moves(num_classes):
    ds = SyntheticVideos(num_examples=24, num_frames=16, image_size=(64, 64), num_classes=num_classes, seed=1)
    labels = set()
    for i in range(len(ds)):
        ex = ds[i]
        ys, xs = [], []
        for t in (0, 15):
            yy, xx = np.nonzero(ex["mask"][t])
            ys.append(yy.mean())
            xs.append(xx.mean())
        angle = np.arctan2(ys[1] - ys[0], xs[1] - xs[0])
        want = 2 * np.pi * ex["label"] / num_classes
        err = np.angle(np.exp(1j * (angle - want)))
        # Label noise is N(0, 0.1) rad and clipping at the border shifts centroids a little.
        assert abs(err) < np.pi / num_classes, (i, ex["label"], angle)
        labels.add(int(ex["label"]))
    assert len(labels) == num_classes  # every class occurs


def test_static_class_does_not_move_and_the_others_share_the_directions():
    ds = SyntheticVideos(num_examples=30, num_frames=8, image_size=(32, 32), num_classes=4, seed=1,
                         static_class=True, balanced_labels=True)
    for i in range(len(ds)):
        ex = ds[i]
        moved = np.abs(ex["video"][-1].astype(int) - ex["video"][0]).mean()
        if ex["label"] == 3:
            np.testing.assert_array_equal(ex["video"], np.broadcast_to(ex["video"][:1], ex["video"].shape))
        else:  # 3 directions, 120 degrees apart
            assert moved > 1
            (y0, x0), (y1, x1) = (np.argwhere(ex["mask"][t]).mean(0) for t in (0, -1))
            err = np.angle(np.exp(1j * (np.arctan2(y1 - y0, x1 - x0) - 2 * np.pi * ex["label"] / 3)))
            assert abs(err) < np.pi / 3
    with pytest.raises(ValueError, match="num_classes - 1"):
        SyntheticVideos(num_classes=4, num_speeds=2, static_class=True)


def test_a_single_frame_does_not_carry_the_label():
    """The first frame's shape position alone must not separate the classes: both classes of
    opposite directions start in overlapping regions."""
    ds = SyntheticVideos(num_examples=64, num_frames=16, image_size=(64, 64), num_classes=2, seed=2)
    starts = {0: [], 1: []}
    for i in range(len(ds)):
        ex = ds[i]
        yy, xx = np.nonzero(ex["mask"][0])
        starts[int(ex["label"])].append(xx.mean())
    # The shape travels up to 60% of the width, yet first-frame positions of the classes overlap.
    assert max(starts[0]) > min(starts[1]) and max(starts[1]) > min(starts[0])


def test_normalize_video():
    v = np.full((1, 2, 2, 3), 255, np.uint8)
    out = normalize_video(v)
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("update", [dict(num_speeds=3), dict(static_class=True, num_speeds=2)])
def test_a_synthetic_config_the_dataset_cannot_make_is_refused_before_running(update):
    from configs.quickstart import get_config
    from everest_jax import ConfigError, train
    config = get_config()
    config.data.update(**update)
    with pytest.raises(ConfigError, match=r"data: num_classes.*num_speeds"):
        train.validate(config)

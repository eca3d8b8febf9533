"""Temporal samplers on hand-computed cases."""

import numpy as np
import pytest

from everest_jax.data import CandidateSampler, Reason, SegmentSampler, StrideSampler, VideoError
from everest_jax.data.sampling import num_candidate_frames


def test_stride_test_clip_is_centred():
    # 16 x 4 spans 61 frames; 100 - 61 = 39 possible starts beyond 0, centre 19.
    np.testing.assert_array_equal(StrideSampler(16, 4, train=False)(100), [np.arange(19, 80, 4)])
    # 16 x 2 spans 31; (50 - 31) // 2 = 9.
    np.testing.assert_array_equal(StrideSampler(16, 2, train=False)(50), [np.arange(9, 40, 2)])


def test_stride_training_start_is_uniform_over_all_valid_starts():
    sampler, rng = StrideSampler(16, 4), np.random.default_rng(0)
    clips = np.concatenate([sampler(100, rng) for _ in range(3000)])
    assert clips.shape == (3000, 16)
    np.testing.assert_array_equal(np.diff(clips, axis=1), 4)
    starts = clips[:, 0]
    assert starts.min() == 0 and starts.max() == 39  # every start keeps the clip inside
    counts = np.bincount(starts, minlength=40)
    assert counts.min() > 3000 / 40 / 2  # roughly uniform


def test_stride_short_video_repeats_its_last_frame_and_too_short_is_refused():
    # 40 frames < span 61: start 0, positions 0, 4, ..., 36, then the last frame (39) six times.
    want = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [39] * 6
    np.testing.assert_array_equal(StrideSampler(16, 4, train=False)(40), [want])
    np.testing.assert_array_equal(StrideSampler(16, 4)(40, np.random.default_rng(0)), [want])
    with pytest.raises(VideoError) as e:
        StrideSampler(16, 4)(15, np.random.default_rng(0))
    assert e.value.reason == Reason.TOO_SHORT


def test_multiview_clips_are_evenly_spaced_from_first_to_last_start():
    s = StrideSampler(16, 4, train=False, num_clips=5)
    np.testing.assert_array_equal(s(101)[:, 0], [0, 10, 20, 30, 40])  # room 40: steps of 10
    np.testing.assert_array_equal(s(100)[:, 0], [0, 9, 19, 29, 39])  # int(c * 39 / 4)
    clips = s(100)
    assert clips.shape == (5, 16) and clips.max() == 99
    np.testing.assert_array_equal(np.diff(clips, axis=1), 4)


def test_segment_test_frames_are_segment_middles():
    # 33 frames, 8 segments of (33 - 1) / 8 = 4: starts 0, 4, ..., 28, middles +2.
    np.testing.assert_array_equal(SegmentSampler(8, train=False)(33), [np.arange(2, 31, 4)])
    # Two test clips at 1/3 and 2/3 of each segment: int(4/3) = 1, int(8/3) = 2.
    np.testing.assert_array_equal(SegmentSampler(8, train=False, num_clips=2)(33),
                                  [np.arange(1, 30, 4), np.arange(2, 31, 4)])
    # 20 frames: segment 19/8 = 2.375, starts round(2.375 i) = 0 2 5 7 10 12 14 17 (9.5 -> 10,
    # NumPy rounds halves to even as VideoMAE's np.round does), middle offset int(1.1875) = 1.
    np.testing.assert_array_equal(SegmentSampler(8, train=False)(20), [[1, 3, 6, 8, 11, 13, 15, 18]])


def test_segment_training_draws_one_frame_anywhere_in_each_segment():
    rng = np.random.default_rng(1)
    draws = np.concatenate([SegmentSampler(8)(20, rng) for _ in range(2000)])
    starts = [0, 2, 5, 7, 10, 12, 14, 17]
    ends = [2, 5, 7, 10, 12, 14, 17, 19]  # inclusive, as random.randint in VideoMAE
    np.testing.assert_array_equal(draws.min(0), starts)
    np.testing.assert_array_equal(draws.max(0), ends)
    # Each segment's frame is drawn on its own (not one offset shared by all segments).
    offsets = draws - np.asarray(starts)
    assert np.mean([len(set(row)) > 1 for row in offsets]) > 0.9


def test_candidate_frames_are_uniformly_spaced_over_the_whole_video():
    s = CandidateSampler(16, 1.5, 2, train=False)
    assert s.num_candidates == num_candidate_frames(16, 1.5, 2) == 24
    np.testing.assert_array_equal(s(48), [np.arange(1, 48, 2)])  # floor((k + 0.5) * 2)
    np.testing.assert_array_equal(s(240), [np.arange(5, 240, 10)])
    draws = np.concatenate([CandidateSampler(16, 1.5, 2)(240, np.random.default_rng(i)) for i in range(200)])
    np.testing.assert_array_equal(np.diff(draws, axis=1), 10)  # one random phase, same spacing
    assert set(draws[:, 0]) == set(range(10))
    assert CandidateSampler(16, 2.0, 2, train=False)(64).shape == (1, 32)
    with pytest.raises(VideoError):
        s(23)


def test_num_candidate_frames():
    assert num_candidate_frames(16, 1.5, 2) == 24
    assert num_candidate_frames() == 24
    assert num_candidate_frames(16, 1.0, 2) == 16
    assert num_candidate_frames(16, 2, 2) == 32
    assert num_candidate_frames(8, 1.5, 4) == 12
    assert isinstance(num_candidate_frames(16, 1.5, 2), int)
    for alpha in (0.5, 0.0, -1.0, 1.3):  # < 1, or 1.3 * 8 pairs is not an integer
        with pytest.raises(ValueError, match="alpha"):
            num_candidate_frames(16, alpha, 2)

"""The Grain pipeline end to end: bad files replaced and reported, determinism, shards, resuming,
worker processes, and the TFDS path."""

import json
import logging

import av
import grain
import numpy as np
import pytest

from everest_jax.data import (FinetuneAugment, NoAugment, PretrainAugment, StrideSampler, SyntheticVideos,
                              TfdsVideoSource, TooManyBadExamples, VideoListSource, build_dataset, encode,
                              make_iterator)

NO_SHARDING = grain.sharding.NoSharding()
T, STRIDE = 8, 2  # clips of 8 frames, 2 apart: a span of 15 frames
FRAMES = 24  # frames of each valid file: the centre test clip is 4, 6, ..., 18

# The list, in order: bad files in runs, so a replacement may skip several.
LIST = ["good0.mp4", "missing.mp4", "good1.mp4", "empty.mp4", "truncated.mp4", "good2.mp4", "cut.mp4",
        "corrupt.mp4", "audio.m4a", "good3.mp4", "notes.txt", "good4.mp4", "short.mp4", "good5.mp4"]
REASONS = {"missing.mp4": "missing", "empty.mp4": "empty", "truncated.mp4": "truncated", "cut.mp4": "undecodable",
           "corrupt.mp4": "undecodable", "audio.m4a": "no_video_stream", "notes.txt": "undecodable",
           "short.mp4": "too_short"}


def blocks(seed, t=FRAMES, h=32, w=48):
    """(t, h, w, 3) uint8 of random 8x8 colour blocks, new each frame."""
    b = np.random.default_rng(seed).integers(0, 256, (t, h // 8, w // 8, 3))
    return np.kron(b, np.ones((1, 8, 8, 1), int)).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A folder with valid clips and bad files of every kind, and list.txt naming them all."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        encode.write_video(root / f"good{i}.mp4", blocks(i), gop=6)
    (root / "empty.mp4").write_bytes(b"")
    encode.write_video(root / "truncated.mp4", blocks(10), faststart=True)  # opens, then ends early
    encode.write_video(root / "cut.mp4", blocks(11))  # index at the end: cut off, cannot open
    for name in ("truncated.mp4", "cut.mp4"):
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[:len(data) // 3])
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    encode.write_audio_only(root / "audio.m4a")
    (root / "notes.txt").write_text("not a video\n" * 20)
    encode.write_video(root / "short.mp4", blocks(12, t=5))  # 5 frames < 8
    (root / "list.txt").write_text("".join(f"{name} {i % 3}\n" for i, name in enumerate(LIST)))
    return root


def reference_clip(path):
    """The centre test clip decoded directly with PyAV, independent of the pipeline."""
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    start = (len(frames) - ((T - 1) * STRIDE + 1)) // 2
    return frames[start:start + (T - 1) * STRIDE + 1:STRIDE]


def collect(it, n=None):
    out = []
    for batch in it:
        out.append(batch)
        if n is not None and len(out) == n:
            break
    return out


def test_bad_files_are_replaced_by_the_next_valid_one_logged_once_and_reported(tree, caplog):
    src = VideoListSource(tree / "list.txt")
    it = make_iterator(src, StrideSampler(T, STRIDE, train=False), NoAugment(), batch_size=4, seed=3,
                       num_epochs=2, shard_options=NO_SHARDING, drop_remainder=False, max_bad_fraction=0.6)
    with caplog.at_level(logging.WARNING):
        batches = collect(it)
    it.close()
    index = np.concatenate([b["index"] for b in batches])
    error = np.concatenate([b["error"] for b in batches])
    video = np.concatenate([b["video"] for b in batches])
    label = np.concatenate([b["label"] for b in batches])
    assert sorted(index.tolist()) == sorted(list(range(14)) * 2)  # every slot, once per epoch
    assert index[:14].tolist() != list(range(14))  # shuffled

    good = [i for i, name in enumerate(LIST) if name.startswith("good")]
    refs = {i: reference_clip(tree / LIST[i]) for i in good}
    for k, i in enumerate(index.tolist()):
        name = LIST[i]
        assert (error[k] != 0) == (name in REASONS), name
        # A valid file comes out exactly as decoded directly; a bad one is replaced by the next
        # valid file in list order (label included).
        use = i if error[k] == 0 else next(j for j in good + [g + 14 for g in good] if j > i) % 14
        np.testing.assert_array_equal(video[k], refs[use], err_msg=f"slot {i} ({name})")
        assert label[k] == use % 3

    report = it.report()
    assert report.bad == {i: (str(tree / name), REASONS[name]) for i, name in enumerate(LIST) if name in REASONS}
    assert report.num_bad == 8 and report.replaced == 16 and report.examples == 28
    for name in REASONS:  # logged once, with path and reason, although seen in both epochs
        lines = [r.getMessage() for r in caplog.records if str(tree / name) in r.getMessage()]
        assert len(lines) == 1 and REASONS[name] in lines[0], (name, lines)


def test_too_many_bad_files_stop_the_run_with_a_clear_error(tree, tmp_path):
    src = VideoListSource(tree / "list.txt")  # 8 of 14 bad
    it = make_iterator(src, StrideSampler(T, STRIDE, train=False), NoAugment(), batch_size=2, seed=0,
                       num_epochs=1, shard_options=NO_SHARDING, max_bad_fraction=0.25)  # allows 3
    with pytest.raises(TooManyBadExamples, match=r"bad.*max_bad_fraction=0.25|at most 3"):
        collect(it)
    it.close()
    (tmp_path / "all_bad.txt").write_text("a.mp4 0\nb.mp4 1\nc.mp4 0\n")  # must not loop forever
    it = make_iterator(VideoListSource(tmp_path / "all_bad.txt"), StrideSampler(T, STRIDE), NoAugment(),
                       batch_size=1, shard_options=NO_SHARDING, max_bad_fraction=0.9)
    with pytest.raises(TooManyBadExamples, match="missing") as err:
        next(it)
    it.close()
    # every file that failed is named (not an internal shard position)
    assert all(str(tmp_path / f) in str(err.value) for f in ("a.mp4", "b.mp4", "c.mp4")), err.value
    assert "position" not in str(err.value) and str(err.value).startswith("3 videos in a row are bad")


def synthetic(n=10):
    return SyntheticVideos(num_examples=n, num_frames=12, image_size=(24, 24), seed=5)


def augmented(seed, shard=NO_SHARDING, n=10, **kwargs):
    kwargs = {"batch_size": 3, "seed": seed, "shard_options": shard, **kwargs}
    return make_iterator(synthetic(n), StrideSampler(4, 2), FinetuneAugment(size=16), **kwargs)


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_same_seed_same_batches_and_another_seed_other_batches():
    a, b, c = augmented(7), augmented(7), augmented(8)
    first, second, other = collect(a, 4), collect(b, 4), collect(c, 4)
    assert_same_batches(first, second)
    assert first[0]["video"].shape == (3, 4, 16, 16, 3) and first[0]["video"].dtype == np.float32
    assert not np.array_equal(first[0]["index"], other[0]["index"])
    assert not np.array_equal(first[0]["video"], other[0]["video"])
    # A new shuffle every epoch (10 examples; batches of 3 run across the epoch boundary).
    order = np.concatenate([b["index"] for b in first + collect(a, 3)])
    epoch0, epoch1 = order[:10], order[10:20]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0.tolist() != epoch1.tolist()


def test_two_shards_are_disjoint_and_cover_the_dataset():
    seen = []
    for shard_index in (0, 1):
        shard = grain.sharding.ShardOptions(shard_index=shard_index, shard_count=2)
        it = augmented(0, shard, n=11, num_epochs=1, drop_remainder=False)
        seen.append(np.concatenate([b["index"] for b in collect(it)]).tolist())
    assert len(seen[0]) == 6 and len(seen[1]) == 5
    assert set(seen[0]).isdisjoint(seen[1]) and sorted(seen[0] + seen[1]) == list(range(11))
    # Equal shards (the default for training) drop the 11th example.
    it = augmented(0, grain.sharding.ShardOptions(0, 2, drop_remainder=True), n=11, num_epochs=1,
                   drop_remainder=False)
    assert len(np.concatenate([b["index"] for b in collect(it)])) == 5


def test_restored_iterator_state_continues_with_the_next_batches():
    it = augmented(1)
    collect(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    expected = collect(it, 4)  # crosses the epoch boundary (10 examples, batches of 3)
    fresh = augmented(1)
    fresh.set_state(state)
    assert_same_batches(collect(fresh, 4), expected)


def test_worker_processes_give_the_same_batches_resume_and_report(tree):
    """Two decoding processes: the batches equal the in-process ones (batches are formed before
    the workers), a restored state resumes exactly, and bad files are reported from the workers."""
    src = VideoListSource(tree / "list.txt")
    kwargs = dict(batch_size=2, seed=4, shard_options=NO_SHARDING, max_bad_fraction=0.6)
    sampler, augment = StrideSampler(T, STRIDE), PretrainAugment(size=16)
    local = make_iterator(src, sampler, augment, **kwargs)
    want = collect(local, 6)
    local.close()
    workers = make_iterator(src, sampler, augment, worker_count=2, **kwargs)
    got = collect(workers, 3)
    state = json.loads(json.dumps(workers.get_state()))
    got += collect(workers, 3)
    assert_same_batches(got, want)
    assert workers.report().bad == local.report().bad and workers.report().num_bad > 0
    workers.close()
    resumed = make_iterator(src, sampler, augment, worker_count=2, **kwargs)
    resumed.set_state(state)
    assert_same_batches(collect(resumed, 3), want[3:])
    resumed.close()


def test_tfds_ucf101_source_through_the_pipeline():
    pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        src = TfdsVideoSource("ucf101/ucf101_1_256", split="train")
        assert len(src) == 4
        ex = src[0]
        assert ex["video"].ndim == 4 and ex["video"].shape[1:] == (256, 256, 3) and ex["video"].dtype == np.uint8
        lengths = [src[i]["video"].shape[0] for i in range(4)]
        # Mock videos may be shorter than the 8-frame clip: those are replaced, not fatal.
        ds = build_dataset(src, StrideSampler(T, STRIDE, train=False), NoAugment(), batch_size=None, seed=0,
                           num_epochs=1, shuffle=False, shard_options=NO_SHARDING, max_bad_fraction=0.75)
        it = iter(ds)
        out = collect(it)
        assert [int(o["index"]) for o in out] == [0, 1, 2, 3]
        for o in out:
            i = int(o["index"]) if o["error"] == 0 else None
            if i is not None:
                n = lengths[i]
                start = max(n - 15, 0) // 2
                want = src[i]["video"][np.minimum(start + STRIDE * np.arange(T), n - 1)]
                np.testing.assert_array_equal(o["video"], want)
                assert o["label"] == src[i]["label"]
        assert it.report().num_bad == sum(n < T for n in lengths)


def test_synthetic_training_batches_read_only_a_few_batches_ahead(monkeypatch):
    """The synthetic path of everest_jax.inputs reads data.read_threads-parallel, 4 batches ahead:
    Grain's default (16 threads, 500 batches) kept the CPU and the GIL busy during compilation."""
    import time

    from configs.quickstart import get_config
    from everest_jax import inputs, train

    calls = []

    class Counted(SyntheticVideos):
        def __getitem__(self, index):
            calls.append(index)
            return super().__getitem__(index)

    monkeypatch.setattr(inputs, "SyntheticVideos", Counted)
    config = get_config()
    config.data.update(num_examples=512, read_threads=2)
    batch = next(inputs.train_iterator(config, train.validate(config), 4, 0, 1))
    assert batch["video"].shape[0] == 4
    time.sleep(1.0)  # time for the threads to read ahead
    assert len(calls) <= 4 * (1 + 4 + 2), len(calls)  # the batch, the buffer, one in flight per thread

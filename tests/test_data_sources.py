"""List files: the accepted formats, and refusing a missing file or a malformed line by its number."""

import numpy as np
import pytest

from everest_jax.data import SyntheticVideos, StrideSampler, VideoListSource, encode, parse_list_file, read_clip


def test_space_three_column_and_csv_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nclips/x.mp4 3\n\n/abs/y.mp4 300 7\n")
    entries = parse_list_file(tmp_path / "a.txt", root="/data")
    assert [(e.path, e.label, e.num_frames) for e in entries] == [("/data/clips/x.mp4", 3, None),
                                                                   ("/abs/y.mp4", 7, 300)]
    (tmp_path / "b.csv").write_text("path,label\nmy clip.mp4, 2\nz.mp4,40,1\n")
    entries = parse_list_file(tmp_path / "b.csv")  # root defaults to the list file's folder
    assert [(e.path, e.label, e.num_frames) for e in entries] == [(str(tmp_path / "my clip.mp4"), 2, None),
                                                                   (str(tmp_path / "z.mp4"), 1, 40)]


def test_missing_list_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        VideoListSource(tmp_path / "nope.txt")


@pytest.mark.parametrize("bad_line, message", [
    ("c.mp4", "got 1 fields"),
    ("c.mp4 1 2 3", "got 4 fields"),
    ("c.mp4 cat", "label 'cat' is not an integer"),
    ("c.mp4 x 1", "frame count 'x' is not an integer"),
    ("c.mp4 12", r"label 12 outside \[0, 10\)"),
    (",3", "got 2 fields"),
])
def test_malformed_line_is_refused_with_its_line_number(tmp_path, bad_line, message):
    (tmp_path / "l.txt").write_text(f"a.mp4 0\n\nb.mp4 1\n{bad_line}\nd.mp4 2\n")
    with pytest.raises(ValueError, match=f"l.txt:4: .*{message}"):
        VideoListSource(tmp_path / "l.txt", num_classes=10)


def test_empty_list_is_refused(tmp_path):
    (tmp_path / "l.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no videos"):
        VideoListSource(tmp_path / "l.txt")


def test_list_source_reads_clips_and_whole_videos(tmp_path):
    # Random 8x8 colour blocks, new every frame: each frame unlike any other.
    blocks = np.random.default_rng(0).integers(0, 256, (12, 4, 6, 3))
    frames = np.kron(blocks, np.ones((1, 8, 8, 1), int)).astype(np.uint8)
    encode.write_video(tmp_path / "v.mp4", frames, gop=4)
    (tmp_path / "l.txt").write_text("v.mp4 5\n")
    src = VideoListSource(tmp_path / "l.txt")
    assert len(src) == 1 and src.describe(0) == str(tmp_path / "v.mp4")
    whole = src[0]
    assert whole["video"].shape == (12, 32, 48, 3) and whole["label"] == 5
    clip = read_clip(src, 0, lambda n: StrideSampler(4, 3, train=False)(n))  # centre clip: 1, 4, 7, 10
    np.testing.assert_array_equal(clip["video"][0], whole["video"][[1, 4, 7, 10]])
    # Lossy H.264 (crf 18, 4:2:0 chroma) stays within a few grey levels of the frames it encoded;
    # a shifted frame order would be off by ~85.
    err = np.abs(whole["video"].astype(int) - frames).mean(axis=(1, 2, 3))
    assert err.max() < 8, err


def test_array_sources_are_sampled_with_their_masks():
    src = SyntheticVideos(num_examples=2, num_frames=10, image_size=(16, 16))
    clip = read_clip(src, 1, lambda n: np.array([[0, 9]]))
    np.testing.assert_array_equal(clip["video"][0], src[1]["video"][[0, 9]])
    np.testing.assert_array_equal(clip["mask"][0], src[1]["mask"][[0, 9]])

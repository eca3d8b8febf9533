"""Cityscapes-sequence and CamVid-sequence loaders on tiny fixture trees written here."""

import os

import numpy as np
import pytest
from PIL import Image

from stmg_jax.data import (CamVidSequences, CityscapesSequences, DatasetError, IGNORE, cityscapes_lut,
                           pairs_batch)

H, W = 8, 12


def _frame(value: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = value  # the frame number, readable back from the red channel
    img[..., 1] = 7
    return img


def _png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)


def cityscapes_tree(root, split="train", snippets=(("aachen", 0, 19), ("bremen", 3, 49))):
    """Per snippet (city, seq, labelled frame): its 30 sequence frames and a labelIds PNG."""
    label = np.zeros((H, W), np.uint8)
    label[:, :3] = 7     # road -> 0
    label[:, 3:6] = 26   # car -> 13
    label[:, 6:9] = 33   # bicycle -> 18
    label[:, 9:] = 4     # static -> ignore
    label[0, 0] = 9      # parking -> ignore
    for city, seq, frame in snippets:
        for t in range(frame - 19, frame + 11):
            _png(os.path.join(root, "leftImg8bit_sequence", split, city, f"{city}_{seq:06d}_{t:06d}_leftImg8bit.png"),
                 _frame(t))
        _png(os.path.join(root, "gtFine", split, city, f"{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png"), label)
        # other gtFine files of the same frame must be ignored
        _png(os.path.join(root, "gtFine", split, city, f"{city}_{seq:06d}_{frame:06d}_gtFine_color.png"),
             np.zeros((H, W, 3), np.uint8))
    return label


def camvid_tree(root, split="train", labelled=(("0001TP", "", 30, 6), ("0006R0", "f", 930, 5))):
    """Per labelled frame (seq, prefix, frame, digits): sequences/ frames frame-3..frame, the
    labelled frame in <split>/ and a class-index label in <split>annot/."""
    label = np.zeros((H, W), np.uint8)
    label[:, :4] = 3    # road
    label[:, 4:8] = 8   # car
    label[:, 8:] = 11   # void -> ignore
    for seq, prefix, frame, digits in labelled:
        name = lambda t: f"{seq}_{prefix}{t:0{digits}d}.png"
        for t in range(frame - 3, frame):
            _png(os.path.join(root, "sequences", seq, name(t)), _frame(t % 256))
        _png(os.path.join(root, split, name(frame)), _frame(frame % 256))
        _png(os.path.join(root, split + "annot", name(frame)), label)
    return label


def test_cityscapes_lut_is_the_official_19_classes():
    lut = cityscapes_lut()
    assert sorted(set(lut.tolist()) - {IGNORE}) == list(range(19))
    assert lut[7] == 0 and lut[26] == 13 and lut[33] == 18 and lut[0] == IGNORE and lut[34] == IGNORE


def test_cityscapes_clips_end_at_the_20th_frame(tmp_path):
    cityscapes_tree(str(tmp_path))
    ds = CityscapesSequences(str(tmp_path), "train", clip_length=4)
    assert len(ds) == 2 and ds.num_classes == 19
    ex = ds[1]
    assert ex["name"] == "bremen_000003_000049"
    assert ex["video"].shape == (4, H, W, 3) and ex["video"].dtype == np.uint8
    np.testing.assert_array_equal(ex["video"][:, 0, 0, 0], [46, 47, 48, 49])  # ends at the labelled frame
    mask = ex["mask"]
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert (mask[1:, :3] == 0).all() and (mask[:, 3:6] == 13).all() and (mask[:, 6:9] == 18).all()
    assert (mask[:, 9:] == IGNORE).all() and mask[0, 0] == IGNORE


def test_cityscapes_resize_and_pairs_batch(tmp_path):
    cityscapes_tree(str(tmp_path))
    ds = CityscapesSequences(str(tmp_path), clip_length=2, image_size=(4, 6))
    ex = ds[0]
    assert ex["video"].shape == (2, 4, 6, 3) and ex["mask"].shape == (4, 6)
    assert set(np.unique(ex["mask"]).tolist()) <= {0, 13, 18, IGNORE}  # nearest: no blended ids
    b = pairs_batch(ds, 3, step=5, seed=1)
    assert b["prev"].shape == b["cur"].shape == (3, 4, 6, 3) and b["prev"].dtype == np.float32
    assert b["label"].shape == (3, 4, 6) and b["label"].dtype == np.int32
    again = pairs_batch(ds, 3, step=5, seed=1)
    for k in b:
        np.testing.assert_array_equal(b[k], again[k])


def test_cityscapes_errors_name_the_missing_piece(tmp_path):
    root = str(tmp_path)
    with pytest.raises(DatasetError, match="Cityscapes root"):
        CityscapesSequences(os.path.join(root, "nope"))
    os.makedirs(os.path.join(root, "gtFine", "train"))
    with pytest.raises(DatasetError, match=r"leftImg8bit_sequence[/\\]train"):
        CityscapesSequences(root)
    with pytest.raises(DatasetError, match=r"gtFine[/\\]val"):
        CityscapesSequences(root, "val")
    os.makedirs(os.path.join(root, "leftImg8bit_sequence", "train"))
    with pytest.raises(DatasetError, match="no \\*_gtFine_labelIds.png"):
        CityscapesSequences(root)
    cityscapes_tree(root)
    os.remove(os.path.join(root, "leftImg8bit_sequence", "train", "aachen", "aachen_000000_000018_leftImg8bit.png"))
    with pytest.raises(DatasetError, match="aachen_000000_000018_leftImg8bit.png"):
        CityscapesSequences(root, clip_length=2)
    CityscapesSequences(root, clip_length=1)  # the labelled frame alone is still there
    with pytest.raises(ValueError, match="clip_length"):
        CityscapesSequences(root, clip_length=21)


def test_camvid_clips_and_void(tmp_path):
    camvid_tree(str(tmp_path))
    ds = CamVidSequences(str(tmp_path), "train", clip_length=3)
    assert len(ds) == 2 and ds.num_classes == 11
    names = [ds[i]["name"] for i in range(2)]
    assert names == ["0001TP_000030", "0006R0_f00930"]
    ex = ds[1]
    np.testing.assert_array_equal(ex["video"][:, 0, 0, 0], [928 % 256, 929 % 256, 930 % 256])
    assert os.path.basename(ds.frame_paths(1)[0]) == "0006R0_f00928.png"
    assert (ex["mask"][:, :4] == 3).all() and (ex["mask"][:, 4:8] == 8).all() and (ex["mask"][:, 8:] == IGNORE).all()
    b = pairs_batch(ds, 2, step=0)
    assert b["cur"].shape == (2, H, W, 3) and set(np.unique(b["label"]).tolist()) == {3, 8, IGNORE}


def test_camvid_errors(tmp_path):
    root = str(tmp_path)
    camvid_tree(root)
    with pytest.raises(DatasetError, match=r"valannot|[/\\]val "):
        CamVidSequences(root, "val")
    os.remove(os.path.join(root, "sequences", "0001TP", "0001TP_000029.png"))
    with pytest.raises(DatasetError, match="0001TP_000029.png"):
        CamVidSequences(root, clip_length=2)
    CamVidSequences(root, clip_length=1)  # only the labelled frames, from train/
    # a colour-coded label is refused with a message saying so
    _png(os.path.join(root, "trainannot", "0001TP_000030.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DatasetError, match="colour-coded"):
        CamVidSequences(root, clip_length=1)[0]
    # class ids beyond void
    _png(os.path.join(root, "trainannot", "0001TP_000030.png"), np.full((H, W), 20, np.uint8))
    with pytest.raises(DatasetError, match="0..10"):
        CamVidSequences(root, clip_length=1)[0]
    # a label of another size than its frames
    _png(os.path.join(root, "trainannot", "0001TP_000030.png"), np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match="differs from its frames"):
        CamVidSequences(root, clip_length=1)[0]


def test_loss_and_miou_leave_the_ignore_label_out():
    """CE and the confusion matrix count only labelled pixels: changing the logits where the label
    is 255 changes neither; on the labelled pixels they equal a NumPy reference."""
    import jax.numpy as jnp
    from stmg_jax.train import confusion, cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 4, 6))
    labels[:, :, :2] = IGNORE
    valid = labels != IGNORE
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()
    assert float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(want, rel=1e-5)
    other = logits.copy()
    other[:, :, :2] = 100 * rng.normal(size=other[:, :, :2].shape)
    assert float(cross_entropy(jnp.asarray(other), jnp.asarray(labels))) == pytest.approx(want, rel=1e-5)
    conf = np.asarray(confusion(jnp.asarray(logits), jnp.asarray(labels), 5))
    ref = np.zeros((5, 5), np.int64)
    np.add.at(ref, (labels[valid], logits.argmax(-1)[valid]), 1)
    np.testing.assert_array_equal(conf, ref)
    np.testing.assert_array_equal(np.asarray(confusion(jnp.asarray(other), jnp.asarray(labels), 5)), ref)


def _cityscapes_config(root):
    from configs.stmg_cityscapes import get_config

    cfg = get_config()
    cfg.net.update(widths=(8, 8, 16, 16), decoder_width=8)
    cfg.stream.bin_grid = (1, 1)
    cfg.data.update(root=str(root), image_size=(32, 64))
    cfg.update(batch_size=4, dense_steps=60, gate_steps=3, warmup_steps=2, log_every=1)
    cfg.checkpoint.async_save = False
    cfg.optimizer.base_lr = 0.5
    return cfg


def test_stmg_trains_on_a_cityscapes_tree(tmp_path):
    """python -m stmg_jax.main's run() on a fixture Cityscapes tree (train + val), resized to
    32x64: the dense CE on labelled pixels falls, the evaluation scores only labelled pixels (the
    right quarter, ignore, cannot lower it) and the final checkpoint is written."""
    from stmg_jax.train import run

    for split in ("train", "val"):
        cityscapes_tree(tmp_path / "cs", split)
    cfg = _cityscapes_config(tmp_path / "cs")
    result = run(cfg, str(tmp_path / "work"), log=lambda *_: None)
    import json
    lines = [json.loads(l) for l in open(tmp_path / "work" / "metrics.jsonl")]
    dense = [l["loss"] for l in lines if l["phase"] == "dense" and "loss" in l]
    assert np.mean(dense[-5:]) < 0.3 * dense[0], (dense[0], dense[-5:])
    # three labelled column bands (road, car, bicycle); a network that learned them scores high
    assert result["dense_miou"] > 80, result
    assert (tmp_path / "work" / "final" / "stmg.json").exists()


def test_real_dataset_configs_are_refused_before_compiling(tmp_path):
    from stmg_jax.config import ConfigError
    from stmg_jax.train import check_config

    cityscapes_tree(tmp_path / "cs", "train")
    cfg = _cityscapes_config(tmp_path / "cs")
    with pytest.raises(DatasetError, match="gtFine/val"):   # no val split
        check_config(cfg)
    cityscapes_tree(tmp_path / "cs", "val")
    check_config(cfg)
    cfg.net.num_classes = 11
    with pytest.raises(ConfigError, match=r"net.num_classes=11 but data.source='cityscapes' has 19 classes"):
        check_config(cfg)
    cfg = _cityscapes_config("")
    with pytest.raises(ConfigError, match="data.root must name the cityscapes folder"):
        check_config(cfg)
    cfg.data.source = "kitti"
    with pytest.raises(ConfigError, match="data.source='kitti' must be one of 'synthetic', 'cityscapes', 'camvid'"):
        check_config(cfg)
    # the shipped CamVid config (384x480, its bin grids) is valid on a CamVid tree
    from configs.stmg_camvid import get_config as camvid_config
    for split in ("train", "val"):
        camvid_tree(tmp_path / "cv", split)
    cfg = camvid_config()
    cfg.data.root = str(tmp_path / "cv")
    check_config(cfg)

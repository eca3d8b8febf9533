"""Dataset configs (official recipes) and the trainer on real video files: list-file data through
the robust Grain pipeline, bad videos counted, exact resume with the pipeline's state, multi-view
evaluation."""

import importlib
import itertools
import pathlib
import shutil

import numpy as np
import pytest

from everest_jax import checkpoint, train
from everest_jax.config import ConfigError
from everest_jax.data import SyntheticVideos, encode

DATASETS = ("ucf101", "hmdb51", "k400", "ssv2")
# (pre-training epochs, fine-tuning epochs, train videos, test clips, sampling, flip)
EXPECTED = {"ucf101": (3200, 100, 9537, 5, "stride", True), "hmdb51": (4800, 50, 3570, 10, "stride", True),
            "k400": (800, 75, 240_436, 5, "stride", True), "ssv2": (800, 40, 168_913, 2, "segment", False)}


def recipe(dataset, arg=""):
    return importlib.import_module(f"configs.{dataset}").get_config(arg)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Synthetic clips (4 motion directions) encoded as MP4, one corrupt file, train/test lists."""
    root = tmp_path_factory.mktemp("videos")
    videos = SyntheticVideos(num_examples=16, num_frames=20, image_size=(72, 96), seed=3)
    lines = []
    for i in range(len(videos)):
        ex = videos[i]
        encode.write_video(root / f"clip{i}.mp4", ex["video"], gop=5)
        lines.append(f"clip{i}.mp4 {ex['label']}\n")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "train.txt").write_text("".join(lines[:11]) + "corrupt.mp4 1\n")
    (root / "test.txt").write_text("".join(lines[11:]))
    return root


def on_tree(config, tree):
    config.data.update(root=str(tree), train_list=str(tree / "train.txt"), eval_list=str(tree / "test.txt"),
                       max_bad_fraction=0.2)
    return config


@pytest.mark.parametrize("dataset,job,method,size", list(itertools.product(
    DATASETS, ("pretrain", "finetune", "evaluate"), ("everest", "videomae"), ("S", "B", "L"))))
def test_every_recipe_config_is_the_official_one_and_validates(dataset, job, method, size, tree):
    config = recipe(dataset, f"job={job},method={method},size={size}")
    pre_epochs, ft_epochs, videos, clips, sampling, flip = EXPECTED[dataset]
    pretrain = job == "pretrain"
    steps_per_epoch = videos // config.batch_size
    assert config.total_steps == (pre_epochs if pretrain else ft_epochs) * steps_per_epoch
    assert config.warmup_steps == (40 if pretrain else 5) * steps_per_epoch
    o = config.optimizer
    assert (o.base_lr, o.warmup_lr, o.weight_decay, o.b1) == (1e-3, 1e-6, 0.05, 0.9)
    assert (o.b2, o.min_lr, o.layer_decay) == ((0.95, 1e-5, 1.0) if pretrain else (0.999, 1e-6, 0.75))
    assert config.model.drop_path == (0.0 if pretrain else 0.1)
    assert config.label_smoothing == (0.0 if pretrain else 0.1)
    assert config.model.masking == ("everest" if method == "everest" else "tube")
    assert config.model.finetune_keep_ratio == (0.6 if method == "everest" else 1.0)
    assert (config.model.size, config.model.num_frames, tuple(config.model.image_size)) == (size, 16, (224, 224))
    assert (config.eval.num_clips, config.eval.num_crops) == (clips, 3)
    assert (config.data.sampling, config.data.flip) == (sampling, flip)
    if job == "evaluate":
        config.init_from = str(tree)  # validation only checks that it exists
    model = train.validate(on_tree(config, tree), num_devices=8)
    assert model.num_classes == (0 if pretrain else config.data.num_classes)


def test_local_switch_and_batch_argument_rescale_the_run():
    config = recipe("ucf101", "job=finetune,local=1")
    assert (config.model.size, config.model.num_frames, config.batch_size) == ("tiny", 8, 8)
    assert recipe("hmdb51", "batch=512").total_steps == 4800 * (3570 // 512)
    with pytest.raises(ValueError, match="method"):
        recipe("ucf101", "method=mae")


def test_data_refusals_name_the_field_and_the_line(tree, tmp_path):
    config = recipe("ucf101", "local=1")
    with pytest.raises(ConfigError, match="data.train_list is empty"):
        train.validate(config, num_devices=8)
    config.data.train_list = str(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="data.train_list.*does not exist"):
        train.validate(config, num_devices=8)
    bad = tmp_path / "bad.txt"
    bad.write_text("clip0.mp4 1\nclip1.mp4\n")
    config.data.train_list = str(bad)
    with pytest.raises(ConfigError, match=r"data.train_list.*bad.txt:2"):
        train.validate(config, num_devices=8)
    config = on_tree(recipe("ucf101", "job=finetune,local=1"), tree)
    config.data.eval_list = ""
    with pytest.raises(ConfigError, match="data.eval_list is empty"):
        train.validate(config, num_devices=8)
    config.data.update(name="tfds", tfds_name="")
    with pytest.raises(ConfigError, match="data.tfds_name"):
        train.validate(config, num_devices=8)


def local_run(tree, job, **overrides):
    config = on_tree(recipe("ucf101", f"job={job},local=1,batch=8"), tree)
    config.update(total_steps=4, warmup_steps=1, log_every=2)
    config.checkpoint.update(every_steps=2, async_save=False)
    config.eval.update(num_clips=2, num_crops=3)
    config.update_from_flattened_dict(overrides)
    return config


def test_video_files_train_resume_exactly_and_report_the_bad_video(tree, tmp_path):
    """4 steps of pre-training on the list (32 clips drawn from 12 entries, one corrupt); then the
    last checkpoint is removed, as if the run had been killed after step 2, and the same command
    continues from step 2 with the pipeline's saved state to the same parameters."""
    workdir = tmp_path / "run"
    first = train.run(local_run(tree, "pretrain"), str(workdir))
    assert first["step"] == 4 and first["bad_videos"] == 1 and first["replaced_examples"] >= 1
    assert np.isfinite(first["loss"])
    _, _, straight = checkpoint.load_params(workdir / "final")

    shutil.rmtree(workdir / "checkpoints" / "4")
    resumed = train.run(local_run(tree, "pretrain"), str(workdir))
    assert resumed["step"] == 4
    _, _, params = checkpoint.load_params(workdir / "final")
    flat_a, flat_b = (dict(_flatten(p)) for p in (straight, params))
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def test_finetune_on_video_files_evaluates_every_test_video_with_multi_view(tree, tmp_path):
    final = train.run(local_run(tree, "finetune", total_steps=2), str(tmp_path / "ft"))
    assert final["eval_videos"] == 5  # every line of test.txt, each as 2 clips x 3 crops
    assert 0.0 <= final["eval_top1"] <= final["eval_top5"] <= 1.0
    assert final["bad_videos"] == 1


def _flatten(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", np.asarray(v)

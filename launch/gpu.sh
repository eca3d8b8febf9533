#!/usr/bin/env bash
# GPU launcher: one multi-GPU machine, or several nodes under SLURM.
#
#   launch/gpu.sh --workdir /ckpt/run -- --config configs/ucf101.py:size=B ...          # this machine
#   launch/gpu.sh --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00 \
#                 --workdir /shared/ckpt/run -- --config configs/k400.py:size=L ...     # SLURM, 32 GPUs
#   launch/gpu.sh --method vared --workdir /ckpt/r21d -- --config configs/vared_kinetics.py ...
#
# --method everest|vared|stmg (default everest) runs `python -m <method>_jax.main`. On one machine
# JAX drives every local GPU from one process, so that is the whole command. Under SLURM, one
# process per node is started by `srun` (the job script is written to stdout with --dry-run, else
# submitted with sbatch); EVEREST_DISTRIBUTED=1 makes <method>_jax.main call
# jax.distributed.initialize(), which reads the coordinator, process count and process id from
# SLURM's environment. The workdir must be on storage every node sees.
set -euo pipefail

die() { echo "gpu.sh: $*" >&2; exit 2; }

nodes=1 gpus=8 partition="" time_limit="" workdir="" method=everest dry_run=0
main_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="${2:-}"; shift 2 ;;
    --gpus-per-node) gpus="${2:-}"; shift 2 ;;
    --partition) partition="${2:-}"; shift 2 ;;
    --time) time_limit="${2:-}"; shift 2 ;;
    --workdir) workdir="${2:-}"; shift 2 ;;
    --method) method="${2:-}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; main_args=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes '$nodes' must be a positive integer"
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node '$gpus' must be a positive integer"
[[ -n "$workdir" ]] || die "--workdir is required"
[[ "$method" =~ ^(everest|vared|stmg)$ ]] || die "--method '$method' must be everest, vared or stmg"
[[ ${#main_args[@]} -gt 0 ]] || die "give the training arguments after --, e.g. -- --config configs/quickstart.py"

train=(python -m "${method}_jax.main" --workdir "$workdir" "${main_args[@]}")
if [[ "$nodes" -eq 1 ]]; then
  printf '+'; printf ' %q' "${train[@]}"; printf '\n'
  [[ "$dry_run" -eq 1 ]] || exec "${train[@]}"
  exit 0
fi

[[ -n "$partition" ]] || die "--partition is required for a multi-node SLURM run"
script="#!/usr/bin/env bash
#SBATCH --job-name=everest-jax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus
#SBATCH --partition=$partition
${time_limit:+#SBATCH --time=$time_limit
}#SBATCH --output=everest-%j.log
cd $(printf %q "$(cd "$(dirname "$0")/.." && pwd)")
export EVEREST_DISTRIBUTED=1
srun$(printf ' %q' "${train[@]}")"
if [[ "$dry_run" -eq 1 ]]; then
  echo "$script"
else
  echo "$script" | sbatch
fi

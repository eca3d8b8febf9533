#!/usr/bin/env bash
# Cloud TPU VM launcher: create (or reuse) a TPU VM or pod slice, put the code on every worker,
# install jax[tpu] and the requirements there, and run the same training command on all workers.
#
#   launch/tpu_vm.sh up   --name everest --zone us-central2-b --accelerator-type v4-32 \
#                         --version tpu-ubuntu2204-base [--project P] [--repo URL [--ref REF]]
#   launch/tpu_vm.sh run  --name everest --zone us-central2-b --accelerator-type v4-32 \
#                         --workdir gs://bucket/runs/ucf_pre -- --config configs/ucf101.py:size=B ...
#   launch/tpu_vm.sh logs|stop|delete --name everest --zone us-central2-b
#
# `run --method everest|vared|stmg` (default everest) picks the program: `python -m <method>_jax.main`.
#
# Every command takes --dry-run: print each gcloud command instead of running it. Arguments are
# checked before anything is created: a missing --name/--zone, a zone that is not like
# us-central2-b, an unknown accelerator type, or a workdir that is not gs:// on a multi-host slice
# stop the script with one line, so no money is spent on a launch that cannot work.
#
# "Did you run your code on all TPU hosts?": on a pod slice every host must start the same
# program, or jax.distributed waits for the missing ones until it times out. This script always
# uses --worker=all (one ssh command that reaches every host), and starts the training detached
# (nohup, log in ~/everest.log on every worker) so that a dropped ssh session does not kill one
# host's process. EVEREST_DISTRIBUTED=1 makes <method>_jax.main call jax.distributed.initialize(),
# which on Cloud TPU finds the coordinator and process ids by itself.
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

command_name="${1:-}"
[[ -n "$command_name" ]] || { usage; exit 2; }
shift
case "$command_name" in
  up|run|logs|stop|delete) ;;
  -h|--help|help) usage; exit 0 ;;
  *) die "unknown command '$command_name' (up, run, logs, stop, delete)" ;;
esac

name="" zone="" accelerator="" version="tpu-ubuntu2204-base" project="" repo="" ref="main" workdir="" method=everest
dry_run=0
main_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="${2:-}"; shift 2 ;;
    --zone) zone="${2:-}"; shift 2 ;;
    --accelerator-type) accelerator="${2:-}"; shift 2 ;;
    --version) version="${2:-}"; shift 2 ;;
    --project) project="${2:-}"; shift 2 ;;
    --repo) repo="${2:-}"; shift 2 ;;
    --ref) ref="${2:-}"; shift 2 ;;
    --workdir) workdir="${2:-}"; shift 2 ;;
    --method) method="${2:-}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; main_args=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done

[[ -n "$name" ]] || die "--name is required"
[[ "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$name' must be lower-case letters, digits and dashes"
[[ -n "$zone" ]] || die "--zone is required (e.g. us-central2-b)"
[[ "$zone" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone '$zone' is not a zone like us-central2-b"

# Hosts of a slice: v2/v3/v4/v5p types count TensorCores, 8 per host; v5litepod/v6e count chips,
# one host up to 8 chips, 4 chips per host beyond.
hosts_of() {
  local family="${1%-*}" size="${1##*-}"
  case "$family" in
    v2|v3|v4|v5p) echo $(( size > 8 ? size / 8 : 1 )) ;;
    v5litepod|v6e) echo $(( size > 8 ? size / 4 : 1 )) ;;
  esac
}

if [[ "$command_name" == up || "$command_name" == run ]]; then
  [[ -n "$accelerator" ]] || die "--accelerator-type is required (e.g. v4-8, v5litepod-16)"
  [[ "$accelerator" =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-[0-9]+$ ]] \
    || die "--accelerator-type '$accelerator' is not one of v2-N, v3-N, v4-N, v5p-N, v5litepod-N, v6e-N"
  hosts="$(hosts_of "$accelerator")"
fi
if [[ "$command_name" == run ]]; then
  [[ -n "$workdir" ]] || die "--workdir is required"
  [[ "$method" =~ ^(everest|vared|stmg)$ ]] || die "--method '$method' must be everest, vared or stmg"
  if [[ "$hosts" -gt 1 && "$workdir" != gs://* ]]; then
    die "--workdir '$workdir' must be a gs:// path on a multi-host slice ($accelerator has $hosts hosts)"
  fi
  [[ ${#main_args[@]} -gt 0 ]] || die "give the training arguments after --, e.g. -- --config configs/quickstart.py"
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -z "$project" ]] || where+=(--project="$project")

run() {
  # Print the command (shell-quoted); execute it unless --dry-run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ "$dry_run" -eq 1 ]] || "$@"
}

on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$1"
}

case "$command_name" in
  up)
    if [[ "$dry_run" -eq 0 ]] && "${gcloud_tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
      echo "reusing TPU VM $name"
    else
      run "${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" --version="$version"
    fi
    if [[ -n "$repo" ]]; then
      on_all_workers "rm -rf everest-jax && git clone --depth 1 --branch $(printf %q "$ref") $(printf %q "$repo") everest-jax"
    else  # copy this checkout (tracked files) to every worker
      archive="$(mktemp -t everest-jax.XXXXXX).tar.gz"
      run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
      run "${gcloud_tpu[@]}" scp "$archive" "$name:everest-jax.tar.gz" "${where[@]}" --worker=all
      on_all_workers "rm -rf everest-jax && mkdir everest-jax && tar -xzf everest-jax.tar.gz -C everest-jax"
    fi
    on_all_workers "cd everest-jax && python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip \
&& pip install -q -r requirements.txt 'jax[tpu]' && pip install -q -e . --no-deps"
    ;;
  run)
    quoted="$(printf ' %q' "${main_args[@]}")"
    on_all_workers "cd everest-jax && . .venv/bin/activate && EVEREST_DISTRIBUTED=$(( hosts > 1 ? 1 : 0 )) \
nohup python -m ${method}_jax.main --workdir $(printf %q "$workdir")$quoted > ~/everest.log 2>&1 &"
    echo "started on $hosts host(s); follow with: $0 logs --name $name --zone $zone"
    ;;
  logs)
    run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command="tail -n 50 -f ~/everest.log"
    ;;
  stop)
    on_all_workers "pkill -f '_jax[.]main --workdir' || true"
    ;;
  delete)
    run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet
    ;;
esac

#!/usr/bin/env bash
# The GPU checks and benchmarks of one short session on a CUDA machine, from the repository root.
#
#   benchmarks/gpu_session.sh check OUT          # ~4 min: the device tests, env throughput, step cost,
#                                                # and a 40-step timing of every row of the gpu profile
#   benchmarks/gpu_session.sh reproduce OUT [S] [ARGS...]
#                                                # the gpu profile of benchmarks/reproduce.py as 3
#                                                # processes (one per seed) on the one GPU; no run starts
#                                                # after S seconds (default 320); then the report. ARGS go
#                                                # to every reproduce.py call (e.g. --set train.steps=800)
#
# Everything it measures lands in OUT: logs, JSON, and gpu_results.tar.gz (the reproduction's tables,
# plots and per-run JSON; checkpoints left out). Steps that fail are reported and the script goes on.
set -u
mode=${1:?usage: gpu_session.sh check|reproduce OUT [budget_s]}
out=${2:?usage: gpu_session.sh check|reproduce OUT [budget_s]}
budget=${3:-320}
extra=("${@:4}")
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

step() {  # step NAME TIMEOUT_S CMD...: run, log to OUT/NAME.log, say how it ended
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.log"
}

case $mode in
check)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/summary.txt"
  $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' | tee -a "$out/summary.txt"
  # The tests that take the --device fixture, on the GPU (8 workers).
  step pytest_cuda 170 $py -m pytest -q -p no:cacheprovider -n 8 --device cuda \
    $(grep -l "device: torch.device" tests/test_*.py)
  step env_throughput 110 $py benchmarks/env_throughput.py --quick --sizes 256,1024,4096 --device cuda \
    --json "$out/env_throughput_cuda.json"
  step step_cost 60 $py benchmarks/step_cost.py --device cuda --batch-size 256 --rounds 3 --steps 5 \
    --json "$out/step_cost_cuda.json"
  step reproduce_timing 150 $py benchmarks/reproduce.py --profile gpu --seeds 0 --set train.steps=40 \
    --set curve_points=0 --no-plots --out /tmp/reproduce_timing
  for f in /tmp/reproduce_timing/*/s0o0/metrics.jsonl; do
    echo "$f: $(tail -n 1 "$f" | $py -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_s"]), "images/s")')"
  done | tee -a "$out/summary.txt"
  ;;
reproduce)
  for seed in 0 1 2; do
    $py benchmarks/reproduce.py --profile gpu --seeds $seed --time-budget "$budget" --no-plots \
      --out /tmp/reproduce_gpu "${extra[@]}" >"$out/seed$seed.log" 2>&1 &
  done
  wait
  tail -n 4 "$out"/seed*.log
  step report 120 $py benchmarks/reproduce.py --profile gpu --report-only --out /tmp/reproduce_gpu \
    "${extra[@]}"
  tar czf "$out/gpu_results.tar.gz" --exclude='*.pt' -C /tmp reproduce_gpu
  ;;
*)
  echo "unknown mode $mode (check, reproduce)" >&2
  exit 2
  ;;
esac

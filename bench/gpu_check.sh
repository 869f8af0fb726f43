#!/usr/bin/env bash
# The one prepared GPU check: everything a lent GPU machine should measure, in one call
# of at most 8 minutes, every figure as JSON under bench/results/ (device name in the file
# names and in the JSON), a summary in bench/results/gpu_check-<device>.json.
#
#   bench/gpu_check.sh --prepare   # HERE, before the call: copies ../shared's CIFAR-10 archive
#                                  # and its converter into .bench-data/shared (git-ignored)
#   bench/gpu_check.sh --dry-run   # what it would run, and each part's time budget
#   bench/gpu_check.sh             # ON THE GPU MACHINE: the device tool's run with
#                                  # carry: [".bench-data/shared"], timeout_s: 540
#
# The GPU machine has torch, numpy, pyyaml, matplotlib, pandas, pytest, no Ray, no Optuna
# and no package registry: raylth is installed with --no-deps (or used from the tree), and
# everything here runs the engine and the stages without Ray. device_tests: the
# determinism, resume and masking tests on CUDA (tests/devices.py: deterministic
# algorithms, so their bitwise assertions hold unchanged there). A part that fails or runs
# out of its budget is recorded as such; the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SHARED=.bench-data/shared/data
RESULTS=${GPU_CHECK_OUT:-bench/results}

# name | budget (s) | command
PARTS=(
  "install|20|pip install --no-deps --no-build-isolation -q -e . || echo 'pip failed: using the tree on PYTHONPATH'"
  "data|60|python bench/common.py --build-cifar full"
  "gpu_tests|50|python -m pytest -q -o addopts= -m gpu -p no:cacheprovider tests/test_cifar_stages.py tests/test_data.py"
  "device_tests|40|RAYLTH_TEST_DEVICE=cuda python -m pytest -q -o addopts= -m device_portable -p no:cacheprovider tests/test_training.py tests/test_masks.py"
  "epoch_time|130|python bench/epoch_time.py --full --device cuda --compile --repeats 2 --warmup 1 --out $RESULTS"
  "packing|60|python bench/packing.py --full --device cuda --backend processes --repeats 1 --warmup 0 --out $RESULTS"
  "mtt_memory|40|python bench/mtt_memory.py --full --device cuda --out $RESULTS"
  "gpu_study|80|python bench/gpu_study.py --full --device cuda --out $RESULTS"
)

total=0
for part in "${PARTS[@]}"; do total=$((total + $(cut -d'|' -f2 <<<"$part"))); done

case "${1:-}" in
  --prepare)
    mkdir -p "$SHARED"
    cp ../shared/data/cifar10-jpg.tar.xz ../shared/data/cifar10_from_jpg.py "$SHARED/"
    du -sh "$SHARED"
    echo "carry .bench-data/shared with the device call"
    exit 0 ;;
  --dry-run)
    for part in "${PARTS[@]}"; do
      IFS='|' read -r name budget cmd <<<"$part"
      printf '%-12s %4ss  %s\n' "$name" "$budget" "$cmd"
    done
    echo "total budget: ${total}s (limit 480s)"
    [ "$total" -le 480 ] || { echo "over the 8-minute budget" >&2; exit 1; }
    exit 0 ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--prepare|--dry-run]" >&2; exit 2 ;;
esac

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export RAYLTH_CIFAR_JPG_SCRIPT="$REPO/$SHARED/cifar10_from_jpg.py"
mkdir -p "$RESULTS"
log=$(mktemp -d)
status=()
for part in "${PARTS[@]}"; do
  IFS='|' read -r name budget cmd <<<"$part"
  echo "=== $name (budget ${budget}s): $cmd"
  start=$(date +%s.%N)
  timeout "$budget" bash -c "$cmd" > "$log/$name.log" 2>&1
  rc=$?
  wall=$(python -c "import sys; print(round($(date +%s.%N) - $start, 1))")
  tail -n 15 "$log/$name.log"
  status+=("$name|$rc|$wall|$budget")
done
python bench/common.py --summary "$RESULTS" "$log" "${status[@]}"

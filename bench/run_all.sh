#!/usr/bin/env bash
# Run every benchmark with the same arguments, e.g.
#   bench/run_all.sh --small                 # CPU-friendly sizes
#   bench/run_all.sh --device cuda           # full sizes on a GPU
#   bench/run_all.sh --data-root /data --repeats 5
# Arguments every script takes: --small|--full --device --data-root --repeats
# --warmup --num-workers --threads --out. Results: bench/results/*.json.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
for name in epoch_time packing lmc_sharpness quickstart_breakdown distilled_vs_imp; do
  echo "=== $name $*"
  python "bench/$name.py" "$@" || failed+=("$name")
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Rebuild docs/paper_cpu from scratch on a CPU: converts the CIFAR-10 copy in ../shared/data
# (500 images per class per split), runs sweeps/paper_cpu_cifar10.yaml into its own store and
# writes the report and the results table beside this script. Rerunning reuses every stored result;
# on the same machine (CPU, float32, one thread a job) a fresh store gives the same table.
set -euo pipefail
cd "$(dirname "$0")/../.."
STORE=${STORE:-raylth-results/paper_cpu}
if [ ! -f data/cifar10-500pc/cifar-10-batches-py/test_batch ]; then
  python ../shared/data/cifar10_from_jpg.py data/cifar10-500pc --limit-per-class 500
fi
time raylth run sweeps/paper_cpu_cifar10.yaml --storage "$STORE"
rm -rf docs/paper_cpu/report
raylth report "$STORE" --sweep paper_cpu_cifar10 --out docs/paper_cpu/report
raylth results "$STORE" --sweep paper_cpu_cifar10 > docs/paper_cpu/results.txt

#!/usr/bin/env bash
# The CUDA paths end to end and the README's GPU figures, in at most ~8 minutes on one GPU; on a
# CPU machine the same steps on a tiny model, CUDA parts skipped with a line saying so.
#   bash benchmarks/gpu_check.sh [--out DIR] [--contexts N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"

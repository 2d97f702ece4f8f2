#!/usr/bin/env bash
# What a GPU user needs to know, in at most 8 minutes on one H100 (benchmarks/gpu_check.py says
# what each part measures); on a CPU every part runs on a tiny model, saying what it skipped.
#   bash benchmarks/gpu_check.sh [--quick] [--out gpu_check.json] [--work_dir DIR] [--tiny]
# Needs only: pip install -r requirement.txt -r requirements-dev.txt && pip install -e .
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
"${PYTHON:-python}" benchmarks/gpu_check.py "$@"
rc=$?
echo "gpu_check.sh: $(( $(date +%s) - start )) s in all (exit status $rc)"
exit $rc

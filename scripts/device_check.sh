#!/usr/bin/env bash
# The prepared GPU check (issue 14): tests marked cuda, training at batch 128 / 256 px with AMP for a
# time budget, export, scoring of the packed DAVIS-2016 sequences on the GPU, the engine benchmark;
# at most 9 minutes. Runs from the source tree (PYTHONPATH), never installs anything.
# Usage: bash scripts/pack_device_data.sh            # once, where the shared data is: -> device_data/
#        bash scripts/device_check.sh [--smoke] [--data device_data] [--budget-s 510] [--work DIR]
# Output: $OUT (default ./device_out): summary.json, train_log.csv, train_run.json, encoder.pth,
# per-sequence_results.csv, bench.json, device_check.log. --smoke: the same stages on the CPU with a
# tiny budget (a few minutes). Interpreter: $PYTHON (default python3). See scripts/device_check.py.
set -euo pipefail
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
    export OUT
fi
PYTHON="${PYTHON:-python3}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"  # a tool of the checkout: device_data/ and scripts/ are the repository's
exec "$PYTHON" scripts/device_check.py "$@"

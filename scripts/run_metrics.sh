#!/usr/bin/env bash
# Score predictions with the DAVIS metrics (J, F, J&F).
# Usage: bash scripts/run_metrics.sh MODEL BENCHMARK [--sequences a,b] [--results-dir results]
#                                     [--data-root PATH] [--overwrite]
# Reads results/MODEL/BENCHMARK/<sequence>/<frame>.png and writes global_results.csv and
# per-sequence_results.csv next to them (see python -m label_prop.evaluate --help).
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: bash scripts/run_metrics.sh MODEL BENCHMARK [--sequences a,b] [--results-dir results] [--data-root PATH] [--overwrite]" >&2
    exit 2
fi

# Relative paths in $HVC_DATA_ROOT are taken from the caller's directory.
if [ -n "${HVC_DATA_ROOT:-}" ] && [ -d "$HVC_DATA_ROOT" ]; then
    HVC_DATA_ROOT="$(cd "$HVC_DATA_ROOT" && pwd)"
    export HVC_DATA_ROOT
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
exec "$PYTHON" -m label_prop.evaluate "$@"

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

source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.evaluate "$@"

#!/usr/bin/env bash
# Score predictions with the DAVIS metrics (J, F, J&F).
# Usage: bash scripts/run_metrics.sh MODEL BENCHMARK [--sequences a,b | --split dev|heldout]
#        [--results-dir results] [--data-root PATH] [--overwrite]   (--help: every option)
# MODEL as given to run_test.sh (a .pth path maps to its stem). Reads
# results/<model name>/BENCHMARK/<sequence>/<frame>.png and writes global_results.csv and
# per-sequence_results.csv next to them.
set -euo pipefail

if [ "$#" -lt 2 ] && [[ " $* " != *" -h "* && " $* " != *" --help "* ]]; then
    echo "usage: bash scripts/run_metrics.sh MODEL BENCHMARK [options]   (bash scripts/run_metrics.sh --help: every option)" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.evaluate "$@"

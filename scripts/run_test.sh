#!/usr/bin/env bash
# Segment a benchmark by label propagation from the first-frame masks.
# Usage: bash scripts/run_test.sh MODEL BENCHMARK [--sequences a,b] [--overwrite] [--save-overlays]
#        [--data-root PATH] [--results-dir results] [--n-context 50] ... (python -m label_prop.run --help)
# MODEL: 'random' or a name resolved to checkpoints/MODEL.pth.
# BENCHMARK: davis16, davis17, davis17dev, ytvos18, ytvos19, or a filelist (data/filelists/NAME or a .txt path).
# Data from $HVC_DATA_ROOT (default ./data); results in results/MODEL/BENCHMARK/<sequence>/*.png.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: bash scripts/run_test.sh MODEL BENCHMARK [--sequences a,b] [--overwrite] [--save-overlays] (see python -m label_prop.run --help)" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.run "$@"

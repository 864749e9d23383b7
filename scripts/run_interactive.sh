#!/usr/bin/env bash
# Interactive segmentation scored with a local robot after the DAVIS interactive protocol.
# Usage: bash scripts/run_interactive.sh MODEL BENCHMARK [--sequences a,b] [--interactions 8]
#        [--frame-choice worst|recommended] [--input-size -1] [--n-context 50] ...
#        (--help: every option)
# BENCHMARK: davis16 or davis17 (ground truth for every frame). Data from $HVC_DATA_ROOT (default ./data).
# Writes results/MODEL/interactive/BENCHMARK/FRAME_CHOICE/interactive_results.csv (+ summary JSON, final masks)
# and prints J&F per interaction, AUC-J&F over interactions and over time, and J&F@60s.
set -euo pipefail

if [ "$#" -lt 2 ] && [[ " $* " != *" -h "* && " $* " != *" --help "* ]]; then
    echo "usage: bash scripts/run_interactive.sh MODEL BENCHMARK [options]   (bash scripts/run_interactive.sh --help: every option)" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.interactive.run "$@"

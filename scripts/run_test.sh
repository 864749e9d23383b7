#!/usr/bin/env bash
# Segment a benchmark by label propagation from the first-frame masks.
# Usage: bash scripts/run_test.sh MODEL BENCHMARK [--sequences a,b] [--overwrite | --resume] [--save-overlays]
#        [--data-root PATH] [--results-dir results] [--n-context 50] ...   (--help: every option)
# MODEL: 'random', a name resolved to checkpoints/MODEL.pth, or a .pth path (results/<its stem>/...).
# BENCHMARK: davis16, davis17, davis17dev, ytvos18, ytvos19, or a filelist (data/filelists/NAME or a .txt path).
# Data from $HVC_DATA_ROOT (default ./data); results in results/<model name>/BENCHMARK/<sequence>/*.png.
# --shard I/N runs shard I (0 <= I < N) of the sequences; several GPUs or nodes: torchrun
# --nproc_per_node N -m label_prop.run MODEL BENCHMARK ... (one shard per rank; README "GPU and multi-GPU").
set -euo pipefail

if [ "$#" -lt 2 ] && [[ " $* " != *" -h "* && " $* " != *" --help "* ]]; then
    echo "usage: bash scripts/run_test.sh MODEL BENCHMARK [options]   (bash scripts/run_test.sh --help: every option)" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.run "$@"

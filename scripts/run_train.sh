#!/usr/bin/env bash
# Train the HVC encoder (self-supervised, no labels). Thin wrapper over `python -m hvc.train`.
# Usage: bash scripts/run_train.sh --output-dir runs/NAME [--mode video|images] [--data PATH]
#                                  [--steps N | --epochs E] [--batch-size 128] [--img-size 256]
#                                  [--resume auto] [--amp/--no-amp] ...   (python -m hvc.train --help)
# All arguments are passed through. Without --data, the data is
# ${HVC_DATA_ROOT:-./data}/unlabeled-video (a relative HVC_DATA_ROOT is taken from the caller's
# directory). Relative paths in the arguments are taken from the repository root.
# Then export the encoder: python -m hvc.export runs/NAME/checkpoint.pth checkpoints/NAME.pth
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

has_data=0
for arg in "$@"; do
    case "$arg" in
        --data|--data=*) has_data=1 ;;
    esac
done
extra=()
if [ "$has_data" -eq 0 ]; then
    extra=(--data "${HVC_DATA_ROOT:-./data}/unlabeled-video")
fi
exec "$PYTHON" -m hvc.train "${extra[@]}" "$@"

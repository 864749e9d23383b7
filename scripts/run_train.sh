#!/usr/bin/env bash
# Train the HVC encoder (self-supervised, no labels). Thin wrapper over `python -m hvc.train`.
# Usage: bash scripts/run_train.sh --output-dir runs/NAME [--preset cpu-1h] [--mode video|images]
#                                  [--data PATH] [--steps N | --epochs E] [--batch-size 128]
#                                  [--img-size 256] [--resume auto] [--amp/--no-amp] ...
#                                  [--nproc-per-node N]       (python -m hvc.train --help)
# All arguments are passed through. Without --data, the data is
# ${HVC_DATA_ROOT:-./data}/unlabeled-video (a relative HVC_DATA_ROOT is taken from the caller's
# directory), as are relative paths in the arguments.
# --nproc-per-node N (this wrapper's only own flag) starts N processes on this machine with
# torchrun (`python -m torch.distributed.run --standalone --nproc_per_node N -m hvc.train ...`);
# --batch-size stays the global batch. For several nodes, put torchrun's rendezvous flags in
# $HVC_TORCHRUN_ARGS (they replace --standalone), e.g. on each of 2 nodes:
#   HVC_TORCHRUN_ARGS="--nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id ID" \
#     bash scripts/run_train.sh --nproc-per-node 8 --output-dir runs/NAME
# Then export the encoder: python -m hvc.export runs/NAME/checkpoint.pth checkpoints/NAME.pth
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

has_data=0
nproc=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help)
            echo "bash scripts/run_train.sh [--nproc-per-node N] [options of python -m hvc.train, below]"
            echo "  --nproc-per-node N    start N training processes on this machine with torchrun; --batch-size"
            echo "                        stays the global batch (default: one process, without torchrun)"
            echo "  --data defaults to \${HVC_DATA_ROOT:-./data}/unlabeled-video"
            echo
            exec "$PYTHON" -m hvc.train --help ;;
        --nproc-per-node)
            [ $# -ge 2 ] || { echo "run_train.sh: --nproc-per-node needs a number" >&2; exit 2; }
            nproc="$2"; shift 2; continue ;;
        --nproc-per-node=*) nproc="${1#*=}"; shift; continue ;;
        --data|--data=*) has_data=1 ;;
    esac
    args+=("$1")
    shift
done
if [ -n "$nproc" ] && ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
    echo "run_train.sh: --nproc-per-node must be a positive integer, got '$nproc'" >&2
    exit 2
fi
extra=()
if [ "$has_data" -eq 0 ]; then
    extra=(--data "${HVC_DATA_ROOT:-./data}/unlabeled-video")
fi
if [ -n "$nproc" ] || [ -n "${HVC_TORCHRUN_ARGS:-}" ]; then
    # shellcheck disable=SC2206  # HVC_TORCHRUN_ARGS is a list of flags, split on spaces on purpose
    launcher=(-m torch.distributed.run ${HVC_TORCHRUN_ARGS:---standalone} --nproc_per_node "${nproc:-1}")
    exec "$PYTHON" "${launcher[@]}" -m hvc.train "${extra[@]}" "${args[@]}"
fi
exec "$PYTHON" -m hvc.train "${extra[@]}" "${args[@]}"

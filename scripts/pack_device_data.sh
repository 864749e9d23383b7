#!/usr/bin/env bash
# Pack a subset of the shared data into device_data/ (ignored by git) for scripts/device_check.sh:
# all 2086 unlabeled training frames re-encoded as JPEG quality 70, and five DAVIS-2016 val
# sequences with their ground truth; prints the sizes (tree + data must stay under 64 MiB).
# Usage: bash scripts/pack_device_data.sh [--data-root PATH] [--out device_data] [--quality 70]
#                                         [--sequences a,b] [--limit-mib 64]
# Data from $HVC_DATA_ROOT (default ../shared/data). See scripts/pack_device_data.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"  # a tool of the checkout: device_data/ is the repository's
exec "$PYTHON" scripts/pack_device_data.py "$@"

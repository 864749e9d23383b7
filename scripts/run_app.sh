#!/usr/bin/env bash
# Interactive segmentation in the browser: serves the app on http://127.0.0.1:8765/ (docs/app.md).
# Usage: bash scripts/run_app.sh [--model random] [--root DIR ...] [--host 127.0.0.1] [--port 8765]
#        [--input-size 240] [--n-context 20] ...   (--help: every option)
# Default root: $HVC_DATA_ROOT (else ./data). Only files under the roots can be opened.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYTHON" -m label_prop.app "$@"

# Sourced by the scripts/run_*.sh wrappers: make $HVC_DATA_ROOT absolute (a relative value is
# taken from the caller's directory), move to the repository root and pick the interpreter
# ($PYTHON, default python).
if [ -n "${HVC_DATA_ROOT:-}" ] && [ -d "$HVC_DATA_ROOT" ]; then
    HVC_DATA_ROOT="$(cd "$HVC_DATA_ROOT" && pwd)"
    export HVC_DATA_ROOT
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

# Sourced by the scripts/run_*.sh wrappers: the repository root ($REPO_ROOT) goes first on
# PYTHONPATH, so the package runs from this checkout whether installed or not, and the caller's
# working directory is kept: every relative path (MODEL .pth, --results-dir, a filelist,
# $HVC_DATA_ROOT) means what it means where the command was typed, as with python -m.
# The interpreter is $PYTHON (default python).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"

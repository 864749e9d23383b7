"""What both packages need at run time: atomic writes, the device, the git revision, the
exit-code convention of every command line, and the peak memory of the process.

Exit codes (every ``python -m hvc.*`` and ``python -m label_prop.*`` command):

* ``0`` -- done;
* ``1`` -- bad data: a missing, unreadable or inconsistent input file (frames, masks, lists,
  checkpoints, datasets); raised as :class:`FileNotFoundError` or :class:`ValueError`;
* ``2`` -- usage error: the command line itself is wrong (an invalid or contradictory option
  value, an unknown name, a device this machine lacks, an output that exists without
  ``--overwrite``); raised as :class:`UsageError` or :class:`FileExistsError`. argparse's own
  errors exit with 2 too.

Expected failures print one line, ``PROG: error: MESSAGE``, and no traceback (:func:`run_cli`);
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Union

import torch

PathLike = Union[str, os.PathLike]

#: Exit statuses of the command lines (see the module docstring).
EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2

REPO_ROOT = Path(__file__).resolve().parents[1]


class UsageError(ValueError):
    """The command line (or a caller's arguments) is wrong, independently of any data file; the
    message names the option and the accepted values. A command line exits with 2 on it."""


def exit_status(exc: BaseException) -> int:
    """The exit status for an expected failure: 2 for :class:`UsageError` and
    :class:`FileExistsError` (fix the command line), 1 for anything else (bad data)."""
    return EXIT_USAGE if isinstance(exc, (UsageError, FileExistsError)) else EXIT_DATA


def run_cli(prog: str, job: Callable[[], Optional[int]]) -> int:
    """Run a command's body and turn its expected failures into one line and an exit status.

    Args:
        prog: the command's name for the message (``python -m label_prop.run`` ...).
        job: the body; returns an exit status or None (= 0).

    Returns:
        ``job``'s status; on :class:`ValueError` (:class:`UsageError` included),
        :class:`FileNotFoundError` or :class:`FileExistsError` the line ``PROG: error: MESSAGE``
        is printed on stderr and :func:`exit_status` returned. Other exceptions propagate.
    """
    try:
        status = job()
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    return EXIT_OK if status is None else status


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename the result to ``path``.

    The temporary file ``.<name>.tmp<pid>`` lives in ``path``'s directory (``os.replace`` is atomic
    only within a filesystem; the parent folder is created) and gets the usual permissions (0666
    minus the umask); it is fsynced before the rename and removed if ``write`` raises. Used for
    every file both packages write (checkpoints, logs, masks, CSVs, zips).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # persist the rename itself
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        UsageError: not a device name, or CUDA requested on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return dev


def git_revision(repo: PathLike = REPO_ROOT) -> Optional[str]:
    """The commit of the git checkout holding ``repo`` (this source tree by default), with
    ``-dirty`` appended when tracked files are modified; None when it is not a checkout or git is
    missing."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)

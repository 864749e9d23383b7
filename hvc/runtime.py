"""What both packages need at run time: atomic writes, the device, the git revision, the
exit-code convention of every command line and the peak memory of the process (the place of
this process in a ``torchrun`` launch is :mod:`hvc.launch`).

Exit codes (every ``python -m hvc.*`` and ``python -m label_prop.*`` command):

* ``0`` -- done;
* ``1`` -- bad data: a missing, unreadable or inconsistent input file (frames, masks, lists,
  checkpoints, datasets); raised as :class:`FileNotFoundError` or :class:`ValueError`;
* ``2`` -- usage error: the command line itself is wrong (an invalid or contradictory option
  value, an unknown name, a device this machine lacks, an output that exists without
  ``--overwrite``); raised as :class:`UsageError` or :class:`FileExistsError`. argparse's own
  errors exit with 2 too.

Expected failures print one line, ``PROG: error: MESSAGE``, and no traceback (:func:`run_cli`);
anything else is a bug and keeps its traceback. Two more outcomes are expected and get one line:

* ``1`` also for an operating-system error while reading or writing (a full disk, a read-only
  folder, no permission): the line names the path and the cause (:func:`describe_os_error`);
* ``130`` -- interrupted (Ctrl-C): ``PROG: interrupted``.

Warnings (``warnings.warn``) raised while a command runs are printed as one line,
``PROG: warning: MESSAGE``.

Results are never deleted before their replacement is complete: files go through
:func:`atomic_write` (one file) or :func:`atomic_write_all` (files that belong together), folders
through :func:`staged_dir` (written under a hidden name, swapped in when complete).
"""
from __future__ import annotations

import errno
import os
import re
import resource
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch

from .errors import EXIT_DATA, EXIT_INTERRUPTED, EXIT_OK, UsageError, exit_status

PathLike = Union[str, os.PathLike]

REPO_ROOT = Path(__file__).resolve().parents[1]


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: the path, the cause and what to do.

    ``OSError(ENOSPC, ..., "/r/x.png")`` -> ``/r/x.png: No space left on device (the disk is full:
    free space and run again; nothing was left half-written)``.
    """
    path = exc.filename if exc.filename is not None else "<unknown path>"
    code = exc.errno if exc.errno is not None else next((a for a in exc.args[:1] if isinstance(a, int)), None)
    cause = exc.strerror or (os.strerror(code) if code else "") or str(exc) or type(exc).__name__
    hint = {
        errno.ENOSPC: "the disk is full: free space and run again",
        errno.EDQUOT: "the disk quota is used up: free space and run again",
        errno.EROFS: "a read-only file system: choose another output folder",
        errno.EACCES: "no permission: choose another output folder or fix its permissions",
        errno.EPERM: "not permitted: choose another output folder or fix its permissions",
    }.get(code)
    return f"{path}: {cause}" + (f" ({hint}; nothing was left half-written)" if hint else "")


def run_cli(prog: str, job: Callable[[], Optional[int]], interrupted: str = "") -> int:
    """Run a command's body and turn its expected failures into one line and an exit status.

    Args:
        prog: the command's name for the message (``python -m label_prop.run`` ...).
        job: the body; returns an exit status or None (= 0).
        interrupted: appended to the Ctrl-C line (what was kept, how to continue).

    Returns:
        ``job``'s status; on :class:`ValueError` (:class:`UsageError` included),
        :class:`FileNotFoundError` or :class:`FileExistsError` the line ``PROG: error: MESSAGE``
        is printed on stderr and :func:`exit_status` returned; on another :class:`OSError` (full
        disk, read-only folder ...) ``PROG: error: PATH: CAUSE (...)`` and 1; on
        :class:`KeyboardInterrupt` ``PROG: interrupted[; INTERRUPTED]`` and 130. Warnings issued by ``job`` are
        printed as ``PROG: warning: MESSAGE``. Other exceptions propagate.
    """
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file if file is not None else sys.stderr)

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        status = job()
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except OSError as exc:
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print(f"{prog}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        warnings.showwarning = saved
    return EXIT_OK if status is None else status


def _name_os_error(exc: OSError, path: Path, tmp: Path) -> None:
    """Make ``exc`` name ``path`` (the file the caller asked for) when it names nothing or the
    temporary file, so that the one-line message of :func:`run_cli` says which file failed."""
    if exc.filename is None or str(exc.filename) == str(tmp):
        exc.filename = str(path)


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename the result to ``path``.

    The temporary file ``.<name>.tmp<pid>`` lives in ``path``'s directory (``os.replace`` is atomic
    only within a filesystem; the parent folder is created) and gets the usual permissions (0666
    minus the umask); it is fsynced before the rename and removed if ``write`` raises. Used for
    every file both packages write (checkpoints, logs, masks, CSVs, zips). On any failure
    ``path`` keeps its old content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: writing failed (disk full, no permission ...); its ``filename`` is ``path``
            unless the error named another file.
    """
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(items: Sequence[Tuple[PathLike, Callable[[Path], None]]]) -> list:
    """:func:`atomic_write` for files that belong together (e.g. the two CSVs of one evaluation):
    every temporary file is written and fsynced first, then all are renamed, so a failure while
    writing (a full disk) leaves every old file as it was.

    Returns:
        the paths, as :class:`~pathlib.Path`.

    Raises:
        OSError: as :func:`atomic_write`.
    """
    done: list = []
    try:
        for path, write in items:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            done.append((path, tmp))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as exc:
                _name_os_error(exc, path, tmp)
                raise
        for path, tmp in done:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                _name_os_error(exc, path, tmp)
                raise
    except BaseException:
        for _, tmp in done:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise
    for parent in {p.parent for p, _ in done}:
        fsync_dir(parent)
    return [p for p, _ in done]


_TMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>\d+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temporaries(folder: PathLike) -> list:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when its process was
    killed outright (SIGKILL, out of memory, power loss: no exception handler ran), e.g.
    ``.checkpoint.pth.tmp12345``: files named ``.<name>.tmp<pid>`` whose process no longer runs on
    this machine. Files of running processes are kept.

    Returns:
        ``[(path, bytes), ...]`` of the removed files.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TMP_NAME.fullmatch(path.name)
        if m and path.is_file() and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed


def clean_stale_temporaries(folder: PathLike, prog: str) -> None:
    """:func:`remove_stale_temporaries`, telling on stderr what was removed (``PROG: removed ...``)."""
    for path, size in remove_stale_temporaries(folder):
        print(f"{prog}: removed {path} ({size / 2**20:.1f} MiB), a temporary file left by a killed run",
              file=sys.stderr)


def fsync_dir(path: PathLike) -> None:
    """Persist the entries of folder ``path`` (renames into it); errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _partial_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def _old_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def restore_swapped_dir(final: PathLike) -> bool:
    """Undo a swap interrupted between its two renames (:func:`swap_in_dir`): when ``final`` is
    missing and its hidden ``.<name>.old`` exists, move it back. Returns whether it did."""
    final = Path(final)
    old = _old_dir(final)
    if not final.exists() and old.is_dir():
        os.replace(old, final)
        return True
    return False


def swap_in_dir(new: PathLike, final: PathLike) -> Path:
    """Make folder ``new`` (complete) the folder ``final``, replacing the old one.

    Two renames, each atomic: ``final -> .<name>.old``, ``new -> final``; then the old folder is
    removed. An interruption between the renames leaves the old folder under the hidden name,
    which :func:`restore_swapped_dir` (called by :func:`staged_dir`) puts back.

    Raises:
        OSError: a rename failed (``final`` then still holds the old folder).
    """
    new, final = Path(new), Path(final)
    old = _old_dir(final)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def check_inside(path: PathLike, folder: PathLike) -> Path:
    """``path``, checked to lie strictly inside ``folder`` once both are resolved (symlinks
    followed, ``..`` removed), so that no write or delete under a name read from data leaves the
    folder the user named.

    Raises:
        ValueError: ``path`` resolves to ``folder`` itself or outside it (one line with both
            resolved paths).
    """
    path, folder = Path(path), Path(folder)
    real, root = path.resolve(), folder.resolve()
    if real == root or root not in real.parents:
        raise ValueError(f"{path}: resolves to {real}, outside the output folder {root}; nothing written")
    return path


@contextmanager
def staged_dir(final: PathLike, within: PathLike | None = None) -> Iterator[Path]:
    """Write a folder under a hidden name and swap it in when complete.

    ``with staged_dir("results/m/davis16/blackswan") as tmp:`` yields the empty folder
    ``.blackswan.partial`` beside the destination (a leftover of a killed run is removed first);
    when the block ends normally it replaces the destination (:func:`swap_in_dir`); when it
    raises (bad data, a full disk, Ctrl-C) the partial folder is removed and the destination
    keeps its old content.

    ``within``: the output folder that ``final`` must lie inside (:func:`check_inside`, checked
    before anything is created, moved or removed); give it whenever ``final``'s name comes from
    data (a sequence name).

    Raises:
        OSError: the folder cannot be created (read-only parent ...), or the swap failed.
        ValueError: ``final`` is not inside ``within``.
    """
    final = Path(final)
    if within is not None:
        check_inside(final, within)
        check_inside(_partial_dir(final), within)
    restore_swapped_dir(final)
    tmp = _partial_dir(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        swap_in_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(out: PathLike, overwrite: bool, owned: "re.Pattern[str]", writer: str) -> None:
    """Refuse to replace an output folder that :func:`staged_dir` would swap out.

    Args:
        out: the folder a command writes whole (e.g. ``segment --out``).
        overwrite: the command's ``--overwrite``.
        owned: the names of the files the command writes there (full match).
        writer: the command's name, for the message.

    Raises:
        FileExistsError: ``out`` is not a folder; or it holds files and ``overwrite`` is False;
            or it holds files that ``owned`` does not match (they would be lost: named).
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    files = sorted(p.name for p in out.iterdir())
    if not files:
        return
    if not overwrite:
        raise FileExistsError(f"{out} holds files; pass --overwrite to replace them")
    foreign = [f for f in files if not owned.fullmatch(f)]
    if foreign:
        raise FileExistsError(f"{out} holds files that {writer} did not write ({', '.join(foreign[:3])}"
                              f"{' ...' if len(foreign) > 3 else ''}); --overwrite replaces the whole folder, so they "
                              f"would be lost: move them or choose another output folder")


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

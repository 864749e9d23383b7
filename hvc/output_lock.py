"""One writer per output: a lock that a run holds on what it writes.

Two commands writing the same output (two ``label_prop.run`` on one results folder, two
``segment`` on one ``--out``, two trainings on one output folder) would interleave their files
and both report success over damaged output. :func:`hold_output` makes the second fail at once
with one line that names the lock file and its holder (pid, host, command, start time).

The lock of an output ``X`` lives beside it, in hidden files of ``X``'s parent folder (as the
staged ``.X.partial`` folders do, so that swapping ``X`` in never swaps the lock away):

* ``.X.lock`` -- a guard, held (``flock``) only for the moment of checking and taking;
* ``.X.lock.TAG`` -- one per holder, held (``flock``) for the whole run, holding JSON that names
  the holder. ``TAG`` says which part of ``X`` it writes: ``run`` for all of it, ``shard-2-of-4``
  for one shard (shards of one count write disjoint sequences, so they may run together).

The operating system releases a ``flock`` when its process ends, however it ends, so a lock left
by a killed run (SIGKILL, power loss) is simply taken over, with a message naming the dead
holder. Both files are removed when the last holder is done, and parent folders that the lock
had to create are removed again when the run leaves nothing in them (a failed run leaves no
empty folders). POSIX only (``fcntl``); on a file system without ``flock`` the lock fails with
the operating system's error.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shlex
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

#: ``compatible(my_tag, their_tag)``: whether two holders may write the same output together.
Compatibility = Callable[[str, str], bool]


class OutputLocked(FileExistsError):
    """Another running process holds the lock of the output (exit status 2: choose another
    output or wait). The message names the lock file and the holder."""


def shards_compatible(mine: str, theirs: str) -> bool:
    """Shards ``shard-I-of-N`` of one count ``N`` and different ``I`` write disjoint parts of an
    output and may run together; anything else conflicts (a whole ``run`` with any shard, shards
    of different counts, two holders of one tag)."""
    a, b = mine.split("-"), theirs.split("-")
    return (len(a) == len(b) == 4 and a[0] == b[0] == "shard" and a[2] == b[2] == "of"
            and a[3] == b[3] and a[1] != b[1])


def _flock(fd: int, blocking: bool) -> bool:
    """Take ``fd``'s exclusive flock; False when another process holds it (non-blocking)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _open_locked(path: Path, blocking: bool) -> Optional[int]:
    """Open (creating) ``path`` and flock it; the fd, or None when another process holds it.
    Retries when the file was removed or replaced between the open and the flock (so that two
    processes never hold locks on two different files of one name)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock(fd, blocking):
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    """``pid 123 on host vm since 20261207-101500 (python -m label_prop.run ...)``."""
    if not holder:
        return "a process that did not say who it is"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('started_utc', '?')}"
            f" ({holder.get('command', '?')})")


def _create_parents(folder: Path) -> list:
    """``mkdir -p folder``; the folders it created, deepest first."""
    created = []
    p = folder
    while not p.exists():
        created.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


@contextmanager
def hold_output(target: PathLike, prog: str, tag: str = "run",
                compatible: Compatibility = shards_compatible) -> Iterator[Path]:
    """Hold the lock of output ``target`` (a folder or a file) for the block.

    Args:
        target: what the run writes, e.g. ``results/r18/davis16`` or ``segment --out`` (need
            not exist; its parent folders are created, and removed again when left empty).
        prog: the command's name, for the take-over message (``PROG: took over ...``).
        tag: which part of ``target`` this run writes (``run``: all of it; ``shard-I-of-N``).
        compatible: whether two tags may hold locks together (:func:`shards_compatible`).

    Yields:
        The holder file, ``<parent>/.<name>.lock.<tag>``.

    Raises:
        OutputLocked: a running process holds a conflicting lock (one line naming the lock file
            and the holder, see :func:`describe_holder`).
        OSError: the lock files cannot be created (read-only folder ...).
    """
    target = Path(target)
    folder = target.parent
    created = _create_parents(folder)
    if not target.exists():
        created.insert(0, target)  # removed at the end if the run left it an empty folder
    guard_path = folder / f".{target.name}.lock"
    mine = folder / f".{target.name}.lock.{tag}"
    fd = None
    try:
        guard = _open_locked(guard_path, blocking=True)
        try:
            for other in sorted(folder.glob(f".{target.name}.lock.*")):
                other_tag = other.name[len(guard_path.name) + 1:]
                ofd = _open_locked(other, blocking=False)
                holder = _read_holder(other)
                if ofd is None:
                    if other == mine or not compatible(tag, other_tag):
                        raise OutputLocked(f"{other}: {target} is being written by {describe_holder(holder)}; "
                                           f"wait for it to finish or choose another output")
                    continue
                if holder:
                    print(f"{prog}: took over the lock {other} of {describe_holder(holder)}, which no longer runs",
                          file=sys.stderr)
                if other != mine:
                    other.unlink(missing_ok=True)
                os.close(ofd)
            fd = _open_locked(mine, blocking=False)
            if fd is None:  # unreachable while the guard is held; kept as a safety net
                raise OutputLocked(f"{mine}: {target} is being written by {describe_holder(_read_holder(mine))}")
            record = {"pid": os.getpid(), "host": platform.node(), "tag": tag,
                      "command": shlex.join([sys.executable, *sys.argv]),
                      "started_utc": datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(guard)
    except BaseException:
        if fd is not None:
            os.close(fd)
        _remove_empty(created)
        raise
    try:
        yield mine
    finally:
        _release(guard_path, mine, fd)
        _remove_empty(created)


def _release(guard_path: Path, mine: Path, fd: int) -> None:
    """Remove this holder's file (and the guard when no other holder is left), under the guard."""
    guard = _open_locked(guard_path, blocking=True)
    try:
        mine.unlink(missing_ok=True)
        os.close(fd)
        if not any(guard_path.parent.glob(f"{guard_path.name}.*")):
            guard_path.unlink(missing_ok=True)
    finally:
        os.close(guard)


def _remove_empty(created: list) -> None:
    """Remove the folders the lock created (deepest first) when nothing was written in them."""
    for p in created:
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
        except OSError:
            return

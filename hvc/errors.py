"""The exit-code convention of every command line and the error type of a wrong command line.

Torch-free, so that configs (:mod:`hvc.config`, :mod:`label_prop.config`) can raise
:class:`UsageError` without importing torch. The convention is described in :mod:`hvc.runtime`.
"""
from __future__ import annotations

#: Exit statuses of the command lines (described in :mod:`hvc.runtime`).
EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
#: Exit status of an interrupted command (128 + SIGINT, as shells report Ctrl-C).
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """The command line (or a caller's arguments) is wrong, independently of any data file; the
    message names the option and the accepted values. A command line exits with 2 on it."""


def exit_status(exc: BaseException) -> int:
    """The exit status for an expected failure: 2 for :class:`UsageError` and
    :class:`FileExistsError` (fix the command line), 1 for anything else (bad data)."""
    return EXIT_USAGE if isinstance(exc, (UsageError, FileExistsError)) else EXIT_DATA

"""The settings of the browser app, stated once (:class:`AppConfig`), with the command line."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from hvc.errors import UsageError

#: Hosts that only this machine can reach; any other ``--host`` gets a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves, what it may open, and its limits.

    Raises:
        UsageError: a value out of range (names the option).
    """

    #: Folders whose files and sub-folders the app may open (resolved; nothing outside them).
    roots: tuple[Path, ...] = ()
    #: Interface to listen on; 127.0.0.1 = this machine only.
    host: str = "127.0.0.1"
    #: TCP port; 0 = a free port chosen by the system.
    port: int = 8765
    #: Sessions held at once; opening one more is refused (503) until one is closed or expires.
    max_sessions: int = 4
    #: A session untouched for this many seconds is freed (its masks are lost unless exported).
    idle_seconds: float = 1800.0
    #: Most frames a session may hold: a longer video is refused (413) unless the request asks
    #: for its first frames only.
    max_frames: int = 500
    #: Largest request body, in MiB (an uploaded mask, a session file, strokes).
    max_upload_mb: float = 16.0
    #: Interactions that can be undone, per session (each keeps a compressed copy of the masks).
    undo_depth: int = 20
    #: Frames per second of the exported overlay video for frame folders (videos keep theirs).
    fps: float = 24.0

    def __post_init__(self) -> None:
        checks = ((0 <= self.port <= 65535, "--port must be in 0..65535", self.port),
                  (self.max_sessions >= 1, "--max-sessions must be >= 1", self.max_sessions),
                  (self.idle_seconds > 0, "--idle-seconds must be > 0", self.idle_seconds),
                  (self.max_frames >= 1, "--max-frames must be >= 1", self.max_frames),
                  (self.max_upload_mb > 0, "--max-upload-mb must be > 0", self.max_upload_mb),
                  (self.undo_depth >= 0, "--undo-depth must be >= 0", self.undo_depth),
                  (self.fps > 0, "--fps must be > 0", self.fps))
        for ok, msg, value in checks:
            if not ok:
                raise UsageError(f"{msg}, got {value}")

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 2 ** 20)

    @property
    def loopback(self) -> bool:
        """Whether :attr:`host` is reachable from this machine only."""
        return self.host in LOOPBACK

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """One option per field, with its default and help (``--root`` may be repeated)."""
        d = AppConfig()
        g = parser.add_argument_group("app")
        g.add_argument("--root", action="append", type=Path, default=None, metavar="DIR",
                       help="a folder whose videos, frame folders and DAVIS / YouTube-VOS sequences may be opened; "
                            "repeat for more (default: the data root, $HVC_DATA_ROOT or ./data)")
        g.add_argument("--host", default=d.host,
                       help=f"interface to listen on (default {d.host}: this machine only; any other warns)")
        g.add_argument("--port", type=int, default=d.port, help=f"TCP port, 0 = any free one (default {d.port})")
        g.add_argument("--max-sessions", type=int, default=d.max_sessions,
                       help=f"sessions held at once (default {d.max_sessions})")
        g.add_argument("--idle-seconds", type=float, default=d.idle_seconds,
                       help=f"free a session untouched for this many seconds (default {d.idle_seconds:g})")
        g.add_argument("--max-frames", type=int, default=d.max_frames,
                       help=f"most frames a session may hold; longer videos are refused unless their first frames "
                            f"are asked for (default {d.max_frames})")
        g.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                       help=f"largest request body (mask, session file, strokes), MiB (default {d.max_upload_mb:g})")
        g.add_argument("--undo-depth", type=int, default=d.undo_depth,
                       help=f"interactions that can be undone per session (default {d.undo_depth})")
        g.add_argument("--fps", type=float, default=d.fps,
                       help=f"frames per second of exported overlay videos of frame folders (default {d.fps:g})")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "AppConfig":
        """The config of the fields present in ``values`` (``root`` gives :attr:`roots`).

        Raises:
            UsageError: a value out of range.
        """
        kw = {f.name: values[f.name] for f in fields(cls) if f.name in values and f.name != "roots"}
        roots = values.get("roots", values.get("root")) or ()
        return cls(roots=tuple(Path(r) for r in roots), **kw)

"""The settings of the browser app, stated once (:class:`AppConfig`), with the command line."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from label_prop.config import add_setting_arguments, check_settings, setting

#: Hosts that only this machine can reach; any other ``--host`` gets a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves, what it may open, and its limits (each field's help is its
    documentation; ``roots`` comes from ``--root``).

    Raises:
        UsageError: a value out of range (names the option).
    """

    #: Folders whose files and sub-folders the app may open (resolved; nothing outside them).
    roots: tuple[Path, ...] = ()
    host: str = setting("127.0.0.1", "interface to listen on (default {default}: this machine only; any other warns)")
    port: int = setting(8765, "TCP port, 0 = any free one (default {default})")
    max_sessions: int = setting(4, "sessions held at once; one more is refused (503) until one is closed or freed "
                                   "(default {default})")
    idle_seconds: float = setting(1800.0, "free a session untouched for this many seconds; its masks are lost unless "
                                          "exported (default {default:g})")
    max_frames: int = setting(500, "most frames a session may hold; a longer video is refused (413) unless its first "
                                   "frames are asked for (default {default})")
    max_upload_mb: float = setting(16.0, "largest request body (mask, session file, strokes), MiB (default {default:g})")
    undo_depth: int = setting(20, "interactions that can be undone per session, each keeping a compressed copy of "
                                  "the masks (default {default})")
    fps: float = setting(24.0, "frames per second of exported overlay videos of frame folders; videos keep theirs "
                               "(default {default:g})")

    def __post_init__(self) -> None:
        checks = ((0 <= self.port <= 65535, "--port must be in 0..65535", self.port),
                  (self.max_sessions >= 1, "--max-sessions must be >= 1", self.max_sessions),
                  (self.idle_seconds > 0, "--idle-seconds must be > 0", self.idle_seconds),
                  (self.max_frames >= 1, "--max-frames must be >= 1", self.max_frames),
                  (self.max_upload_mb > 0, "--max-upload-mb must be > 0", self.max_upload_mb),
                  (self.undo_depth >= 0, "--undo-depth must be >= 0", self.undo_depth),
                  (self.fps > 0, "--fps must be > 0", self.fps))
        check_settings(checks)

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
        g = parser.add_argument_group("app")
        g.add_argument("--root", action="append", type=Path, default=None, metavar="DIR",
                       help="a folder whose videos, frame folders and DAVIS / YouTube-VOS sequences may be opened; "
                            "repeat for more (default: the data root, $HVC_DATA_ROOT or ./data)")
        add_setting_arguments(g, AppConfig)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "AppConfig":
        """The config of the fields present in ``values`` (``root`` gives :attr:`roots`).

        Raises:
            UsageError: a value out of range.
        """
        kw = {f.name: values[f.name] for f in fields(cls) if f.name in values and f.name != "roots"}
        roots = values.get("roots", values.get("root")) or ()
        return cls(roots=tuple(Path(r) for r in roots), **kw)

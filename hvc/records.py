"""Values for run records and checkpoints: plain types that JSON and ``torch.load(weights_only=True)``
accept. Torch-free.
"""
from __future__ import annotations

from typing import Any


def plain(obj: Any) -> Any:
    """Convert ``obj`` to plain, ``weights_only``-safe types (dict/list/str/int/float/bool/None).

    Subclasses of the plain types (e.g. ``torch.__version__``) become the plain type, paths
    strings, tuples lists, other objects their ``str``.
    """
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):  # e.g. torch.__version__ (TorchVersion) is not weights_only-safe
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return str(obj)

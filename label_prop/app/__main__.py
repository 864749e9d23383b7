"""``python -m label_prop.app``: serve the interactive segmentation app (docs/app.md).

Usage::

    python -m label_prop.app [--model random] [--root DIR ...] [--host 127.0.0.1] [--port 8765]
        [--max-sessions 4] [--idle-seconds 1800] [--max-frames 500] [--max-upload-mb 16]
        [--undo-depth 20] [--fps 24] [--seed-method random_walker|feature_knn]
        [--feature-dtype float16|float32] [propagation options] [encoder options]

The propagation options are :class:`label_prop.config.PropagationConfig`'s, except that the app
starts with ``--input-size 240`` (features of a frame scaled to a short side of 240 pixels: on a
CPU an interaction then takes seconds rather than minutes; masks stay at full size) and
``--n-context 20``; pass ``--input-size -1 --n-context 50`` for the paper's protocol. The
encoder options are :func:`label_prop.propagation.features.add_encoder_arguments`'. Exit status:
0, 1 (bad data) or 2 (usage error), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

import torch

from hvc.runtime import resolve_device, run_cli
from label_prop.app.config import AppConfig
from label_prop.config import PropagationConfig
from label_prop.data.plans import data_root
from label_prop.evaluation.results import file_digest, model_name
from label_prop.interactive.seeded import METHODS, SeedConfig
from label_prop.interactive.session import FEATURE_DTYPES, InteractiveConfig
from label_prop.propagation.features import add_encoder_arguments, build_encoder, resolve_model

PROG = "python -m label_prop.app"
#: Where the app's propagation defaults differ from the protocol's (see the module docstring).
APP_PROPAGATION_DEFAULTS = {"input_size": 240, "n_context": 20}


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog=PROG, allow_abbrev=False,
                                description="Interactive video object segmentation in the browser: scribble, "
                                            "propagate, correct, export (docs/app.md).")
    p.add_argument("--model", default="random", help="'random', a name (checkpoints/MODEL.pth) or a .pth path "
                                                     "(an exported encoder or an HVC release file; default random)")
    p.add_argument("--seed-method", choices=METHODS, default=SeedConfig().method,
                   help=f"strokes to a mask: random walker on the image or kNN over the frame's features "
                        f"(default {SeedConfig().method})")
    p.add_argument("--feature-dtype", choices=tuple(FEATURE_DTYPES), default=InteractiveConfig().feature_dtype,
                   help=f"storage of the cached features (default {InteractiveConfig().feature_dtype})")
    AppConfig.add_arguments(p)
    PropagationConfig.add_arguments(p, APP_PROPAGATION_DEFAULTS)
    add_encoder_arguments(p)
    return p


def model_identity(args: argparse.Namespace, encoder) -> dict:
    """What identifies the encoder in a session file: name, seed (``random``), the weights' and the
    MoCo file's SHA-256, and the precision it runs in."""
    weights = resolve_model(args.model, args.checkpoints_dir)
    choice = encoder.precision_choice
    return {"name": model_name(args.model), "seed": args.seed if weights is None else None,
            "weights_sha256": file_digest(weights) if weights is not None else None,
            "moco_sha256": file_digest(args.moco) if args.moco else None,
            "precision": choice.precision, "channels_last": choice.channels_last}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from label_prop.app.server import create_app
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = AppConfig.from_mapping({**vars(args), "root": args.root or [data_root(None)]})
    if not cfg.loopback:
        warnings.warn(f"--host {cfg.host}: the app is reachable from other machines, and it has no login; "
                      f"anyone who can reach it can open the files under its roots")
    config = InteractiveConfig(propagation=PropagationConfig.from_mapping(vars(args)),
                               seeds=SeedConfig(method=args.seed_method), feature_dtype=args.feature_dtype)
    device = resolve_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device, precision=args.precision)
    app = create_app(encoder, model_identity(args, encoder), config, cfg)
    print(f"serving {model_name(args.model)} on {device} at http://{cfg.host}:{cfg.port}/ "
          f"(roots: {', '.join(str(r) for r in cfg.roots)}); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())

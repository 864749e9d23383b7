"""Named training presets: flag defaults for ``python -m hvc.train --preset NAME``.

A preset replaces the defaults of the flags it names (argparse destinations, e.g.
``batch_size`` for ``--batch-size``); flags given explicitly on the command line override it,
and ``--epochs`` given without ``--steps`` drops a preset's ``steps``. The run record
(``run.json``) and the checkpoint's ``args`` hold the preset name and the resulting values.

The paper's setting is the trainer's default (no preset): batch 128, 256x256 crops, 20 epochs.
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple

#: preset name -> {argparse destination: value}
PRESETS: Dict[str, Dict[str, Any]] = {
    # The best of the few configurations tried on the DAVIS-2016 dev half within 60 minutes of
    # training on a 2-core CPU (README "Training (HVC)": learning curves, ablation, held-out scores).
    "cpu-1h": {
        "batch_size": 16,    # frames per step (paper 128)
        "img_size": 64,      # crop side, pixels (paper 256); an 8x8 feature grid
        "steps": 800,        # optimisation steps, = 12,800 frames, ~6.4 epochs of the 2086-frame set (400 scored
                             # 0.019-0.022 lower on the dev half, seeds 42 and 43)
        "lr": 1e-3,          # Adam learning rate, constant (paper 1e-3)
        "workers": 0,        # data-loader processes: decoding + crops are a small part of a CPU step (measured)
        "threads": 2,        # torch CPU threads (one per core of a 2-core machine)
        "ema_base": 0.99,    # EMA base momentum m0 (paper 0.99)
        "pos_radius": 0.3,   # positive radius, in larger-bin diagonals (paper 0.1; at 64 px, 0.1 leaves ~3
                             # positives per sample and 0.3 ~20, which scored higher on the dev half)
    },
    # cpu-1h with 128-px crops in bfloat16 (channels_last), for CPUs with native bfloat16 units
    # (AVX512-BF16 or AMX), where a 128-px bfloat16 step costs about what a 64-px float32 step
    # does; on CPUs without them bfloat16 is many times slower: use cpu-1h there. Only the crop
    # size, the precision and the steps (to fill the same hour) differ from cpu-1h; results and
    # the CPU they were measured on: docs/training.md.
    "cpu-1h-bf16": {
        "batch_size": 16,
        "img_size": 128,         # crop side, pixels; a 16x16 feature grid
        "steps": 1600,           # = 25,600 frames
        "lr": 1e-3,
        "workers": 0,
        "threads": 2,
        "ema_base": 0.99,
        "pos_radius": 0.3,       # kept from cpu-1h (not tuned at 128 px)
        "amp": True,
        "amp_dtype": "bfloat16",
        "channels_last": True,
    },
}


#: Presets that stand for one of two others, chosen on the machine at hand: name -> (the one
#: taken where the probe of :func:`hvc.hardware.encoder_precision` picks bfloat16 on the CPU,
#: the one taken elsewhere).
AUTO_PRESETS: Dict[str, Tuple[str, str]] = {"cpu-1h-auto": ("cpu-1h-bf16", "cpu-1h")}


def _cpu_has_fast_bfloat16() -> bool:
    from .hardware import encoder_precision  # torch only when an automatic preset is asked for
    choice = encoder_precision("auto", "cpu")
    seconds = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in choice.seconds.items())
    print(f"hvc.train: precision probe ({choice.probe}): {seconds}; picks {choice.precision}", flush=True)
    return choice.precision == "bfloat16"


def resolve_preset(name: str, bf16_fast: Callable[[], bool] = _cpu_has_fast_bfloat16) -> str:
    """The preset that ``name`` stands for: itself, or for an :data:`AUTO_PRESETS` name the first of
    its pair when ``bf16_fast()`` (default: a probe of this CPU, printed) and the second otherwise.

    Raises:
        ValueError: unknown preset (the message lists the known ones).
    """
    if name in AUTO_PRESETS:
        fast, slow = AUTO_PRESETS[name]
        return fast if bf16_fast() else slow
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESET_NAMES))}")
    return name


#: Every name ``--preset`` takes.
PRESET_NAMES = tuple(PRESETS) + tuple(AUTO_PRESETS)


def preset_defaults(name: str) -> Dict[str, Any]:
    """A copy of preset ``name``'s flag defaults.

    Raises:
        ValueError: unknown preset (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESET_NAMES))}")
    return dict(PRESETS[name])


def apply_preset(values: Mapping[str, Any], explicit: Collection[str],
                 bf16_fast: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
    """``values`` (setting name -> value, e.g. the parsed flags) with the values of the preset
    ``values["preset"]`` in place of those of the settings not in ``explicit`` (the flags given on
    the command line); ``epochs`` given without ``steps`` drops the preset's ``steps``. An
    automatic preset (:data:`AUTO_PRESETS`) is first resolved (:func:`resolve_preset`) and the
    result's name recorded as ``preset``. Without a preset: a copy of ``values``.

    Raises:
        ValueError: unknown preset.
    """
    out = dict(values)
    if out.get("preset") is None:
        return out
    out["preset"] = resolve_preset(out["preset"], **({} if bf16_fast is None else {"bf16_fast": bf16_fast}))
    defaults = preset_defaults(out["preset"])
    if "epochs" in explicit and "steps" not in explicit:
        defaults.pop("steps", None)
    out.update({k: v for k, v in defaults.items() if k not in explicit})
    return out

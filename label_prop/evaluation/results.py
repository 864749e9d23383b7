"""Where the results of a model live, which of them are complete, and which score tables still
describe them.

Layout (written by ``run_test.sh`` / :mod:`label_prop.run`, read by ``run_metrics.sh`` /
:mod:`label_prop.evaluate`)::

    <results-dir>/<model name>/<benchmark>/<sequence>/<frame>.png
    <results-dir>/<model name>/<benchmark>/run-<UTC time>.json           (one run record per run)
    <results-dir>/<model name>/<benchmark>/global_results[-SPLIT].csv    (scores, run_metrics.sh)
    <results-dir>/<model name>/<benchmark>/per-sequence_results[-SPLIT].csv
    <results-dir>/<model name>/overlays/<benchmark>/<sequence>/<frame>.jpg

**Model name** (:func:`model_name`, the one mapping both commands use): ``random`` and a
checkpoint name ``NAME`` (``checkpoints/NAME.pth``) are their own names; a path to a weights
file (``.pth``, ``.pt``, ``.tar``; absolute or relative) is named after its stem, so
``/ckpts/r18.pth`` and ``ckpts/r18.pth`` both give ``results/r18/...``; the run record keeps the
file's full path.

**Complete sequences** (:func:`completed_sequences`, for ``run_test.sh --resume``): a sequence is
complete when a run record lists it (a record lists a sequence only after its folder was
swapped in whole), the record's settings are this run's, and its folder holds exactly the PNGs
of its plan.

**Stale score tables** (:func:`stale_summaries`): a ``global_results*.csv`` /
``per-sequence_results*.csv`` pair summarises the sequences named in its per-sequence rows
(``<sequence>_<object id>``); when one of them is rewritten the pair no longer describes the
results and is removed (``run_metrics.sh`` writes it again).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from hvc.errors import UsageError
from label_prop.config import PropagationConfig

#: Suffixes of a MODEL argument that is a weights file (otherwise it is a name).
MODEL_SUFFIXES = (".pth", ".pt", ".tar")
GLOBAL_CSV = "global_results.csv"
PER_SEQUENCE_CSV = "per-sequence_results.csv"
#: Name pattern of the run records (``run-<UTC time>.json``, the time sorts them).
RUN_RECORDS = "run-*.json"


def is_model_path(model: str) -> bool:
    """Whether a MODEL argument names a weights file (suffix in :data:`MODEL_SUFFIXES`)."""
    return Path(model).suffix.lower() in MODEL_SUFFIXES


def model_name(model: str) -> str:
    """The results folder name of a MODEL argument (see the module docstring).

    Raises:
        UsageError: a name that is not a plain folder name (empty, ``.``/``..``, or a path
            without a weights-file suffix).
    """
    if is_model_path(model):
        return Path(model).stem
    if not model or model in (".", "..") or "/" in model or os.sep in model:
        raise UsageError(f"MODEL {model!r}: give 'random', a name in the checkpoints folder, or a weights file "
                         f"ending in {', '.join(MODEL_SUFFIXES)}")
    return model


def results_root(results_dir: str | os.PathLike, model: str, benchmark: str) -> Path:
    """``<results_dir>/<model name>/<benchmark>`` (:func:`model_name`)."""
    return Path(results_dir) / model_name(model) / benchmark


def overlays_root(results_dir: str | os.PathLike, model: str, benchmark: str) -> Path:
    """``<results_dir>/<model name>/overlays/<benchmark>``."""
    return Path(results_dir) / model_name(model) / "overlays" / benchmark


def results_csv_paths(out_dir: str | os.PathLike, suffix: str = "") -> tuple[Path, Path]:
    """``(global_results<suffix>.csv, per-sequence_results<suffix>.csv)`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return tuple(out_dir / name.replace(".csv", f"{suffix}.csv") for name in (GLOBAL_CSV, PER_SEQUENCE_CSV))


def summarised_sequences(per_sequence_csv: str | os.PathLike) -> set[str] | None:
    """The sequences a ``per-sequence_results*.csv`` scores (its ``Sequence`` column is
    ``<sequence>_<object id>``); None when the file cannot be read as one."""
    try:
        rows = pd.read_csv(per_sequence_csv)["Sequence"].astype(str)
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    return {r.rsplit("_", 1)[0] for r in rows}


def stale_summaries(out_dir: str | os.PathLike, changed: Collection[str]) -> list[Path]:
    """The score tables in ``out_dir`` that summarise one of the ``changed`` sequences: both
    files of each such ``global_results<suffix>.csv`` / ``per-sequence_results<suffix>.csv`` pair
    (also a pair whose per-sequence file is missing or unreadable: what it covers is unknown)."""
    out_dir = Path(out_dir)
    suffixes = {p.name[len("global_results"):-len(".csv")] for p in out_dir.glob("global_results*.csv")}
    suffixes |= {p.name[len("per-sequence_results"):-len(".csv")] for p in out_dir.glob("per-sequence_results*.csv")}
    stale: list[Path] = []
    for suffix in sorted(suffixes):
        pair = results_csv_paths(out_dir, suffix)
        covered = summarised_sequences(pair[1]) if pair[1].is_file() else None
        if covered is None or covered & set(changed):
            stale += [p for p in pair if p.exists()]
    return stale


def remove_stale_summaries(out_dir: str | os.PathLike, changed: Collection[str]) -> list[Path]:
    """Remove :func:`stale_summaries` (called before the changed results are swapped in, so no
    table ever describes results it did not score). Returns the removed files."""
    removed = stale_summaries(out_dir, changed)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_settings(model_path: str | os.PathLike | None, config: PropagationConfig, *, seed: int,
                 moco: str | os.PathLike | None, read_masks: str, precision: str = "float32",
                 channels_last: bool = False, memory: Any = None) -> dict[str, Any]:
    """What determines a run's PNGs, as recorded in ``run-*.json`` and compared by ``--resume``.

    Args:
        model_path: the weights file (its full path and :func:`file_digest` are recorded), None
            for ``random``.
        config: the propagation settings (every field is recorded).
        seed: the ``random`` encoder's seed (recorded only for ``random``).
        moco: the MoCo file merged with the encoder, or None.
        read_masks: the filelist mask rule.
        precision, channels_last: the encoder's precision and layout as resolved
            (:func:`hvc.hardware.encoder_precision`; ``auto`` never appears here); recorded when
            the precision is not float32, the exact mode.
        memory: the object memory's settings (:class:`label_prop.config.MemoryConfig`); recorded
            as ``memory`` when re-identification is on.
    """
    settings: dict[str, Any] = {"model": str(Path(model_path).resolve()) if model_path is not None else "random"}
    if model_path is None:
        settings["seed"] = int(seed)
    else:  # the same path may hold other weights later (a retrained model exported over it)
        settings["model_sha256"] = file_digest(model_path)
    settings["moco"] = str(Path(moco).resolve()) if moco is not None else None
    if moco is not None:
        settings["moco_sha256"] = file_digest(moco)
    settings["read_masks"] = read_masks
    if precision != "float32":
        settings.update(precision=precision, channels_last=bool(channels_last))
    settings.update(asdict(config))
    if memory is not None and memory.reid:
        settings["memory"] = asdict(memory)
    return json.loads(json.dumps(settings))  # as read back from a record


def run_records(out_dir: str | os.PathLike) -> list[tuple[Path, dict]]:
    """The run records in ``out_dir``, oldest first; an unreadable one is skipped with a warning."""
    records = []
    for path in sorted(Path(out_dir).glob(RUN_RECORDS)):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            warnings.warn(f"{path}: unreadable run record, ignored ({exc})")
            continue
        if isinstance(rec, dict):
            records.append((path, rec))
    return records


def settings_groups(out_dir: str | os.PathLike, names: Collection[str]) -> list[tuple[dict | None, list[str]]]:
    """The sequences of ``names`` grouped by the settings (model included, :func:`run_settings`)
    of the newest run record in ``out_dir`` that lists each; sequences that no record lists (or
    whose record has no settings) form a group with settings None. Groups in order of first
    appearance in ``names``; one group means the results were made alike."""
    latest: dict[str, dict] = {}
    for _, rec in run_records(out_dir):
        for name in rec.get("sequences", {}):
            latest[name] = rec
    groups: list[tuple[dict | None, list[str]]] = []
    for name in names:
        settings = latest.get(name, {}).get("settings")
        for recorded, members in groups:
            if recorded == settings:
                members.append(name)
                break
        else:
            groups.append((settings, [name]))
    return groups


def mixed_settings_message(groups: list[tuple[dict | None, list[str]]]) -> str:
    """One line naming, for each group of :func:`settings_groups` after the first, its sequences
    and the settings that differ from the first group's."""
    (base, first), parts = groups[0], []
    for recorded, members in groups[1:]:
        if recorded is None or base is None:
            diff = "no run record" if recorded is None else "others have no run record"
        else:
            diff = "; ".join(f"{k}={recorded.get(k)!r} against {base.get(k)!r}"
                             for k in sorted(set(recorded) | set(base)) if recorded.get(k) != base.get(k))
        shown = ", ".join(members[:4]) + (" ..." if len(members) > 4 else "")
        parts.append(f"{shown} ({diff})")
    return (f"results made with different settings or models: {', '.join(first[:4])}{' ...' if len(first) > 4 else ''} "
            f"against {' and '.join(parts)}")


def completed_sequences(out_dir: str | os.PathLike, plans: Collection[Any], settings: dict[str, Any], *,
                        redo_other_settings: bool = False) -> dict[str, Path]:
    """The sequences of ``plans`` whose results in ``out_dir`` are complete (module docstring).

    Args:
        out_dir: ``results/MODEL/BENCHMARK``.
        plans: the :class:`~label_prop.data.plans.SequencePlan` of each requested sequence.
        settings: this run's :func:`run_settings`.
        redo_other_settings: a sequence made with other settings counts as not complete
            (``--resume --overwrite``) instead of being an error.

    Returns:
        sequence -> the run record that lists it (the newest one), for the complete ones only.
        Sequences of records without settings (written before they were recorded) count as
        not complete.

    Raises:
        UsageError: the newest record of a sequence was made with other settings (names the
            record and each differing setting with both values).
    """
    out_dir = Path(out_dir)
    latest: dict[str, tuple[Path, dict]] = {}
    for path, rec in run_records(out_dir):
        for name in rec.get("sequences", {}):
            latest[name] = (path, rec)
    done: dict[str, Path] = {}
    for plan in plans:
        if plan.name not in latest:
            continue
        path, rec = latest[plan.name]
        recorded = rec.get("settings")
        if recorded is None:
            continue
        if recorded != settings and redo_other_settings:
            continue
        if recorded != settings:
            diff = [f"{k}={recorded.get(k)!r} there, {settings.get(k)!r} now"
                    for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
            raise UsageError(f"--resume: {out_dir / plan.name} was made with other settings ({path.name}: "
                             f"{'; '.join(diff)}); resume with the same settings, or add --overwrite to --resume to redo it")
        folder = out_dir / plan.name
        have = {p.stem for p in folder.glob("*.png")} if folder.is_dir() else set()
        if have == set(plan.saved_names()):
            done[plan.name] = path
    return done

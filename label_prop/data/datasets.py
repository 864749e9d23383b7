"""The named benchmarks, their fixed dev / held-out halves, and the ``--sequences`` / ``--split`` choice.

Datasets are found under the data root (:func:`label_prop.data.plans.data_root`: the ``root`` argument,
else ``$HVC_DATA_ROOT``, else ``./data``):

* ``davis16``, ``davis17``, ``davis17dev``: DAVIS layout, :class:`label_prop.data.davis.DavisBenchmark`;
* ``ytvos18``, ``ytvos19``: YouTube-VOS validation layout, :class:`label_prop.data.ytvos.YtvosBenchmark`.

A filelist is a third family (:class:`label_prop.data.filelists.FilelistBenchmark`, opened by
:func:`label_prop.data.filelists.open_benchmark` from a name or a path). Every benchmark turns a
sequence into a :class:`~label_prop.data.plans.SequencePlan` (``bench.plan(seq, root)``): the frames to
propagate, which to write, and which annotations to read.
"""
from __future__ import annotations

from hvc.errors import UsageError
from label_prop.data.davis import DavisBenchmark
from label_prop.data.plans import Benchmark
from label_prop.data.ytvos import YtvosBenchmark

BENCHMARKS: dict[str, Benchmark] = {
    "davis16": DavisBenchmark(name="davis16", folder="DAVIS2016", imageset="ImageSets/2016/val.txt", binary=True,
                              full_gt=True),
    "davis17": DavisBenchmark(name="davis17", folder="DAVIS2017", imageset="ImageSets/2017/val.txt", binary=False,
                              full_gt=True),
    "davis17dev": DavisBenchmark(name="davis17dev", folder="DAVIS2017-test-dev", imageset="ImageSets/2017/test-dev.txt",
                                 binary=False, full_gt=False, submission="davis"),
    "ytvos18": YtvosBenchmark(name="ytvos18", folder="YTVOS2018/valid", binary=False, full_gt=False,
                              submission="ytvos"),
    "ytvos19": YtvosBenchmark(name="ytvos19", folder="YTVOS2019/valid", binary=False, full_gt=False,
                              submission="ytvos"),
}


def get_benchmark(name: str) -> Benchmark:
    """Look up a benchmark by name.

    Raises:
        UsageError: unknown name (the message lists the known ones).
    """
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UsageError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


#: Fixed halves of a benchmark's sequences, for choosing settings on one half ("dev") and reporting
#: on the other ("heldout") without tuning on it. DAVIS-2016 val: the 20 sequences in the order of
#: ``ImageSets/2016/val.txt`` (alphabetical), alternately dev (1st, 3rd, ...) and held out (2nd, 4th, ...);
#: fixed before any training setting was chosen. 645 frames dev, 731 held out.
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "davis16": {
        "dev": ("blackswan", "breakdance", "car-roundabout", "cows", "dog", "drift-straight", "horsejump-high",
                "libby", "paragliding-launch", "scooter-black"),
        "heldout": ("bmx-trees", "camel", "car-shadow", "dance-twirl", "drift-chicane", "goat", "kite-surf",
                    "motocross-jump", "parkour", "soapbox"),
    },
}


def split_sequences(bench: Benchmark | str, split: str) -> list[str]:
    """The sequences of a named half of a benchmark (:data:`SPLITS`), in benchmark order.

    Raises:
        UsageError: the benchmark has no splits, or ``split`` is not one of them (both named).
    """
    name = bench if isinstance(bench, str) else bench.name
    splits = SPLITS.get(name)
    if not splits:
        raise UsageError(f"benchmark {name} has no named splits (splits exist for: {', '.join(SPLITS)})")
    if split not in splits:
        raise UsageError(f"{name}: unknown split {split!r}; known: {', '.join(splits)}")
    return list(splits[split])


def parse_sequences(bench: Benchmark | str, sequences: str | None, split: str | None) -> list[str] | None:
    """The ``--sequences a,b`` / ``--split NAME`` choice of a command line as a list (None = all).

    Raises:
        UsageError: both are given, or the split is unknown.
    """
    if sequences and split:
        raise UsageError("give either --sequences or --split, not both")
    if split:
        return split_sequences(bench, split)
    return [s.strip() for s in sequences.split(",") if s.strip()] if sequences else None

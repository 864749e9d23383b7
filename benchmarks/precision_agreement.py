"""Agreement of a faster precision with float32 on DAVIS-2016 val: the same command twice per
model, ``--precision float32`` and ``--precision OTHER`` (default ``auto``), then per-frame argmax
agreement of the written masks and the J&F difference on each half (dev, held-out) and on all 20.

    python benchmarks/precision_agreement.py --models random checkpoints/my-run.pth \
        --output-dir bench_out/precision [--other auto] [--input-size 240] [--n-context 20] [--threads 1]

Runs ``python -m label_prop.run`` and ``python -m label_prop.evaluate`` (results cached under
``--output-dir/PRECISION/``: a second call only compares), and prints one table: per model and
half, J&F of both, their difference, the fraction of pixels whose label agrees (over every
frame written, frame 0 included) and the fraction of frames that agree exactly; the wall time
of both runs (from their run records) with the machine. Writes ``agreement.csv``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hvc.hardware import in_words  # noqa: E402
from label_prop.data.datasets import SPLITS  # noqa: E402
from label_prop.evaluation.results import PER_SEQUENCE_CSV, model_name  # noqa: E402

PY = sys.executable


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_and_score(model: str, precision: str, opts: argparse.Namespace) -> Path:
    """Segment and score all of davis16 with ``precision``; returns ``RESULTS/MODEL/davis16``."""
    results = opts.output_dir / precision
    out = results / model_name(model) / "davis16"
    if not (out / PER_SEQUENCE_CSV).is_file():
        _run([PY, "-m", "label_prop.run", model, "davis16", "--input-size", str(opts.input_size),
              "--n-context", str(opts.n_context), "--threads", str(opts.threads), "--precision", precision,
              "--results-dir", str(results), "--overwrite"])
        _run([PY, "-m", "label_prop.evaluate", model, "davis16", "--results-dir", str(results), "--overwrite"])
    return out


def mask_agreement(a: Path, b: Path, sequences: list[str]) -> tuple[float, float]:
    """(fraction of pixels with the same label, fraction of frames equal everywhere) over the
    PNGs of ``sequences`` in both folders."""
    same = total = frames_equal = frames = 0
    for seq in sequences:
        for png in sorted((a / seq).glob("*.png")):
            x, y = np.array(Image.open(png)), np.array(Image.open(b / seq / png.name))
            eq = x == y
            same, total = same + int(eq.sum()), total + eq.size
            frames_equal, frames = frames_equal + int(eq.all()), frames + 1
    return same / total, frames_equal / frames


def _wall_s(out: Path) -> float:
    return sum(json.loads(p.read_text()).get("wall_s", 0.0) for p in out.glob("run-*.json"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["random"], help="MODEL arguments of label_prop.run")
    p.add_argument("--other", default="auto", help="the precision compared with float32 (default auto)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--input-size", type=int, default=240, help="short side, pixels (default 240, the fast protocol)")
    p.add_argument("--n-context", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args(argv)
    halves = dict(SPLITS["davis16"])
    halves["all"] = halves["dev"] + halves["heldout"]
    rows = []
    for model in opts.models:
        ref, oth = run_and_score(model, "float32", opts), run_and_score(model, opts.other, opts)
        picked = json.loads(next(oth.glob("run-*.json")).read_text())["precision"]
        da, db = pd.read_csv(ref / PER_SEQUENCE_CSV), pd.read_csv(oth / PER_SEQUENCE_CSV)
        # per-sequence rows are named SEQUENCE_OBJECT (davis2017-evaluation)
        jf = lambda df, seqs: float(df[df["Sequence"].str.rsplit("_", n=1).str[0].isin(seqs)]  # noqa: E731
                                    [["J-Mean", "F-Mean"]].mean().mean())
        for half, seqs in halves.items():
            pix, frm = mask_agreement(ref, oth, list(seqs))
            rows.append({"model": model_name(model), "half": half, "JF_float32": jf(da, seqs),
                         f"JF_{opts.other}": jf(db, seqs), "difference": jf(db, seqs) - jf(da, seqs),
                         "pixel_agreement": pix, "frames_equal": frm})
        print(f"{model_name(model)}: {opts.other} ran as {picked['precision']}"
              f"{' channels_last' if picked['channels_last'] else ''}; wall time float32 {_wall_s(ref):.0f} s, "
              f"{opts.other} {_wall_s(oth):.0f} s ({_wall_s(ref) / max(_wall_s(oth), 1e-9):.2f}x)")
    table = pd.DataFrame(rows)
    print(f"\nmachine: {in_words('cpu')}; davis16, --input-size {opts.input_size} --n-context {opts.n_context}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    table.to_csv(opts.output_dir / "agreement.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

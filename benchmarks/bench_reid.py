"""Benchmark: re-identification on fast motion, DAVIS-2016 val at temporal strides 1, 2, 4 and 8.

    python benchmarks/bench_reid.py [--split dev] [--strides 1 2 4 8] [--model random]
        [--input-size 240] [--n-context 20] [--threads 1] [--out bench_out/reid.csv] [memory options]

Every k-th frame of each sequence of a half of DAVIS-2016 val is segmented from its first frame
(motion grows k-fold, so objects jump past the radius), with the object memory off and on
(:class:`label_prop.config.MemoryConfig`, ``--reid`` and the other memory options apply to the
"on" runs), the fast protocol (``--input-size``, ``--n-context``), features computed once per
frame and shared by both runs. Scored with the DAVIS-2016 metrics (first and last frames of the
subsampled sequence excluded). Writes one CSV row per (sequence, stride, memory): J, F, J&F, the
propagation seconds per frame, the lost / found events; prints the mean J&F per stride with and
without, the difference, and the propagation cost ratio (on / off, measured in one process).
Choose thresholds on ``--split dev``; report ``--split heldout``.

``--synthetic``: instead, the re-entry clips of :func:`label_prop.data.synthetic.reentry_clip`
(exit, occlusion, jump; ``--clips`` seeds of the clip length 40 + 8 i frames), at full resolution:
per clip, whether the object is re-identified after it comes back, the frames from its return to
the first "found", the frames where the prediction shows the object while the ground truth is
empty (false detections; DAVIS scores such a frame 1 only if the prediction is empty too), with
and without the memory, and J on the frames after the return.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hvc.hardware import describe  # noqa: E402
from label_prop.config import MemoryConfig, PropagationConfig  # noqa: E402
from label_prop.data.datasets import get_benchmark, split_sequences  # noqa: E402
from label_prop.evaluation.metrics import evaluate_sequence  # noqa: E402
from label_prop.interactive.protocol import load_sequence  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402
from label_prop.propagation.pipeline import VideoSegmenter  # noqa: E402


def segment(encoder, feats, gt, size, config, memory):
    seg = VideoSegmenter(encoder, config, object_ids=[1], memory=memory)
    t0 = time.perf_counter()
    pred = np.stack([seg.step(None, gt[0] if t == 0 else None, features=f, size=size) for t, f in enumerate(feats)])
    seconds = (time.perf_counter() - t0) / max(len(feats) - 1, 1)
    mem = seg.propagator.memory
    events = [e for e in mem.events if e[2] != "admitted"] if mem is not None else []
    return pred, seconds, events


def synthetic(args, encoder, memory) -> int:
    from label_prop.data.synthetic import REENTRY_KINDS, reentry_clip
    from label_prop.evaluation.metrics import region_similarity
    config = PropagationConfig(n_context=args.n_context)
    print(f"synthetic re-entry clips (240x320, full resolution, n-context {args.n_context}), {args.model}")
    print("| clip | frames | back at | found at (frames after) | false detections without / with | "
          "J after return without / with |")
    print("|---|---|---|---|---|---|")
    for kind in REENTRY_KINDS:
        for i in range(args.clips):
            frames, gt = reentry_clip(kind, n_frames=40 + 8 * i, radius=42)
            with torch.no_grad():
                feats = [encoder.encode_frame(f, -1) for f in frames]
            present = gt.reshape(len(gt), -1).any(1)
            if kind == "jump":
                back = len(gt) // 2
            else:
                gone = int(np.argmin(present))
                back = gone + int(np.argmax(present[gone:]))
            res = {}
            for on in (False, True):
                pred, _, events = segment(encoder, feats, gt, gt.shape[1:], config, memory if on else None)
                shown = pred.reshape(len(pred), -1).any(1)
                found = [e[0] for e in events if e[2] == "found" and e[0] >= back - 1]
                j = np.mean([region_similarity(p == 1, g == 1) for p, g in zip(pred[back:], gt[back:])])
                res[on] = (int((shown & ~present).sum()), j, found[0] if found else None)
            f = res[True][2]
            print(f"| {kind} | {len(gt)} | {back} | {f if f is not None else 'never'}"
                  f"{f' ({f - back})' if f is not None else ''} | {res[False][0]} / {res[True][0]} | "
                  f"{res[False][1]:.3f} / {res[True][1]:.3f} |", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--split", default="dev", choices=("dev", "heldout"))
    p.add_argument("--strides", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--model", default="random")
    p.add_argument("--input-size", type=int, default=240)
    p.add_argument("--n-context", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sequences", default=None, help="comma-separated subset of the half")
    p.add_argument("--out", type=Path, default=Path("bench_out/reid.csv"))
    p.add_argument("--synthetic", action="store_true", help="the synthetic re-entry clips instead of DAVIS")
    p.add_argument("--clips", type=int, default=2, help="clips per kind with --synthetic (default 2)")
    MemoryConfig.add_arguments(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hw = describe("cpu")
    print(f"# CPU {hw['cpu']}, flags {' '.join(hw['cpu_flags']) or '(none of interest)'}, {args.threads} thread(s)")
    config = PropagationConfig(input_size=args.input_size, n_context=args.n_context)
    memory = MemoryConfig.from_mapping({**vars(args), "reid": True})
    encoder = build_encoder(args.model, precision="float32")
    if args.synthetic:
        return synthetic(args, encoder, memory)
    bench = get_benchmark("davis16")
    names = split_sequences(bench, args.split)
    if args.sequences:
        names = [n for n in names if n in args.sequences.split(",")]
    rows = []
    for seq in names:
        frames, gt, _ = load_sequence(bench, seq)
        with torch.no_grad():
            feats = [encoder.encode_frame(f, args.input_size) for f in frames]
        size = gt.shape[1:]
        for k in args.strides:
            idx = list(range(0, len(frames), k))
            if len(idx) < 4:
                continue
            for on in (False, True):
                pred, sec, events = segment(encoder, [feats[i] for i in idx], gt[idx], size, config,
                                            memory if on else None)
                sc = evaluate_sequence(pred, gt[idx], single_object=True)
                j, f = float(sc.j.mean()), float(sc.f.mean())
                rows.append({"model": args.model, "split": args.split, "sequence": seq, "stride": k, "reid": on,
                             "frames": len(idx), "J": j, "F": f, "JF": (j + f) / 2, "propagate_s_per_frame": sec,
                             "lost": sum(e[2] == "lost" for e in events), "found": sum(e[2] == "found" for e in events)})
                print(f"{seq} stride {k} reid {on}: J&F {(j + f) / 2:.3f}, {sec:.3f} s/frame, events {events}",
                      file=sys.stderr, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    df = pd.DataFrame(rows)
    print(f"{args.model}, DAVIS-2016 val {args.split} half ({len(names)} sequences), input size {args.input_size}, "
          f"n-context {args.n_context}; memory {memory}")
    print("| stride | J&F without | J&F with | difference | sequences better / worse | lost / found | cost with / without |")
    print("|---|---|---|---|---|---|---|")
    for k, g in df.groupby("stride"):
        off, on = g[~g.reid].set_index("sequence"), g[g.reid].set_index("sequence")
        d = on.JF - off.JF
        print(f"| {k} | {off.JF.mean():.3f} | {on.JF.mean():.3f} | {d.mean():+.3f} | {(d > 0.001).sum()} / "
              f"{(d < -0.001).sum()} | {int(on.lost.sum())} / {int(on.found.sum())} | "
              f"{on.propagate_s_per_frame.sum() / off.propagate_s_per_frame.sum():.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

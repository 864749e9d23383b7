"""Pack a subset of the shared data into ``device_data/`` (ignored by git) for the GPU check
(``scripts/device_check.sh``), so that the source tree with its data fits the 64 MiB that reach a
GPU machine. Run it through ``bash scripts/pack_device_data.sh`` (from the repository root).

What it writes (``--out``, default ``device_data``), in the layouts the code reads:

* ``unlabeled-video/JPEGImages/<video>/<frame>.jpg``: every frame of ``$HVC_DATA_ROOT/unlabeled-video``
  (2086 frames, 30 videos), re-encoded with OpenCV as JPEG of ``--quality`` (default 70; the
  originals are ~34 KiB a frame, about quality 90), same size and names -- training data;
* ``DAVIS2016/{JPEGImages,Annotations}/480p/<seq>/`` for ``--sequences`` (default: the four
  smallest held-out sequences, car-shadow, drift-chicane, kite-surf and motocross-jump, and
  blackswan from the dev half; 232 frames, 14 MiB), the JPEGs and ground truth copied byte for
  byte, and ``ImageSets/2016/val.txt`` listing them -- scored by the check;
* ``README.txt``: what was packed, from where, and the sizes.

The folder is built as ``<out>.partial`` and swapped in when complete. The sizes are printed:
the packed data, the source tree (``git ls-files -co --exclude-standard``) and their sum, which
must stay under ``--limit-mib`` (64): otherwise nothing is replaced and the exit status is 1 (as
for missing data); 2 for usage errors.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ("blackswan", "car-shadow", "drift-chicane", "kite-surf", "motocross-jump")
MiB = 2 ** 20


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``, bytes."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def tree_bytes(repo: Path) -> int | None:
    """Size of the files of the source tree that travel with it (tracked and untracked files git
    does not ignore), bytes; None without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                             check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((repo / f).stat().st_size for f in out.split("\0") if f and (repo / f).is_file())


def pack_unlabeled(src: Path, dst: Path, quality: int) -> tuple[int, int]:
    """Re-encode every ``src/JPEGImages/<video>/*.jpg`` into ``dst``; returns (frames, videos).

    Raises:
        FileNotFoundError: no frames; ValueError: an unreadable frame (named).
    """
    frames = sorted((src / "JPEGImages").glob("*/*.jpg"))
    if not frames:
        raise FileNotFoundError(f"no frames in {src / 'JPEGImages'}/<video>/*.jpg")
    for f in frames:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{f}: not a readable image")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"{f}: JPEG encoding failed")
        out = dst / "JPEGImages" / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.tobytes())
    return len(frames), len({f.parent.name for f in frames})


def pack_davis16(src: Path, dst: Path, sequences: list[str]) -> dict[str, int]:
    """Copy the frames and ground truth of ``sequences``; returns sequence -> frames.

    Raises:
        FileNotFoundError: a sequence's frames or an annotation is missing (named).
    """
    counts = {}
    for seq in sequences:
        jpgs = sorted((src / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        if not jpgs:
            raise FileNotFoundError(f"DAVIS-2016 sequence {seq}: no frames in {src / 'JPEGImages' / '480p' / seq}")
        for kind, files in (("JPEGImages", jpgs), ("Annotations", [src / "Annotations" / "480p" / seq / f"{j.stem}.png"
                                                                   for j in jpgs])):
            (dst / kind / "480p" / seq).mkdir(parents=True, exist_ok=True)
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"{f} not found (the check scores every frame)")
                shutil.copyfile(f, dst / kind / "480p" / seq / f.name)
        counts[seq] = len(jpgs)
    (dst / "ImageSets" / "2016").mkdir(parents=True, exist_ok=True)
    (dst / "ImageSets" / "2016" / "val.txt").write_text("".join(f"{s}\n" for s in sequences))
    return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 packed and within the limit, 1 data or size, 2 usage)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="bash scripts/pack_device_data.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("HVC_DATA_ROOT", "../shared/data"),
                   help="the shared data (default: $HVC_DATA_ROOT, else ../shared/data)")
    p.add_argument("--out", default="device_data", type=Path, help="the packed folder (default: device_data)")
    p.add_argument("--quality", type=int, default=70,
                   help="JPEG quality of the re-encoded training frames (default 70)")
    p.add_argument("--sequences", default=",".join(SEQUENCES), help="DAVIS-2016 val sequences to copy, comma-separated")
    p.add_argument("--limit-mib", type=float, default=64.0, help="limit for the source tree plus data (default 64)")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 100:
        p.error(f"--quality must be in 1..100, got {args.quality}")
    root, out = Path(args.data_root), args.out
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        n_frames, n_videos = pack_unlabeled(root / "unlabeled-video", partial / "unlabeled-video", args.quality)
        counts = pack_davis16(root / "DAVIS2016", partial / "DAVIS2016", sequences)
    except (FileNotFoundError, ValueError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        print(f"pack_device_data: error: {exc}", file=sys.stderr)
        return 1
    sizes = {name: folder_bytes(partial / name) for name in ("unlabeled-video", "DAVIS2016")}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Packed by scripts/pack_device_data.sh from {root.resolve()} on {when}.",
             f"unlabeled-video: {n_frames} frames of {n_videos} videos, re-encoded as JPEG quality {args.quality}: "
             f"{sizes['unlabeled-video'] / MiB:.1f} MiB",
             f"DAVIS2016: {len(counts)} val sequences with their ground truth ("
             + ", ".join(f"{s} {n}" for s, n in counts.items()) + f"; {sum(counts.values())} frames), "
             f"files as in the source: {sizes['DAVIS2016'] / MiB:.1f} MiB"]
    (partial / "README.txt").write_text("\n".join(lines) + "\n")
    data, tree = folder_bytes(partial), tree_bytes(REPO)
    total = data + (tree or 0)
    print("\n".join(lines[1:]))
    print(f"{out}: {data / MiB:.1f} MiB in {time.perf_counter() - t0:.0f} s")
    if tree is None:
        print("source tree: size unknown (no git); the data alone must stay well under the limit")
    else:
        print(f"source tree (git ls-files -co --exclude-standard): {tree / MiB:.1f} MiB; "
              f"with {out}: {total / MiB:.1f} MiB of {args.limit_mib:g} MiB")
    if total > args.limit_mib * MiB:
        shutil.rmtree(partial)
        print(f"pack_device_data: error: {total / MiB:.1f} MiB exceed --limit-mib {args.limit_mib:g} (nothing "
              f"replaced); lower --quality or pack fewer --sequences", file=sys.stderr)
        return 1
    if out.exists():  # swap: the old folder goes only once the new one is complete
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        os.replace(partial, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

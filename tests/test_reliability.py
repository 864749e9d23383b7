"""Bad input, interruptions and full disks (issue 12): each case gives a clear error naming the file
(or works), and no case damages earlier results. Fixtures are built at test time: tiny synthetic
DAVIS layouts and frame folders, or real DAVIS-2016 frames copied into tmp_path.

Full disks are simulated by making the writer raise ``OSError(ENOSPC)``; read-only folders with
``chmod`` or, as root (where ``chmod`` does not stop writes), with ``chattr +i``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.models import resnet18

from conftest import REPO_ROOT, copy_davis16, make_davis_dataset
from hvc import runtime as RT
from hvc.checkpoint import CheckpointError, load_checkpoint
from label_prop import evaluate as ev
from label_prop.evaluation import results as RS
from label_prop import run as R
from label_prop import segment as S
from label_prop.data import video as V
from label_prop.data.io import read_mask, write_palette_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN_OPTS = ["--n-context", "2", "--threads", "1"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def davis16(tmp_path):
    """A synthetic DAVIS-2016 layout (sequences alpha, beta; 6 frames of 48x64, full ground truth)."""
    root = tmp_path / "data"
    make_davis_dataset(root)
    return root, tmp_path / "results"


def _bench(root: Path, res: Path, *extra: str) -> list[str]:
    return ["random", "davis16", "--data-root", str(root), "--results-dir", str(res), *RUN_OPTS, *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    """Leftovers of the staging machinery (partial/old folders, temporary files) under ``folder``."""
    return [str(p) for p in folder.rglob(".*")]


def _error_line(err: str, prog: str) -> str:
    """The one ``PROG: error: ...`` line of ``err`` (asserting there is exactly one, and no traceback)."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _fail_on_call(fn, n: int, exc: BaseException):
    """``fn`` whose ``n``-th call (1-based) raises ``exc`` instead (a function, so that it also
    works as a method when set on a class)."""
    calls = [0]

    def wrapper(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            raise exc
        return fn(*a, **k)

    return wrapper


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@contextmanager
def _read_only(path: Path):
    """Make folder ``path`` unwritable: ``chmod 555``; as root (chmod does not stop root) the
    immutable attribute (``chattr +i``), or skip when the filesystem does not support it."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, where chmod does not stop writes, and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _frames(n: int = 8, h: int = 48, w: int = 64) -> list[np.ndarray]:
    img = skdata.astronaut()[::4, ::4]
    return [np.ascontiguousarray(np.roll(img, 2 * t, axis=1)[:h, :w]) for t in range(n)]


def _two_objects(h: int = 48, w: int = 64) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[8:30, 10:30] = 3
    mask[30:44, 36:60] = 5
    return mask


@pytest.fixture
def clip(tmp_path):
    """A frame folder of 8 textured 48x64 frames and a 2-object (ids 3, 5) first-frame mask."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(_frames()):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    write_palette_png(tmp_path / "first.png", _two_objects())
    return folder, tmp_path / "first.png"


def _segment(folder, mask, out, *extra):
    return S.main([str(folder), "--mask", str(mask), "--out", str(out), "--n-context", "2", "--threads", "1", *extra])


def _env():
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")


# --------------------------------------------------------------------------- the shared mechanism


def test_staged_dir_swaps_in_whole_folders_and_recovers_an_interrupted_swap(tmp_path):
    final = tmp_path / "seq"
    final.mkdir()
    (final / "old.png").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with RT.staged_dir(final) as tmp:
            (tmp / "new.png").write_text("new")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"] and (final / "old.png").read_text() == "old"
    with RT.staged_dir(final) as tmp:
        (tmp / "new.png").write_text("new")
        assert not (final / "new.png").exists()  # not visible before the block ends
    assert [p.name for p in final.iterdir()] == ["new.png"] and sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    # killed between the two renames of a swap: the old folder is under its hidden name only
    os.replace(final, tmp_path / ".seq.old")
    assert RT.restore_swapped_dir(final) and (final / "new.png").exists()


def test_atomic_write_all_keeps_every_old_file_on_failure(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("old a")
    b.write_text("old b")

    def full(tmp):
        raise _enospc()

    with pytest.raises(OSError) as exc:
        RT.atomic_write_all([(a, lambda tmp: Path(tmp).write_text("new a")), (b, full)])
    assert exc.value.filename == str(b) and "No space left" in RT.describe_os_error(exc.value)
    assert a.read_text() == "old a" and b.read_text() == "old b" and sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_temporaries_of_killed_runs_are_removed(davis16, capsys):
    root, res = davis16
    out = res / "random" / "davis16"
    out.mkdir(parents=True)
    stale = out / f".global_results.csv.tmp{_dead_pid()}"
    stale.write_text("half a table")
    live = out / f".run-x.json.tmp{os.getppid()}"  # a running process's temporary file is kept
    live.write_text("{")
    assert R.main(_bench(root, res)) == 0
    assert not stale.exists() and live.exists()
    assert f"removed {stale} (0.0 MiB), a temporary file left by a killed run" in capsys.readouterr().err
    live.unlink()


def test_demo_refuses_to_replace_a_folder_with_other_files(tmp_path, capsys):
    from label_prop import demo

    out = tmp_path / "out"
    out.mkdir()
    (out / "00000.png").write_text("earlier output")
    (out / "notes.txt").write_text("mine")
    assert demo.main(["--frames", "3", "--out", str(out), "--overwrite"]) == 2
    assert "notes.txt" in _error_line(capsys.readouterr().err, demo.PROG)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "notes.txt"]


# --------------------------------------------------------------------------- 1. MODEL as a .pth path


def test_model_name_maps_paths_to_their_stem():
    assert RS.model_name("random") == "random" and RS.model_name("hvc-cpu100") == "hvc-cpu100"
    assert RS.model_name("/abs/ck/r18.pth") == "r18" == RS.model_name("ck/r18.pth") == RS.model_name("r18.pt")
    assert RS.results_root("res", "/abs/r18.pth", "davis16") == Path("res/r18/davis16")
    with pytest.raises(ValueError, match="weights file"):
        RS.model_name("ck/r18")  # a path without a weights-file suffix would nest folders


def test_model_given_as_absolute_or_relative_pth_path(davis16, tmp_path, monkeypatch, capsys):
    root, res = davis16
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save(resnet18(weights=None).state_dict(), ck / "r18.pth")  # an official-release layout
    # absolute path: results/r18/davis16, the full path in the run record
    assert R.main([str(ck / "r18.pth"), *_bench(root, res)[1:], "--sequences", "alpha"]) == 0
    out = res / "r18" / "davis16"
    assert len(list((out / "alpha").glob("*.png"))) == 6
    rec = json.loads(next(out.glob("run-*.json")).read_text())
    assert rec["model"] == {"name": "r18", "argument": str(ck / "r18.pth"), "path": str((ck / "r18.pth").resolve())}
    assert rec["settings"]["model"] == str((ck / "r18.pth").resolve()) and len(rec["settings"]["model_sha256"]) == 64
    # relative path: the same folder (not results/ck/r18.pth/...)
    monkeypatch.chdir(tmp_path)
    assert R.main(["ck/r18.pth", *_bench(root, res)[1:], "--sequences", "alpha", "--overwrite"]) == 0
    assert sorted(p.name for p in res.iterdir()) == ["r18"]
    # other weights at the same path: --resume refuses to mix them with the earlier results
    torch.manual_seed(1)
    torch.save(resnet18(weights=None).state_dict(), ck / "r18.pth")
    assert R.main(["ck/r18.pth", *_bench(root, res)[1:], "--sequences", "alpha", "--resume"]) == 2
    assert "model_sha256" in _error_line(capsys.readouterr().err, R.PROG)
    # the metrics take the same MODEL argument (function and script)
    assert ev.main([str(ck / "r18.pth"), "davis16", "--sequences", "alpha", "--results-dir", str(res),
                    "--data-root", str(root)]) == 0
    assert (out / "global_results.csv").is_file()
    done = subprocess.run(["bash", "scripts/run_metrics.sh", str(ck / "r18.pth"), "davis16", "--sequences", "alpha",
                           "--results-dir", str(res), "--data-root", str(root), "--overwrite"],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(out / "global_results.csv") in done.stdout


# --------------------------------------------------------------------------- 2. missing frames


@pytest.mark.data
def test_missing_frame_is_an_error_for_run_and_metrics(data_root, tmp_path, capsys):
    root = copy_davis16(data_root, tmp_path / "data", ("blackswan",), frames=6)
    seq_jpg = root / "DAVIS2016" / "JPEGImages" / "480p" / "blackswan"
    seq_ann = root / "DAVIS2016" / "Annotations" / "480p" / "blackswan"
    res = tmp_path / "results"
    # predictions for every frame (the ground truth), so that only the data is wrong
    for p in sorted(seq_ann.glob("*.png")):
        write_palette_png(res / "random" / "davis16" / "blackswan" / p.name, read_mask(p, binary=True))
    saved = seq_jpg / "00002.jpg"
    data = saved.read_bytes()
    saved.unlink()  # the case: 00002.jpg removed, its annotation kept
    assert R.main(_bench(root, res, "--overwrite", "--input-size", "64")) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(seq_jpg / "00002.jpg") in line and "missing" in line
    assert ev.main(["random", "davis16", "--results-dir", str(res), "--data-root", str(root)]) == 1
    assert str(seq_jpg / "00002.jpg") in capsys.readouterr().err
    assert not (res / "random" / "davis16" / "global_results.csv").exists()
    # an annotation without its frame (beyond the last JPEG)
    saved.write_bytes(data)
    shutil.copy(seq_ann / "00005.png", seq_ann / "00006.png")
    assert R.main(_bench(root, res, "--overwrite", "--input-size", "64")) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(seq_ann / "00006.png") in line and "00006.jpg" in line
    # incomplete ground truth: the metrics refuse to score without the frame
    (seq_ann / "00006.png").unlink()
    (seq_ann / "00003.png").unlink()
    assert ev.main(["random", "davis16", "--results-dir", str(res), "--data-root", str(root)]) == 1
    assert str(seq_ann / "00003.png") in capsys.readouterr().err


# --------------------------------------------------------------------------- 3. silent wrong outputs


def test_empty_first_frame_mask_is_an_error(davis16, clip, tmp_path, capsys):
    root, res = davis16
    first = root / "DAVIS2016" / "Annotations" / "480p" / "alpha" / "00000.png"
    Image.fromarray(np.zeros((48, 64), np.uint8), mode="L").save(first)
    assert R.main(_bench(root, res, "--sequences", "alpha")) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(first) in line and "no object" in line
    assert not (res / "random" / "davis16" / "alpha").exists() and not _hidden(res)
    folder, _ = clip
    write_palette_png(tmp_path / "empty.png", np.zeros((48, 64), np.uint8))
    assert _segment(folder, tmp_path / "empty.png", tmp_path / "out") == 1
    line = _error_line(capsys.readouterr().err, S.PROG)
    assert str(tmp_path / "empty.png") in line and "no object" in line
    assert not (tmp_path / "out").exists()


def test_davis17_palette_mask_in_davis16_layout_is_an_error(davis16, capsys):
    root, res = davis16
    ann = root / "DAVIS2016" / "Annotations" / "480p" / "alpha" / "00000.png"
    ids = np.zeros((48, 64), np.uint8)
    ids[5:20, 5:20], ids[25:40, 30:50], ids[44:, :] = 1, 2, 255  # two objects and a void strip
    write_palette_png(ann, ids)
    assert R.main(_bench(root, res, "--sequences", "alpha")) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(ann) in line and "[0, 1, 2, 255]" in line and "DAVIS-2017" in line
    for seq in ("alpha", "beta"):  # the metrics read the ground truth the same way
        for t in range(6):
            write_palette_png(res / "m" / "davis16" / seq / f"{t:05d}.png", np.zeros((48, 64), np.uint8))
    assert ev.main(["m", "davis16", "--results-dir", str(res), "--data-root", str(root)]) == 1
    assert str(ann) in capsys.readouterr().err


def test_truncated_video_warns_with_both_counts(tmp_path, capsys):
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for f in _frames(10):
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # the header still says 10 frames
    cap = cv2.VideoCapture(str(video))
    header, decodable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        decodable += 1
    cap.release()
    assert header == 10 and 2 <= decodable < 10
    write_palette_png(tmp_path / "first.png", _two_objects())
    assert _segment(video, tmp_path / "first.png", tmp_path / "out", "--no-overlay") == 0
    err = capsys.readouterr().err
    warning = [ln for ln in err.splitlines() if ln.startswith(f"{S.PROG}: warning:")]
    assert len(warning) == 1 and "10 frames" in warning[0] and f"only {decodable}" in warning[0]
    rec = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert rec["frames"] == decodable and rec["header_frames"] == 10
    assert "10 frames" in rec["warnings"][0] and f"only {decodable}" in rec["warnings"][0]
    assert len(list((tmp_path / "out").glob("*.png"))) == decodable


def test_non_contiguous_ground_truth_ids_warn_and_keep_the_official_scores(tmp_path, capsys):
    import vos_benchmark.benchmark as vb

    root = tmp_path / "data"
    bench = root / "DAVIS2017"
    (bench / "ImageSets" / "2017").mkdir(parents=True)
    (bench / "ImageSets" / "2017" / "val.txt").write_text("toy\n")
    gt_dir, pred_dir = bench / "Annotations" / "480p" / "toy", tmp_path / "results" / "m" / "davis17" / "toy"
    (bench / "JPEGImages" / "480p" / "toy").mkdir(parents=True)
    for t in range(6):
        Image.fromarray(np.full((48, 64, 3), 30 * t, np.uint8)).save(bench / "JPEGImages" / "480p" / "toy" / f"{t:05d}.jpg")
        gt = np.zeros((48, 64), np.uint8)
        gt[4:20, 4 + t:24 + t], gt[24:40, 6:26], gt[10:30, 40:60] = 1, 5, 30
        write_palette_png(gt_dir / f"{t:05d}.png", gt)
        pred = gt.copy()
        pred[24:40, 26 - 3 * t:26] = 0  # object 5 shrinks: scores below 1
        write_palette_png(pred_dir / f"{t:05d}.png", pred)
    assert ev.main(["m", "davis17", "--results-dir", str(tmp_path / "results"), "--data-root", str(root)]) == 0
    err = capsys.readouterr().err
    warning = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warning) == 1 and "2-4, 6-29" in warning[0] and str(gt_dir / "00000.png") in warning[0]
    s = pd.read_csv(pred_dir.parent / "per-sequence_results.csv")
    assert s["Sequence"].tolist() == [f"toy_{i}" for i in range(1, 31)]  # official: objects 1..max id
    empty = s[~s["Sequence"].isin(["toy_1", "toy_5", "toy_30"])]
    assert (empty["J-Mean"] == 1.0).all() and (empty["F-Mean"] == 1.0).all()
    # the objects that exist score as vos-benchmark scores them
    _, _, _, vobj = vb.benchmark([str(gt_dir.parent)], [str(pred_dir.parent)], strict=True, num_processes=1,
                                 verbose=False)
    iou, bf = vobj[0]["toy"]
    assert sorted(iou) == [1, 5, 30]
    for oid in (1, 5, 30):
        row = s[s["Sequence"] == f"toy_{oid}"].iloc[0]
        assert abs(row["J-Mean"] - iou[oid] / 100) < 1e-6 and abs(row["F-Mean"] - bf[oid] / 100) < 1e-6
    assert s[s["Sequence"] == "toy_5"]["J-Mean"].iloc[0] < 1


# --------------------------------------------------------------------------- 4. checkpoints


def test_checkpoint_errors_name_the_file_and_the_problem(davis16, tmp_path, capsys):
    root, res = davis16
    state = resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "wrong.pth")
    assert R.main([str(tmp_path / "wrong.pth"), *_bench(root, res)[1:]]) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(tmp_path / "wrong.pth") in line and "2 tensors have the wrong shape" in line
    assert "conv1.weight: file [64, 3, 5, 5] vs network [64, 3, 7, 7]" in line
    assert R.main([str(tmp_path / "nope.pth"), *_bench(root, res)[1:]]) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert f"{tmp_path / 'nope.pth'} not found" in line and "nope.pth.pth" not in line
    (tmp_path / "notes.pth").write_text("hello, these are not weights\n")
    assert R.main([str(tmp_path / "notes.pth"), *_bench(root, res)[1:]]) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert str(tmp_path / "notes.pth") in line and "not a PyTorch weights file" in line and "b'hello" in line
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        load_checkpoint(tmp_path / "notes.pth")
    assert not res.exists()


# --------------------------------------------------------------------------- 5. interruptions


def test_interrupted_segment_overwrite_keeps_the_old_output(clip, tmp_path, monkeypatch, capsys):
    folder, mask = clip
    out = tmp_path / "out"
    assert _segment(folder, mask, out) == 0
    before = _snapshot(out)
    assert {"00000.png", "00007.png", "overlay.mp4", "segment.json"} <= set(before)
    monkeypatch.setattr(S, "write_palette_png", _fail_on_call(S.write_palette_png, 4, KeyboardInterrupt()))
    assert _segment(folder, mask, out, "--overwrite", "--seed", "1") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"{S.PROG}: interrupted")
    assert _snapshot(out) == before and not _hidden(tmp_path)
    # other files in --out are never lost: --overwrite refuses to replace such a folder
    (out / "notes.txt").write_text("mine")
    assert _segment(folder, mask, out, "--overwrite") == 2
    assert "notes.txt" in _error_line(capsys.readouterr().err, S.PROG)
    assert (out / "notes.txt").read_text() == "mine"


def test_sigint_during_segment_ends_with_one_line(tmp_path):
    """A real Ctrl-C (SIGINT) while segment writes: exit 130, one line, the old output whole."""
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(4, 48, 64)
    for t in range(300):
        Image.fromarray(frames[t % 4]).save(folder / f"{t:05d}.png")
    write_palette_png(tmp_path / "first.png", _two_objects())
    out = tmp_path / "out"
    out.mkdir()
    for t in range(3):
        write_palette_png(out / f"{t:05d}.png", np.full((48, 64), 9, np.uint8))
    before = _snapshot(out)
    cmd = [sys.executable, "-m", "label_prop.segment", str(folder), "--mask", str(tmp_path / "first.png"),
           "--out", str(out), "--overwrite", "--n-context", "2", "--threads", "1"]
    # A shell's background job (e.g. pytest under nohup ... &) ignores SIGINT and its children inherit
    # that, so Python would install no KeyboardInterrupt handler: give the child the default back.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / ".out.partial"
    deadline = time.monotonic() + 300
    while len(list(partial.glob("*.png"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "segment ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"{S.PROG}: interrupted")
    assert _snapshot(out) == before and not partial.exists()


def test_interrupted_run_overwrite_keeps_old_pngs_and_overlays(davis16, monkeypatch, capsys):
    root, res = davis16
    assert R.main(_bench(root, res, "--save-overlays")) == 0
    before = _snapshot(res)
    assert sum(k.endswith(".jpg") for k in before) == 12
    monkeypatch.setattr(R, "write_jpeg", _fail_on_call(R.write_jpeg, 3, KeyboardInterrupt()))
    assert R.main(_bench(root, res, "--save-overlays", "--overwrite", "--seed", "1")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"{R.PROG}: interrupted")
    assert "--resume" in err.strip().splitlines()[-1]
    assert _snapshot(res) == before and not _hidden(res)


# --------------------------------------------------------------------------- 7. read-only folders, full disks


def test_full_disk_during_run_names_the_file_and_keeps_results(davis16, monkeypatch, capsys):
    root, res = davis16
    assert R.main(_bench(root, res)) == 0
    before = _snapshot(res)
    monkeypatch.setattr(Image.Image, "save", _fail_on_call(Image.Image.save, 3, _enospc()))
    assert R.main(_bench(root, res, "--overwrite", "--seed", "1")) == 1
    line = _error_line(capsys.readouterr().err, R.PROG)
    assert "No space left on device" in line and str(res / "random" / "davis16") in line and ".png" in line
    assert _snapshot(res) == before and not _hidden(res)


def _segmented_and_scored(davis16):
    """Run and score ``random`` on the shortened davis16 fixture; returns the metrics arguments
    and the results folder ``RES/random/davis16``."""
    root, res = davis16
    assert R.main(_bench(root, res)) == 0
    args = ["random", "davis16", "--results-dir", str(res), "--data-root", str(root)]
    assert ev.main(args) == 0
    return args, res / "random" / "davis16"


def test_full_disk_during_metrics_keeps_both_csvs(davis16, monkeypatch, capsys):
    args, out = _segmented_and_scored(davis16)
    before = _snapshot(out)
    monkeypatch.setattr(pd.DataFrame, "to_csv", _fail_on_call(pd.DataFrame.to_csv, 2, _enospc()))
    assert ev.main([*args, "--overwrite"]) == 1
    line = _error_line(capsys.readouterr().err, "bash scripts/run_metrics.sh")
    assert f"{out / 'per-sequence_results.csv'}: No space left on device" in line
    assert _snapshot(out) == before and not _hidden(out)


def test_full_disk_during_segment_keeps_the_old_output(clip, tmp_path, monkeypatch, capsys):
    folder, mask = clip
    out = tmp_path / "out"
    assert _segment(folder, mask, out, "--no-overlay") == 0
    before = _snapshot(out)
    monkeypatch.setattr(Image.Image, "save", _fail_on_call(Image.Image.save, 4, _enospc()))
    assert _segment(folder, mask, out, "--no-overlay", "--overwrite") == 1
    line = _error_line(capsys.readouterr().err, S.PROG)
    assert "No space left on device" in line and ".png" in line
    assert _snapshot(out) == before and not _hidden(tmp_path)


def test_read_only_results_folder(davis16, capsys):
    root, res = davis16
    args, out = _segmented_and_scored(davis16)
    before = _snapshot(res)
    with _read_only(out):
        assert R.main(_bench(root, res, "--overwrite")) == 1
        line = _error_line(capsys.readouterr().err, R.PROG)
        assert str(out) in line and ("Permission denied" in line or "Operation not permitted" in line)
        assert ev.main([*args, "--overwrite"]) == 1
        line = _error_line(capsys.readouterr().err, "bash scripts/run_metrics.sh")
        assert str(out / "global_results.csv") in line
    assert _snapshot(res) == before and not _hidden(res)


# --------------------------------------------------------------------------- 8. resume, progress, stale tables


def test_resume_skips_complete_sequences_and_redoes_the_rest(davis16, monkeypatch, capsys):
    root, res = davis16
    out = res / "random" / "davis16"
    # interrupted in the second sequence (beta): alpha is complete and recorded
    monkeypatch.setattr(R, "write_palette_png", _fail_on_call(R.write_palette_png, 9, KeyboardInterrupt()))
    assert R.main(_bench(root, res)) == 130
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["alpha"] and not _hidden(res)
    alpha = _snapshot(out / "alpha")
    monkeypatch.undo()
    planned = []
    real = R.segment_plan
    monkeypatch.setattr(R, "segment_plan", lambda plan, *a, **k: planned.append(plan.name) or real(plan, *a, **k))
    # without --resume the existing sequence blocks the run; other settings cannot resume
    assert R.main(_bench(root, res)) == 2
    assert "--resume" in capsys.readouterr().err
    assert R.main(_bench(root, res, "--resume", "--n-context", "3")) == 2
    assert "n_context=2 there, 3 now" in capsys.readouterr().err
    assert R.main(_bench(root, res, "--resume")) == 0
    assert planned == ["beta"] and "1 of 2 sequences are complete" in capsys.readouterr().err
    assert _snapshot(out / "alpha") == alpha and len(list((out / "beta").glob("*.png"))) == 6
    # a sequence whose folder lost a PNG is not complete any more
    (out / "alpha" / "00004.png").unlink()
    assert R.main(_bench(root, res, "--resume")) == 0
    assert planned == ["beta", "alpha"] and len(list((out / "alpha").glob("*.png"))) == 6
    assert R.main(_bench(root, res, "--resume")) == 0
    assert planned == ["beta", "alpha"] and "2 of 2 sequences are complete" in capsys.readouterr().err


def test_one_progress_bar_over_all_frames(davis16, capsys):
    root, res = davis16
    assert R.main(_bench(root, res)) == 0
    err = capsys.readouterr().err
    assert "davis16: 100%" in err and "12/12 [" in err and "/6 [" not in err  # one bar, not one per sequence
    assert "<00:00" in err  # tqdm's remaining-time field


def test_stale_score_tables_are_removed_when_their_sequences_change(davis16, capsys):
    root, res = davis16
    out = res / "random" / "davis16"
    assert R.main(_bench(root, res)) == 0
    assert ev.main(["random", "davis16", "--results-dir", str(res), "--data-root", str(root)]) == 0
    pd.DataFrame({"Sequence": ["beta_1"], "J-Mean": [0.5], "F-Mean": [0.5]}).to_csv(
        out / "per-sequence_results-x.csv", index=False)  # a table of beta only (as --split writes)
    (out / "global_results-x.csv").write_text("J&F-Mean\n0.5\n")
    capsys.readouterr()
    assert R.main(_bench(root, res, "--sequences", "alpha", "--overwrite")) == 0
    assert "removed global_results.csv, per-sequence_results.csv" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.csv")) == ["global_results-x.csv", "per-sequence_results-x.csv"]
    assert R.main(_bench(root, res, "--sequences", "beta", "--overwrite")) == 0
    assert not list(out.glob("*.csv"))
    assert ev.main(["random", "davis16", "--results-dir", str(res), "--data-root", str(root)]) == 0


# --------------------------------------------------------------------------- 9. help, progress, segment.json


def test_scripts_print_their_full_help():
    for script, flags in (("run_test.sh", ["--resume", "--save-overlays", "--n-context", "--overwrite"]),
                          ("run_metrics.sh", ["--split", "--sequences", "--overwrite"])):
        done = subprocess.run(["bash", f"scripts/{script}", "--help"], cwd=REPO_ROOT, env=_env(), capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: bash scripts/{script}") and all(f in done.stdout for f in flags)


def test_segment_help_gives_every_default_and_unit():
    parser = S.build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.option_strings
    text = parser.format_help()
    for flag, unit in (("--input-size", "pixels"), ("--radius", "cells"), ("--n-context", "frames"),
                       ("--fps", "frames per second"), ("--max-frames", "frames")):
        helps = [a.help for a in parser._actions if flag in a.option_strings]
        assert unit in helps[0], flag
    assert "--progress" in text


def test_segment_progress_bar_on_a_terminal_and_record(clip, tmp_path, monkeypatch, capsys):
    folder, mask = clip
    assert _segment(folder, mask, tmp_path / "quiet", "--no-overlay") == 0
    assert "%|" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _segment(folder, mask, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "frames: 100%" in err and "8/8 [" in err
    rec = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert rec["model"] == {"name": "random", "path": None} and rec["objects"] == [3, 5]
    assert rec["objects_requested"] is None and rec["codec"] == "h264"


# --------------------------------------------------------------------------- 10. H.264 overlay


@pytest.mark.parametrize("h264", [True, False])
def test_overlay_video_is_h264_or_falls_back_to_mp4v_with_a_warning(tmp_path, monkeypatch, h264):
    if not h264:
        monkeypatch.setattr(V, "imageio_ffmpeg", None)
    frames = [f[:47, :63] for f in _frames(5)]  # odd sizes: padded to even ones
    ids = _two_objects()[:47, :63]
    path = tmp_path / "o.mp4"
    if h264:
        with V.OverlayWriter(path, 10) as w:
            for f in frames:
                w.write(f, ids)
    else:
        with pytest.warns(UserWarning, match="mp4v instead of H.264"):
            with V.OverlayWriter(path, 10) as w:
                for f in frames:
                    w.write(f, ids)
    assert w.codec == ("h264" if h264 else "mp4v")
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        n += 1
        last = bgr
    cap.release()
    assert n == 5 and fourcc in (("h264", "avc1") if h264 else ("mp4v", "fmp4"))  # fmp4: FFmpeg's name for mp4v
    assert last.shape[:2] == (48, 64)
    # the decoded last frame shows the overlay of the last input frame (lossy codec: loose tolerance)
    expected = cv2.cvtColor(V.overlay(frames[-1], ids), cv2.COLOR_RGB2BGR)
    assert np.abs(last[:47, :63].astype(int) - expected).mean() < 12


# --------------------------------------------------------------------------- 11. frame sizes


def test_frame_of_another_size_is_named(clip, davis16, tmp_path, capsys):
    folder, mask = clip
    Image.fromarray(_frames(1, 40, 64)[0]).save(folder / "00003.png")
    assert _segment(folder, mask, tmp_path / "out") == 1
    line = _error_line(capsys.readouterr().err, S.PROG)
    assert str(folder / "00003.png") in line and "64x40" in line and "00000.png" in line
    assert not (tmp_path / "out").exists()
    root, res = davis16
    jpg = root / "DAVIS2016" / "JPEGImages" / "480p" / "beta" / "00004.jpg"
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(jpg)
    assert R.main(_bench(root, res)) == 1
    assert str(jpg) in _error_line(capsys.readouterr().err, R.PROG)
    assert not (res / "random" / "davis16" / "beta").exists() and not _hidden(res)


def test_ffmpeg_failure_names_the_video(tmp_path):
    w = V.OverlayWriter(tmp_path / "missing" / "o.mp4", 10)  # ffmpeg cannot create the file
    with pytest.raises(OSError) as exc:
        with w:
            for f in _frames(3):
                w.write(f, _two_objects())
    assert exc.value.filename == str(tmp_path / "missing" / "o.mp4") and "ffmpeg" in exc.value.strerror


# --------------------------------------------------------------------------- 6. training

TRAIN = ["--mode", "video", "--batch-size", "2", "--img-size", "64", "--seed", "7", "--workers", "0", "--threads", "1",
         "--log-every", "1", "--no-progress", "--no-tensorboard"]


@pytest.fixture
def video_data(data_root):
    from conftest import require_data

    return require_data(data_root / "unlabeled-video" / "JPEGImages", "unlabeled video").parent


@pytest.mark.data
def test_training_killed_before_its_first_checkpoint_resumes_from_step_0(video_data, tmp_path, monkeypatch, capsys):
    from hvc import train as T
    from hvc import trainer

    out = tmp_path / "run"
    args = ["--data", str(video_data), "--steps", "3", "--ckpt-every", "100", *TRAIN, "--output-dir", str(out)]
    monkeypatch.setattr(trainer, "save_checkpoint", _fail_on_call(trainer.save_checkpoint, 1, KeyboardInterrupt()))
    assert T.main(args) == 130  # killed at its first checkpoint: log rows and run.json, no checkpoint
    assert err_last(capsys) == "hvc.train: interrupted"
    assert (out / "log.csv").is_file() and not (out / "checkpoint.pth").exists()
    monkeypatch.undo()
    stale = out / f".checkpoint.pth.tmp{_dead_pid()}"  # what a SIGKILL during a save leaves
    stale.write_bytes(b"\0" * 2**20)
    assert T.main([*args, "--resume", "auto"]) == 0
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint" in err and "starting it again at step 0" in err
    assert f"removed {stale} (1.0 MiB), a temporary file left by a killed run" in err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 3 and not stale.exists()
    assert pd.read_csv(out / "log.csv")["step"].tolist() == [1, 2, 3]


def err_last(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.data
def test_training_on_a_full_disk_names_the_checkpoint_and_keeps_the_last_one(video_data, tmp_path, monkeypatch,
                                                                             capsys):
    import builtins

    from hvc import checkpoint as C
    from hvc import train as T

    out = tmp_path / "run"
    calls = [0]

    def disk_fills_up(path, mode="r", *a, **k):  # the second checkpoint's bytes do not fit
        f = builtins.open(path, mode, *a, **k)
        if "w" in mode:
            calls[0] += 1
            if calls[0] == 2:
                f.write = lambda data: (_ for _ in ()).throw(_enospc())
        return f

    monkeypatch.setattr(C, "open", disk_fills_up, raising=False)
    args = ["--data", str(video_data), "--steps", "4", "--ckpt-every", "2", *TRAIN, "--output-dir", str(out)]
    assert T.main(args) == 1
    line = _error_line(capsys.readouterr().err, "hvc.train")
    ckpt = out / "checkpoint.pth"
    assert f"{ckpt}: No space left on device while saving step 4; {ckpt} holds step 2, continue from it with " \
           f"--resume auto" in line
    assert load_checkpoint(ckpt)["step"] == 2 and not list(out.glob(".*tmp*"))
    monkeypatch.undo()
    assert T.main([*args, "--resume", "auto"]) == 0 and load_checkpoint(ckpt)["step"] == 4

"""Multi-reference propagation (objects starting mid-video), YouTube-VOS and DAVIS test-dev runs,
their submission zips, and the rule that no ground truth beyond first appearance is read."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from conftest import require_data
from label_prop import run as R
from label_prop.config import PropagationConfig
from label_prop.data.datasets import get_benchmark
from label_prop.propagation.engine import LabelPropagator
from label_prop.propagation.features import build_encoder
from label_prop.data.io import DAVIS_PALETTE, read_mask, write_palette_png
from label_prop.propagation.multiref import MultiRefPropagator, hvc_unnormalised_merge, masks_on_grid
from label_prop.propagation.pipeline import first_frame_labels, labels_to_ids, segment_frames
from label_prop.evaluation.submission import build_submission

SIZE = (112, 64)  # (W, H) of the downscaled real frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _feats(T, C=16, h=6, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(T, C, h, w, generator=g), dim=1)


def _onehot_labels(h=6, w=9, K=3):
    m = np.zeros((h, w), np.uint8)
    m[1:4, 1:4] = 1
    m[3:6, 5:8] = 2
    return m, masks_on_grid(m, {1: 1, 2: 2}, K, (h, w), with_background=True)


def test_single_reference_is_bit_for_bit_the_engine():
    feats = _feats(9)
    _, labels = _onehot_labels()
    cfg = PropagationConfig(n_context=3, radius=3, topk=5)
    ref = LabelPropagator(feats[0], labels, cfg)
    mr = MultiRefPropagator(3, cfg)
    y0 = mr.step(feats[0], labels, [1, 2])
    assert torch.equal(y0, labels)
    for t in range(1, 9):
        assert torch.equal(mr.step(feats[t]), ref.step(feats[t]))


def test_mid_video_object_merge_is_renormalised_and_overrides():
    feats = _feats(10, seed=1)
    m, _ = _onehot_labels(K=3)
    first = masks_on_grid(np.where(m == 2, 0, m), {1: 1}, 3, (6, 9), with_background=True)
    mr = MultiRefPropagator(3, PropagationConfig(n_context=3, radius=3, topk=5))
    mr.step(feats[0], first, [1])
    for t in range(1, 4):
        y = mr.step(feats[t])
        assert torch.all(y[2] == 0)  # object 2 has not started: its channel stays empty
    g = masks_on_grid(m, {2: 2}, 3, (6, 9), with_background=False)
    y = mr.step(feats[4], g, [2])
    inside = g[2] == 1
    assert torch.allclose(y[2][inside], torch.ones(int(inside.sum())))  # the given mask overrides
    assert torch.allclose(y.sum(0), torch.ones(6, 9), atol=1e-5)
    assert mr.ref_frames == [0, 4] and mr.owner == [0, 0, 1]
    worst = 0.0
    for t in range(5, 10):
        preds = [r.predict(feats[t]) for r in mr.refs]
        hvc = hvc_unnormalised_merge(preds, [torch.tensor([1, 1, 0]), torch.tensor([0, 0, 1])])
        worst = max(worst, float((hvc.sum(0) - 1).abs().max()))
        y = mr.step(feats[t])
        assert torch.allclose(y.sum(0), torch.ones(6, 9), atol=1e-5)  # ours: a distribution
        assert torch.all(y >= 0)
    assert worst > 1e-3  # the public reference's merge does not sum to 1 (docs/method.md, differences)


def _small_real_frames(data_root, seq, n, start=0):
    src = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    frames = sorted((src / "JPEGImages" / "480p" / seq).glob("*.jpg"))[start:start + n]
    anns = sorted((src / "Annotations" / "480p" / seq).glob("*.png"))[start:start + n]
    imgs = [np.asarray(Image.open(f).convert("RGB").resize(SIZE, Image.BILINEAR)) for f in frames]
    masks = [(np.asarray(Image.open(a).convert("L").resize(SIZE, Image.NEAREST)) > 0).astype(np.uint8) for a in anns]
    return imgs, masks


def test_segment_frames_unchanged_for_objects_at_frame_0(data_root):
    """DAVIS behaves exactly as before: the old runner loop (first_frame_labels + one engine)."""
    imgs, masks = _small_real_frames(data_root, "bmx-trees", 4)
    mask = masks[0].copy()
    mask[:16, :24] = 2
    enc = build_encoder("random", seed=0)
    cfg = PropagationConfig(n_context=2)
    new = list(segment_frames(imgs, mask, enc, cfg))
    labels, ids = first_frame_labels(mask, tuple(enc.encode_frame(imgs[0]).shape[1:]))
    eng = LabelPropagator(enc.encode_frame(imgs[0]), labels, cfg)
    old = [mask] + [labels_to_ids(eng.step(enc.encode_frame(f)), mask.shape, ids) for f in imgs[1:]]
    assert all(np.array_equal(a, b) for a, b in zip(new, old))


def build_ytvos(data_root, root: Path, year="2018", full_gt=True):
    """A YouTube-VOS valid layout from real DAVIS frames (downscaled to 64x112).

    Video ``swan`` (16 frames, blackswan): object 1 = the swan from frame 0; object 2 = a real
    image patch (from car-shadow) pasted into frames 10..15, listed in meta.json from 00010.
    Video ``late`` (8 frames, car-shadow): object 1 listed from 00005 only (frames 0..4 are
    before any object). meta.json lists every 5th frame. With ``full_gt`` every frame has an
    Annotations PNG holding all objects present, so reading any of them beyond first
    appearance would be a leak.
    """
    base = root / f"YTVOS{year}" / "valid"
    swan, smask = _small_real_frames(data_root, "blackswan", 16)
    car, cmask = _small_real_frames(data_root, "car-shadow", 8)
    patch = car[0][5:29, 60:100]
    videos = {}
    for vid, imgs, masks, objs in (
        ("swan", swan, smask, {"1": ["00000", "00005", "00010", "00015"], "2": ["00010", "00015"]}),
        ("late", car, cmask, {"1": ["00005"]}),
    ):
        (base / "JPEGImages" / vid).mkdir(parents=True)
        (base / "Annotations" / vid).mkdir(parents=True)
        for t, (img, m) in enumerate(zip(imgs, masks)):
            img, m = img.copy(), m.copy()
            if vid == "swan" and t >= 10:
                y, x = 4, 4 + (t - 10)
                img[y:y + 24, x:x + 40] = patch
                m[y:y + 24, x:x + 40] = 2
            Image.fromarray(img).save(base / "JPEGImages" / vid / f"{t:05d}.jpg", quality=95)
            if full_gt or any(f"{t:05d}" == fr[0] for fr in objs.values()):
                write_palette_png(base / "Annotations" / vid / f"{t:05d}.png", m)
        videos[vid] = {"objects": {k: {"category": "thing", "frames": v} for k, v in objs.items()}}
    (base / "meta.json").write_text(json.dumps({"videos": videos}))
    return base


@pytest.fixture
def record_opened(monkeypatch):
    """Every path PIL opens during the test."""
    opened: list[str] = []
    real_open = PIL.Image.open

    def spy(fp, *a, **k):
        opened.append(str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(PIL.Image, "open", spy)
    return opened


@pytest.mark.data
def test_ytvos18_end_to_end_zip_and_no_gt_leak(data_root, tmp_path, record_opened):
    root = tmp_path / "data"
    build_ytvos(data_root, root)
    res = tmp_path / "results"
    record_opened.clear()
    assert R.main(["random", "ytvos18", "--data-root", str(root), "--results-dir", str(res), "--n-context", "3", "--radius", "4"]) == 0
    read = sorted({Path(p).relative_to(root / "YTVOS2018" / "valid" / "Annotations").as_posix()
                   for p in record_opened if "Annotations" in p and str(root) in p})
    assert read == ["late/00005.png", "swan/00000.png", "swan/00010.png"]  # first appearances only

    out = res / "random" / "ytvos18"
    assert sorted(p.stem for p in (out / "swan").glob("*.png")) == ["00000", "00005", "00010", "00015"]
    assert sorted(p.stem for p in (out / "late").glob("*.png")) == ["00005"]
    ids = {p.stem: read_mask(p) for p in (out / "swan").glob("*.png")}
    for p in (out / "swan").glob("*.png"):
        with PIL.Image.open(p) as im:
            assert im.mode == "P" and im.size == SIZE
            assert np.array_equal(np.asarray(im.getpalette()).reshape(-1, 3)[:3], DAVIS_PALETTE[:3])
    assert 2 not in ids["00005"] and 1 in ids["00005"]  # object 2 does not exist before frame 10
    assert (ids["00010"][4:28, 4:44] == 2).all()  # its given mask at its first frame
    assert (ids["00015"] == 2).sum() > 0.5 * 24 * 40  # and it is tracked afterwards
    assert (ids["00015"] == 1).sum() > 0

    with zipfile.ZipFile(res / "random" / "ytvos18.zip") as zf:
        names = sorted(zf.namelist())
        assert names == ["Annotations/late/00005.png", "Annotations/swan/00000.png", "Annotations/swan/00005.png",
                         "Annotations/swan/00010.png", "Annotations/swan/00015.png"]
        with zf.open("Annotations/swan/00010.png") as f:
            assert np.array_equal(np.asarray(Image.open(f)), ids["00010"])
    rec = json.loads(next(out.glob("run-*.json")).read_text())
    assert rec["submission_zip"].endswith("ytvos18.zip") and rec["sequences"]["swan"]["written"] == 4
    assert rec["sequences"]["late"]["frames"] == 3  # propagation starts at the first appearance
    # the zip is never replaced without --overwrite
    zpath = res / "random" / "ytvos18.zip"
    before = zpath.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        build_submission("ytvos18", out, zpath, root=root)
    import shutil

    shutil.rmtree(out / "late")  # results gone but the zip is there: the runner still refuses
    assert R.main(["random", "ytvos18", "--data-root", str(root), "--results-dir", str(res)]) == 2
    assert zpath.read_bytes() == before


@pytest.mark.data
def test_ytvos_plan_and_layout_errors(data_root, tmp_path):
    root = tmp_path / "data"
    base = build_ytvos(data_root, root, year="2019", full_gt=False)
    bench = get_benchmark("ytvos19")
    plan = bench.plan("swan", root)
    assert len(plan.frames) == 16 and plan.saved_names() == ["00000", "00005", "00010", "00015"]
    assert plan.start_ids == {0: [1], 10: [2]} and plan.object_ids == [1, 2]
    late = bench.plan("late", root)
    assert late.frames[0].stem == "00005" and late.start_ids == {0: [1]}
    # sparse-only JPEGImages (no valid_all_frames): a clear error
    for p in (base / "JPEGImages" / "swan").glob("*.jpg"):
        if int(p.stem) % 5:
            p.unlink()
    with pytest.raises(ValueError, match="valid_all_frames"):
        bench.plan("swan", root)
    # an object whose listed frames hold no annotation with its id
    meta = json.loads((base / "meta.json").read_text())
    meta["videos"]["late"]["objects"]["3"] = {"category": "x", "frames": ["00005"]}
    (base / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="contains object 3"):
        bench.plan("late", root)


@pytest.mark.data
def test_davis17dev_multi_object_end_to_end_zip(data_root, tmp_path, record_opened):
    """Two real multi-object test-dev sequences (downscaled by 6, 4 frames): zip for upload, and
    only frame 0's annotation is opened although every frame has one."""
    src = require_data(data_root / "DAVIS2017-test-dev", "DAVIS-2017 test-dev")
    dst = tmp_path / "data" / "DAVIS2017-test-dev"
    seqs = ["people-sunset", "car-race"]
    (dst / "ImageSets" / "2017").mkdir(parents=True)
    (dst / "ImageSets" / "2017" / "test-dev.txt").write_text("\n".join(seqs) + "\n")
    ids0 = {}
    for seq in seqs:
        (dst / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        for f in sorted((src / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:4]:
            im = Image.open(f)
            im.resize((im.width // 6, im.height // 6), Image.BILINEAR).save(dst / "JPEGImages" / "480p" / seq / f.name)
        m = Image.open(src / "Annotations" / "480p" / seq / "00000.png")
        m = np.asarray(m.resize((m.width // 6, m.height // 6), Image.NEAREST))
        for t in range(4):  # later "ground truth" present too: reading it would be a leak
            write_palette_png(dst / "Annotations" / "480p" / seq / f"{t:05d}.png", m)
        ids0[seq] = set(np.unique(m).tolist()) - {255}
    assert max(len(v) for v in ids0.values()) >= 3  # background + >= 2 objects
    res = tmp_path / "results"
    record_opened.clear()
    assert R.main(["random", "davis17dev", "--data-root", str(tmp_path / "data"), "--results-dir", str(res),
                   "--n-context", "2", "--radius", "3"]) == 0
    assert sorted({p for p in record_opened if "Annotations" in p and str(tmp_path) in p}) == sorted(
        str(dst / "Annotations" / "480p" / s / "00000.png") for s in seqs)
    with zipfile.ZipFile(res / "random" / "davis17dev.zip") as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"{s}/{t:05d}.png" for s in seqs for t in range(4))
        for n in names:
            with zf.open(n) as f, Image.open(f) as im:
                assert im.mode == "P"
                assert set(np.unique(np.asarray(im)).tolist()) <= ids0[n.split("/")[0]]
    # a missing prediction is named when zipping
    (res / "random" / "davis17dev" / "car-race" / "00003.png").unlink()
    with pytest.raises(FileNotFoundError, match="00003.png"):
        build_submission("davis17dev", res / "random" / "davis17dev", tmp_path / "x.zip", root=tmp_path / "data")

"""Training data: corrupt files, image presets, video index/clips, resumable shuffling
(docs/method.md, "Training data")."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvc.data import (CorruptImageWarning, EpochSampler, StaticImageDataset, UnreadableImageError, VideoFrameDataset,
                      load_rgb, read_index_csv)
from hvc.data.images import resolve_preset
from hvc.data.video import scan_video_folders


def write_jpg(path: Path, seed: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path


def test_corrupt_image_is_warned_skipped_and_counted(tmp_path):
    folder = tmp_path / "imgs"
    for k in range(4):
        write_jpg(folder / f"ok{k}.jpg", k)
    (folder / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    good = (folder / "ok0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    ds = StaticImageDataset(tmp_path, image_sets=[], image_dirs=["imgs"], size=16)
    assert ds.num_items() == 6
    names = [p.name for p in ds.files]
    with pytest.warns(CorruptImageWarning) as record:
        items = [ds[(i, i)] for i in range(len(ds))]
    named = {n for w in record for n in names if n in str(w.message)}
    assert named == {"garbage.jpg", "truncated.jpg"}  # each warning names the bad file
    # every failed read is warned and counted: 'garbage' (item 0), 'truncated' (last item, which
    # wraps round to 'garbage' before 'ok0') -> 3 failed reads
    assert ds.num_skipped == len(record) == 3
    assert sum(int(it["skipped"]) for it in items) == 3
    for it in items:  # every returned item is a readable image
        assert names[int(it["index"])].startswith("ok")
        assert it["view1"].shape == (1, 3, 16, 16) and it["coord1"].shape == (1, 4)
    with pytest.raises(UnreadableImageError, match="garbage.jpg"):
        load_rgb(folder / "garbage.jpg")


def test_all_unreadable_raises_naming_the_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"y")
    ds = StaticImageDataset(tmp_path, image_sets=[], image_dirs=[tmp_path], size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        with pytest.raises(RuntimeError, match="a.jpg"):
            ds[0]


def test_image_presets_and_several_folders(tmp_path):
    write_jpg(tmp_path / "JPEGImages" / "COCO" / "1.jpg", 1)
    write_jpg(tmp_path / "JPEGImages" / "COCO" / "2.jpg", 2)
    write_jpg(tmp_path / "VOC2012" / "JPEGImages" / "a.jpg", 3)
    write_jpg(tmp_path / "MSRA10K_Imgs_GT" / "Imgs" / "m.jpg", 4)
    (tmp_path / "MSRA10K_Imgs_GT" / "Imgs" / "m.png").write_bytes(b"gt mask, not an input")
    assert resolve_preset(tmp_path, "coco")[0] == tmp_path / "JPEGImages" / "COCO"
    ds = StaticImageDataset(tmp_path, image_sets=["coco", "voc", "msra10k"], size=8)
    assert sorted(p.name for p in ds.files) == ["1.jpg", "2.jpg", "a.jpg", "m.jpg"]  # all sets kept (bug 3)
    with pytest.raises(FileNotFoundError, match="voc"):
        StaticImageDataset(tmp_path / "JPEGImages", image_sets=["voc"])
    with pytest.raises(ValueError, match="unknown image set"):
        StaticImageDataset(tmp_path, image_sets=["imagenet"])


def test_epoch_sampler_shuffles_and_resumes(tmp_path):
    for k in range(10):
        write_jpg(tmp_path / f"{k}.jpg", k, size=(8, 8))
    ds = StaticImageDataset(tmp_path, image_sets=[], image_dirs=[tmp_path], size=8)
    s = EpochSampler(ds, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(i for i, _ in e0) == list(range(10))  # a permutation of all images
    assert [i for i, _ in e0] != [i for i, _ in e1]  # reshuffled every epoch (bug 2)
    assert [i for i, _ in e0] != list(range(10))
    s.set_epoch(1, start=4)
    assert list(s) == e1[4:] and len(s) == 6  # resuming mid-epoch continues the same order
    assert list(EpochSampler(ds, seed=3).epoch_keys(1)[0]) == [i for i, _ in e1]
    # an item is a pure function of its key
    a, b = ds[e1[0]], ds[e1[0]]
    assert torch.equal(a["view1"], b["view1"]) and torch.equal(a["coord2"], b["coord2"])


def make_videos(root: Path, lengths: dict) -> None:
    for name, (first, n) in lengths.items():
        for k in range(first, first + n):
            write_jpg(root / "JPEGImages" / name / f"{k:05d}.jpg", k, size=(12, 10))


def test_video_index_clips_and_epoch(tmp_path):
    make_videos(tmp_path, {"b": (0, 6), "a": (3, 4)})
    (tmp_path / "JPEGImages" / "a" / "notes.txt").write_text("ignored")
    entries = scan_video_folders(tmp_path)
    assert [(e.name, e.first, e.num_frames) for e in entries] == [("a", 3, 4), ("b", 0, 6)]
    index = tmp_path / "out" / "ytvos.csv"
    ds = VideoFrameDataset(tmp_path, clip_len=2, frame_rate=15, clips_per_video=3, index_csv=index, size=8)
    assert index.is_file() and ds.index_source == "scan"  # generated when missing
    assert [(e.name, e.first, e.num_frames) for e in read_index_csv(index)] == [("a", 3, 4), ("b", 0, 6)]
    assert ds.dilation == 2
    assert list(ds.num_clips) == [2, 4]  # n - (clip_len - 1) * dilation
    assert [p.name for p in ds.item_paths(0)] == ["00003.jpg", "00005.jpg"]
    assert [p.parent.name + "/" + p.name for p in ds.item_paths(2)] == ["b/00000.jpg", "b/00002.jpg"]
    assert ds.epoch_length() == 2 + 3  # min(#clips, clips_per_video) per video
    order = ds.epoch_indices(np.random.default_rng(0))
    assert len(order) == 5 and len(set(order.tolist())) == 5
    assert sum(1 for i in order if i >= 2) == 3
    item = ds[(0, 1)]
    assert item["view1"].shape == (2, 3, 8, 8) and item["coord1"].shape == (2, 4)
    # a second dataset reads the saved index instead of scanning
    again = VideoFrameDataset(tmp_path, clip_len=1, index_csv=index, size=8)
    assert again.index_source == str(index) and again.num_items() == 10


def test_video_index_errors_name_the_file(tmp_path):
    make_videos(tmp_path, {"v": (0, 3)})
    bad = tmp_path / "bad.csv"
    bad.write_text("v,0\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        read_index_csv(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("v,0,5\n")
    with pytest.raises(ValueError, match="00004.jpg"):
        VideoFrameDataset(tmp_path, index_csv=wrong, size=8)
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VideoFrameDataset(tmp_path / "nowhere", size=8)


def test_frame_cache_gives_the_same_items(tmp_path):
    """Cached frames (filled on first read, or by preload) give exactly the uncached crops; the
    cache stops at its byte budget; unreadable files are not cached and are still skipped."""
    make_videos(tmp_path, {"a": (0, 5), "b": (0, 4)})
    (tmp_path / "JPEGImages" / "b" / "00002.jpg").write_bytes(b"not a jpeg")
    plain = VideoFrameDataset(tmp_path, clip_len=2, index_csv=tmp_path / "i.csv", size=8)
    lazy = VideoFrameDataset(tmp_path, clip_len=2, index_csv=tmp_path / "i.csv", size=8, cache_bytes=10**6)
    pre = VideoFrameDataset(tmp_path, clip_len=2, index_csv=tmp_path / "i.csv", size=8, cache_bytes=10**6)
    assert pre.preload(threads=2) == (8, 8 * 12 * 10 * 3)  # 9 frames, one unreadable
    assert lazy.cached_frames == 0
    keys = [(i, 100 + i) for i in range(plain.num_items())] * 2  # second pass: lazy reads its cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        for key in keys:
            a, b, c = plain[key], lazy[key], pre[key]
            for name in ("view1", "view2", "coord1", "coord2", "index", "skipped"):
                assert torch.equal(a[name], b[name]) and torch.equal(a[name], c[name]), (key, name)
    # b/00003 is only read in the clip (b/00002, b/00003), which fails on its first frame
    assert lazy.cached_frames == 7 and pre.cached_frames == 8
    assert lazy.num_skipped == plain.num_skipped > 0
    small = VideoFrameDataset(tmp_path, index_csv=tmp_path / "i.csv", size=8, cache_bytes=3 * 12 * 10 * 3)
    assert small.preload() == (3, 3 * 360) and small.cached_bytes <= small.cache_bytes
    assert VideoFrameDataset(tmp_path, index_csv=tmp_path / "i.csv", size=8).preload() == (0, 0)


def test_sampler_shards_global_batches_over_ranks(tmp_path):
    """Rank r of W takes slice r of every global batch: the union of the ranks' step-k batches
    is the single-process step-k batch, for every epoch and after a resume."""
    for k in range(11):
        write_jpg(tmp_path / f"{k}.jpg", k, size=(8, 8))
    ds = StaticImageDataset(tmp_path, image_sets=[], image_dirs=[tmp_path], size=8)
    single = EpochSampler(ds, seed=5, batch_size=4)
    ranks = [EpochSampler(ds, seed=5, rank=r, world_size=2, batch_size=4) for r in range(2)]
    for epoch, start in ((0, 0), (1, 0), (3, 4)):
        for s in (single, *ranks):
            s.set_epoch(epoch, start)
        full = list(single)
        assert len(full) == len(single) == (8 - start)  # 11 items: two complete batches of 4
        order, seeds = EpochSampler(ds, seed=5).epoch_keys(epoch)
        assert full == list(zip(order.tolist(), seeds.tolist()))[start:8]
        parts = [list(s) for s in ranks]
        assert all(len(p) == len(s) == (8 - start) // 2 for p, s in zip(parts, ranks))
        for g in range(len(full) // 4):
            assert parts[0][2 * g:2 * g + 2] + parts[1][2 * g:2 * g + 2] == full[4 * g:4 * g + 4]
    with pytest.raises(ValueError, match="multiple of the world size"):
        EpochSampler(ds, seed=5, rank=0, world_size=2, batch_size=3)
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(ds, seed=5, rank=2, world_size=2, batch_size=4)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        single.set_epoch(0, 2)

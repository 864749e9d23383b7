"""The per-frame API (VideoSegmenter), the config stated once, and the exit-code convention."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from skimage import data as skdata

from hvc.errors import EXIT_DATA, EXIT_USAGE, UsageError
from hvc.runtime import resolve_device, run_cli
from label_prop.config import PropagationConfig
from label_prop.propagation.features import FrameEncoder, random_resnet18
from label_prop.propagation.pipeline import VideoSegmenter, segment_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = PropagationConfig(n_context=2, radius=4, topk=5)


def _clip(n=4, h=40, w=56):
    """``n`` frames panning over a photograph, 1 pixel per frame."""
    img = skdata.astronaut()[::4, ::4]
    return [np.ascontiguousarray(img[10:10 + h, 10 + t:10 + t + w]) for t in range(n)]


def _mask(h=40, w=56, ids=(3,)):
    m = np.zeros((h, w), np.uint8)
    for k, i in enumerate(ids):
        m[5 + 12 * k:15 + 12 * k, 8:30] = i
    return m


@pytest.fixture(scope="module")
def encoder():
    return FrameEncoder(random_resnet18(0))


def test_step_with_cached_features_equals_step_with_images(encoder):
    frames, mask = _clip(), _mask(ids=(3, 7))
    a, b = VideoSegmenter(encoder, CFG), VideoSegmenter(encoder, CFG)
    feats = [a.encode(f) for f in frames]
    out_a = [a.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]
    out_b = [b.step(features=x, annotation=mask if t == 0 else None, size=mask.shape) for t, x in enumerate(feats)]
    assert all(np.array_equal(x, y) for x, y in zip(out_a, out_b))
    assert b.timings.features == 0 and b.timings.frames == len(frames)  # the encoder was not called
    assert list(b.channels.ids[:3]) == [0, 3, 7]  # the first annotation's ids, in order (late_starts: 19 more)
    assert np.array_equal(out_a, list(segment_frames(frames, mask, encoder, CFG)))
    assert b.labels.shape == (1 + CFG.max_objects, 5, 7)
    with pytest.raises(ValueError, match="frame 4 has size"):
        a.step(frames[0][:20])


def test_objects_discovered_mid_video_get_channels_and_their_pixels(encoder):
    frames = _clip(5)
    first, later = _mask(ids=(3,)), _mask(ids=(3, 5))
    seg = VideoSegmenter(encoder, CFG)
    assert not seg.step(frames[0]).any()  # no object yet: background, encoder not called
    assert seg.timings.features == 0 and seg.propagator is None
    out = [seg.step(frames[1], first), seg.step(frames[2]), seg.step(frames[3], later), seg.step(frames[4])]
    assert np.array_equal(out[0], first)
    assert seg.channels.started == {3: 1, 5: 2} and len(seg.channels.ids) == 1 + CFG.max_objects
    assert (out[2][later == 5] == 5).all()  # the new object's annotated pixels are pasted
    assert seg.propagator.ref_frames == [0, 2]  # the two references, counted from the first start (frame 1)
    tight = VideoSegmenter(encoder, dataclasses.replace(CFG, max_objects=1))
    tight.step(frames[0], first)
    with pytest.raises(ValueError, match="exceeds the 1 object channels"):
        tight.step(frames[1], later, source="later.png")


def test_config_is_stated_once_and_checked():
    parser = argparse.ArgumentParser()
    PropagationConfig.add_arguments(parser)
    assert PropagationConfig.from_mapping(vars(parser.parse_args([]))) == PropagationConfig()
    cfg = PropagationConfig.from_mapping({**vars(parser.parse_args(["--topk", "7", "--input-size", "240"])), "x": 1})
    assert (cfg.topk, cfg.input_size, cfg.n_context) == (7, 240, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.topk = 3
    for bad in (dict(topk=0), dict(temperature=0.0), dict(radius=-1), dict(n_context=-1), dict(input_size=0),
                dict(max_objects=0)):
        with pytest.raises(UsageError):
            PropagationConfig(**bad)


def test_exit_codes_and_one_line_errors(capsys):
    def fail(exc):
        def job():
            raise exc
        return job
    assert run_cli("prog", fail(UsageError("bad flag"))) == EXIT_USAGE == 2
    assert run_cli("prog", fail(FileExistsError("out exists"))) == EXIT_USAGE
    assert run_cli("prog", fail(FileNotFoundError("x.png missing"))) == EXIT_DATA == 1
    assert run_cli("prog", fail(ValueError("x.png corrupt"))) == EXIT_DATA
    assert capsys.readouterr().err.splitlines() == ["prog: error: bad flag", "prog: error: out exists",
                                                    "prog: error: x.png missing", "prog: error: x.png corrupt"]
    assert run_cli("prog", lambda: None) == 0
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_cli("prog", fail(KeyError("bug")))
    with pytest.raises(UsageError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")

"""The fixed dev / held-out halves of DAVIS-2016 val, and the scaled-input protocol (--input-size)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_data
from label_prop.config import PropagationConfig
from label_prop.data.datasets import SPLITS, get_benchmark, parse_sequences, split_sequences
from label_prop.propagation.features import random_resnet18, FrameEncoder, scaled_size
from label_prop.propagation.pipeline import segment_frames


@pytest.mark.data
def test_davis16_halves_are_disjoint_and_cover_val(data_root):
    require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    every = get_benchmark("davis16").sequences(data_root)
    dev, held = split_sequences("davis16", "dev"), split_sequences("davis16", "heldout")
    assert len(dev) == len(held) == 10
    assert not set(dev) & set(held)
    assert sorted(dev + held) == sorted(every)
    assert get_benchmark("davis16").sequences(data_root, dev) == dev  # benchmark order


def test_split_choice_errors():
    assert parse_sequences("davis16", None, None) is None
    assert parse_sequences("davis16", "a, b", None) == ["a", "b"]
    assert parse_sequences("davis16", None, "dev") == list(SPLITS["davis16"]["dev"])
    with pytest.raises(ValueError, match="not both"):
        parse_sequences("davis16", "blackswan", "dev")
    with pytest.raises(ValueError, match="unknown split 'train'"):
        split_sequences("davis16", "train")
    with pytest.raises(ValueError, match="no named splits"):
        split_sequences("davis17", "dev")


def test_scaled_size():
    assert scaled_size((480, 854), -1) == (480, 854)
    assert scaled_size((480, 854), 240) == (240, 427)
    assert scaled_size((854, 480), 240) == (427, 240)
    with pytest.raises(ValueError, match="input size"):
        scaled_size((480, 854), 0)


def test_input_size_changes_the_grid_not_the_output_size(one_torch_thread):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((48, 80), np.uint8)
    mask[10:30, 20:50] = 1
    enc = FrameEncoder(random_resnet18(0))
    assert tuple(enc.encode_frame(frames[0], input_size=24).shape[1:]) == (3, 5)
    assert tuple(enc.encode_frame(frames[0]).shape[1:]) == (6, 10)
    outs = list(segment_frames(frames, mask, enc, PropagationConfig(n_context=2, input_size=24)))
    assert [o.shape for o in outs] == [(48, 80)] * 3
    assert np.array_equal(outs[0], mask)  # frame 0 is the full-resolution annotation
    full = list(segment_frames(frames, mask, enc, PropagationConfig(n_context=2)))
    assert all(o.shape == (48, 80) for o in full)

"""The machine probe (hvc.hardware): what it reports and the rule that picks a precision."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hvc import hardware as H


def test_describe_names_the_cpu_and_only_known_flags():
    d = H.describe("cpu")
    assert isinstance(d["cpu"], str) and d["cpu"]
    assert set(d["cpu_flags"]) <= set(H.CPU_FLAGS) and d["threads"] == torch.get_num_threads()
    assert H.cpu_model() in H.in_words("cpu")


@pytest.mark.parametrize("seconds, want", [
    ({"float32": 1.0, "bfloat16": 0.5, "bfloat16-cl": 0.2}, ("bfloat16", True)),    # much faster, NHWC best
    ({"float32": 1.0, "bfloat16": 0.3, "bfloat16-cl": 0.6}, ("bfloat16", False)),   # much faster, NCHW best
    ({"float32": 1.0, "bfloat16": 0.9, "bfloat16-cl": 0.95}, ("float32", False)),   # within the margin: exact mode
    ({"float32": 1.0, "bfloat16": 12.0, "bfloat16-cl": 11.0}, ("float32", False)),  # no bf16 units (AVX2)
])
def test_auto_keeps_float32_unless_another_is_clearly_faster(seconds, want):
    assert H.decide("auto", seconds) == want


def test_a_named_precision_is_kept_and_only_its_layout_chosen():
    assert H.decide("bfloat16", {"bfloat16": 2.0, "bfloat16-cl": 1.0}) == ("bfloat16", True)
    assert H.decide("bfloat16", {"bfloat16": 1.0, "bfloat16-cl": 2.0}) == ("bfloat16", False)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def test_choose_precision_probes_what_it_says(one_torch_thread):
    f32 = H.choose_precision("float32", "cpu", _Tiny, size=16)
    assert (f32.precision, f32.channels_last, f32.seconds) == ("float32", False, {})  # exact: no probe
    auto = H.choose_precision("auto", "cpu", _Tiny, size=16, repeats=1)
    assert set(auto.seconds) == {"float32", "bfloat16", "bfloat16-cl"} and all(t > 0 for t in auto.seconds.values())
    assert (auto.precision, auto.channels_last) == H.decide("auto", auto.seconds)
    assert auto.record()["requested"] == "auto" and "_Tiny" in auto.probe
    with pytest.raises(ValueError, match="precision must be auto or one of"):
        H.choose_precision("float64", "cpu", _Tiny)


def test_gemm_rate_is_a_positive_rate(one_torch_thread):
    assert H.gemm_gflops(torch.float32, shape=(64, 32, 64), repeats=1) > 0

"""The protocol grid of benchmarks/protocol_grid.py: one setting at a time around the reference."""
from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "protocol_grid", Path(__file__).resolve().parents[1] / "benchmarks" / "protocol_grid.py")
protocol_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protocol_grid)


def test_grid_varies_one_setting_at_a_time_without_repeats():
    points = protocol_grid.grid([0.05, 0.1, 0.2], [5, 15], [20, 5])
    ref = {"temperature": 0.1, "topk": 15, "n_context": 20}
    assert points[0] == ref
    assert len(points) == len({tuple(sorted(p.items())) for p in points}) == 5
    for p in points[1:]:
        assert sum(p[k] != ref[k] for k in ref) == 1, p
    assert {p["temperature"] for p in points} == {0.05, 0.1, 0.2} and {p["n_context"] for p in points} == {20, 5}

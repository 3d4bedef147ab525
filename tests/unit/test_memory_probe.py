"""``memory_probe.trace_report``: the tracemalloc differences ``benchmarks/load.py --tracemalloc`` reads."""

from __future__ import annotations

import tracemalloc

from tinyllm_ray import memory_probe


def test_trace_report_names_the_line_that_grew() -> None:
    tracemalloc.start(2)
    try:
        before = tracemalloc.take_snapshot()
        kept = [bytearray(4096) for _ in range(256)]  # ~1 MB held past the second snapshot
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    text = memory_probe.trace_report(before, after, elapsed=1.0, frames=2, top=4)
    first = text.split("by line")[1].splitlines()[1]
    assert f"{__file__}:" in first and float(first.split("KB")[0]) > 1000
    assert "by traceback" in text
    assert len(kept) == 256

"""benchmarks/chaos.py end to end: 3 rounds of `tinyllm-ray run` with a teacher kill, an engine error,
a training-worker SIGKILL and a driver kill + resubmit each (real Ray, vLLM, Ray Train, DeepSpeed).

Checked: the results are well-formed and no record is lost or duplicated (a correctness
property). Accuracy and time are reported by the benchmark, never asserted here.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_three_chaos_rounds_lose_and_duplicate_nothing(tmp_path, no_ray_in_process):
    from benchmarks._chaos_plan import KINDS
    from benchmarks.chaos import main

    out = tmp_path / "results" / "chaos"
    assert main(["--rounds", "3", "--seed", "0", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    s = result["summary"]
    assert s["rounds"] == len(result["results"]) == 3 and set(s["by_kind"]) == set(KINDS)
    assert s["planned"] == 3 * len(KINDS) and s["injected"] >= 3, s  # a kill planned after the last step is not
    for r in result["results"]:
        assert r["records"] > 0
        assert {"lost", "duplicated", "different", "steps_redone", "val_accuracy", "attempts"} <= set(r)
    assert (s["lost"], s["duplicated"]) == (0, 0), s
    assert f"| **total** | {s['planned']} | {s['injected']} | {s['survived']} |" in md

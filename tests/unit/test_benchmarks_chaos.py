"""benchmarks/chaos.py: the seeded round plan and the store comparison (no round is run here)."""

from __future__ import annotations

from benchmarks.chaos import FAULTS, Fault, chaos_config, compare_stores, plan_round
from tinyllm_ray.config import validate_config


def test_rounds_are_seeded_and_the_first_ones_cover_every_fault(tmp_path) -> None:
    plan = [plan_round(0, i) for i in range(6)]
    assert plan == [plan_round(0, i) for i in range(6)]
    assert [f.kind for f in plan[:3]] == list(FAULTS)
    assert plan != [plan_round(1, i) for i in range(6)]
    assert Fault("teacher_error", 2, 99).inject_env() == "teacher=llama,batch=2,action=raise,times=99"
    assert Fault("driver_kill").inject_env() is None
    assert validate_config(chaos_config(tmp_path)).teachers[0].max_batch_retries == 1


def test_compare_stores_counts_lost_duplicated_and_changed_records() -> None:
    def row(ex, kind="rationale", text="t"):
        return {"teacher": "llama", "kind": kind, "example_id": ex, "sample_idx": 0, "eval_idx": -1,
                "prompt_hash": "h", "rationale": text, "verdict": None, "critique": None, "output_tokens": 1,
                "record_key": "k" + ex}

    ref = [row("a"), row("b"), row("c")]
    got = [row("a"), row("a"), row("b", text="other"), row("d")]
    assert compare_stores(ref, got) == {"records": 3, "lost": 1, "duplicated": 1, "extra": 1, "different": 1}
    assert compare_stores(ref, ref)["lost"] == 0

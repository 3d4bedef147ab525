"""benchmarks/chaos.py (no round is run here), pure parts in benchmarks/_chaos_plan.py: fault plans, store comparison, steps redone, tally, markdown."""

from __future__ import annotations

from benchmarks._chaos_plan import (
    KINDS,
    Fault,
    RoundPlan,
    compare_stores,
    fault_record,
    plan_round,
    steps_redone,
    tally,
    to_markdown,
    training_attempts,
)


def test_plan_is_seeded_and_has_every_fault_kind_at_valid_points():
    for no in range(40):
        plan = plan_round(0, no, num_batches=6, max_steps=12)
        assert plan == plan_round(0, no, num_batches=6, max_steps=12)
        assert tuple(f.kind for f in plan.faults) == KINDS
        kill, err = plan.of("teacher_kill"), plan.of("teacher_error")
        assert kill.batch != err.batch and {kill.batch, err.batch} <= set(range(6))
        worker, driver = plan.of("worker_kill"), plan.of("driver_kill")
        assert 1 <= worker.step <= 10
        assert driver.step == 0 or worker.step < driver.step <= 11 or worker.step == driver.step == 11
    assert plan_round(0, 1, 6, 12) != plan_round(1, 1, 6, 12)
    assert any(plan_round(0, n, 6, 12).of("driver_kill").step == 0 for n in range(40))  # some during generation


def test_inject_env_lists_the_teacher_faults_for_the_fault_set_hook():
    from tinyllm_ray.teachers.faults import FaultSet

    plan = RoundPlan(0, (Fault("teacher_kill", batch=2), Fault("teacher_error", batch=5), Fault("worker_kill", step=3)))
    env = plan.inject_env("llama")
    assert env == "teacher=llama,batch=2,action=kill,times=1;teacher=llama,batch=5,action=raise,times=1"
    import os

    os.environ["TINYLLM_FAULT_INJECT"] = env
    try:
        faults = FaultSet.from_env("llama")
    finally:
        del os.environ["TINYLLM_FAULT_INJECT"]
    assert faults.firing(2, 1).action == "kill" and faults.firing(5, 1).action == "raise"
    assert faults.firing(2, 2) is None


def rec(ex, kind="rationale", text="r"):
    return {"teacher": "t", "kind": kind, "example_id": ex, "sample_idx": 0, "eval_idx": -1, "prompt_hash": "h",
            "rationale": text, "verdict": None, "critique": None, "output_tokens": 3, "record_key": ex}


def test_compare_stores_counts_lost_duplicated_different_extra():
    ref = [rec("a"), rec("b"), rec("c")]
    got = [rec("a"), rec("a"), rec("b", text="other"), rec("z")]
    assert compare_stores(ref, got) == {"records": 3, "lost": 1, "duplicated": 1, "extra": 1, "different": 1}
    assert compare_stores(ref, list(ref))["lost"] == 0


def test_attempts_and_steps_redone_from_the_metrics_reports():
    reports = [{"step": s, "attempt_start_step": 0} for s in (1, 2, 3, 4, 5)]
    reports += [{"step": s, "attempt_start_step": 4} for s in (5, 6, 7)]  # worker killed after 5: resumed at 4
    reports += [{"step": s, "attempt_start_step": 6} for s in (7, 8)]  # driver killed after 7: resumed at 6
    attempts = training_attempts(reports + [{"event": "other"}])
    assert attempts == [{"start": 0, "last": 5}, {"start": 4, "last": 7}, {"start": 6, "last": 8}]
    assert steps_redone(attempts) == 1 + 1
    # a resubmitted run that restarted from scratch shows as a step going back with start 0
    scratch = training_attempts([{"step": 1, "attempt_start_step": 0}, {"step": 2, "attempt_start_step": 0},
                                 {"step": 1, "attempt_start_step": 0}])
    assert scratch == [{"start": 0, "last": 2}, {"start": 0, "last": 1}] and steps_redone(scratch) == 2
    assert steps_redone([]) == 0


def round_result(no, survived=True, injected=(True, True, True, False)):
    faults = [fault_record(Fault(k), i) for k, i in zip(KINDS, injected)]
    return {"round": no, "faults": faults, "survived": survived, "reruns": 1, "lost": 0, "duplicated": 0,
            "different": 2, "extra": 0, "steps_redone": 3, "attempts": [{"start": 0, "last": 5},
                                                                         {"start": 4, "last": 12}],
            "val_accuracy": 0.25, "seconds": 50.0}


def test_tally_counts_injected_and_survived_per_kind_and_the_markdown_shows_them():
    rounds = [round_result(0), round_result(1, survived=False, injected=(True,) * 4)]
    s = tally(rounds)
    assert s["by_kind"]["driver_kill"] == {"planned": 2, "injected": 1, "survived": 0}
    assert s["by_kind"]["teacher_kill"] == {"planned": 2, "injected": 2, "survived": 1}
    assert (s["planned"], s["injected"], s["survived"]) == (8, 7, 3)
    assert (s["steps_redone"], s["different"], s["rounds_survived"]) == (6, 4, 1)
    md = to_markdown({"command": "python benchmarks/chaos.py --rounds 2", "git_commit": "abc1234", "seed": 0,
                      "setting": "tiny", "reference": {"val_accuracy": 0.5}, "results": rounds, "summary": s})
    assert "`python benchmarks/chaos.py --rounds 2` (git abc1234)" in md
    assert "| driver_kill | 2 | 1 | 0 |" in md and "| **total** | 8 | 7 | 3 |" in md
    assert "driver_kill (not reached)" in md and "reference 0.500" in md and "Partial" not in md
    rounds[1]["error"] = "OSError: disk full"
    partial = to_markdown({"command": "c", "git_commit": "x", "seed": 0, "setting": "tiny", "complete": False,
                           "reference": {}, "results": rounds, "summary": tally(rounds)})
    assert "**Partial results" in partial and "round 1: OSError: disk full" in partial


def test_the_chaos_config_validates_with_room_for_the_faults(tmp_path):
    from benchmarks.chaos import MAX_STEPS, chaos_config
    from tinyllm_ray.config import validate_config

    cfg = validate_config(chaos_config(tmp_path))
    assert cfg.train.max_failures >= 1 and cfg.train.checkpoint_every_steps < MAX_STEPS
    assert cfg.teachers[0].max_batch_retries >= 1 and cfg.runtime.storage_path == str(tmp_path)

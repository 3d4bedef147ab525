"""Teacher fault isolation, pure parts: the ledger's retry/give-up policy, the injection hook,
failed output rows, and the rewrite of a shard whose failed CoTs were retried (no Ray, no vLLM)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from tinyllm_ray.config import FilterConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.store import KeyContext
from tinyllm_ray.store.stats import TeacherStats
from tinyllm_ray.teachers.engine import failed_output
from tinyllm_ray.teachers.faults import FaultInjection, FaultLedger, FaultSet, merge_fault_summaries
from tinyllm_ray.teachers.records import build_shard_records
from tinyllm_ray.teachers.report import GenerationReport
from tinyllm_ray.teachers.retry import merge_retried_shard, retried_outputs, retry_set

VERDICTS = ["correct", "wrong"]
CTX = KeyContext("t", "tiny:llama", "sha256:" + "1" * 32, "v1", "{}", "{}")
EX = {f"q{i}": MCQRecord(f"q{i}", f"Q{i}?", ("shark", "whale"), "whale") for i in range(4)}
OK = "Thus, the answer is (b) whale."


def ledger(max_restarts=3, retries=1) -> FaultLedger:
    return FaultLedger("llama", max_restarts, retries)


# ----------------------------------------------------------------------------- the ledger


def test_a_transient_death_retries_the_batch_once_and_counts_the_restart():
    led = ledger()
    assert led.engine_started(False, 10) is None
    assert led.begin(0, 10) == (1, None)
    led.end(0)
    assert led.begin(1, 10) == (1, None)  # ... the actor dies here (no end)
    assert led.engine_started(True, 11) is None  # Ray restarted it
    assert led.begin(1, 11) == (2, None)  # Ray re-sent the batch: generate it again
    led.end(1)
    s = led.summary()
    assert (s["restarts"], s["retried_batches"], s["failed_batches"]) == (1, 1, 0)
    assert "pid 10" in s["last_reason"] and "batch 1" in s["last_reason"]


def test_a_batch_that_always_kills_its_engine_is_given_up_after_max_batch_retries():
    led = ledger(max_restarts=3, retries=1)
    led.engine_started(False, 1)
    assert led.begin(5, 1) == (1, None)
    led.engine_error(5, "engine error: RuntimeError: boom")
    assert led.engine_started(True, 2) is None
    assert led.begin(5, 2) == (2, None)  # one retry
    assert led.engine_started(True, 3) is None  # died again (no reason recorded: a kill)
    attempt, give_up = led.begin(5, 3)
    assert attempt == 3 and "died on 2 attempt(s)" in give_up and "max_batch_retries=1" in give_up
    assert "pid 2" in give_up  # the reason of the last death, not the first
    led.gave_up_rows(4)
    assert led.begin(6, 3) == (1, None)  # the job goes on
    led.end(6)
    s = led.summary()
    assert (s["restarts"], s["failed_batches"], s["failed_rows"], s["engine_errors"]) == (2, 1, 4, 1)
    assert led.consecutive == 0


def test_a_teacher_that_keeps_dying_is_refused_with_the_last_reason():
    led = ledger(max_restarts=2, retries=0)
    led.engine_started(False, 1)
    led.begin(0, 1)
    led.engine_error(0, "engine error: EngineDeadError: gone")
    assert led.engine_started(True, 2) is None
    assert led.begin(0, 2)[1] is not None  # given up: stored as failed
    assert led.begin(1, 2) == (1, None)  # ... and this actor is killed mid-batch
    assert led.engine_started(True, 3) is None  # 2 in a row: still allowed
    assert led.begin(1, 3)[1] is not None  # given up
    assert led.begin(2, 3) == (1, None)
    led.engine_error(2, "engine error: EngineDeadError: gone again")
    refusal = led.engine_started(True, 4)  # 3 in a row without a finished batch
    assert refusal is not None
    assert "teacher 'llama'" in refusal and "3 times in a row" in refusal and "max_restarts=2" in refusal
    assert "gone again" in refusal and "\n" not in refusal


def test_a_finished_batch_resets_the_run_of_deaths():
    led = ledger(max_restarts=1, retries=0)
    led.engine_started(False, 1)
    for b in range(5):  # one death per batch, each followed by a finished batch: never given up
        led.begin(2 * b, 1)
        assert led.engine_started(True, 1) is None
        led.begin(2 * b, 1)  # given up (no retries), no reset
        led.begin(2 * b + 1, 1)
        led.end(2 * b + 1)
    assert led.summary()["restarts"] == 5


def test_fault_summaries_of_two_runs_add_up():
    a = {"restarts": 1, "retried_batches": 1, "failed_batches": 0, "failed_rows": 0, "engine_errors": 0,
         "last_reason": "x"}
    b = {"restarts": 2, "retried_batches": 0, "failed_batches": 1, "failed_rows": 4, "engine_errors": 1,
         "last_reason": None}
    assert merge_fault_summaries({}, a) == a
    m = merge_fault_summaries(a, b)
    assert (m["restarts"], m["failed_rows"], m["last_reason"]) == (3, 4, "x")


# ----------------------------------------------------------------------------- config, hook


def test_fault_budgets_are_config_with_a_bounded_retry():
    t = TeacherConfig(name="t", model="/m")
    assert (t.max_restarts, t.max_batch_retries) == (3, 1)
    assert TeacherConfig(name="t", model="/m", max_restarts=0, max_batch_retries=5).max_restarts == 0
    with pytest.raises(ValidationError, match="max_batch_retries .* must be below max_restarts"):
        TeacherConfig(name="t", model="/m", max_restarts=2, max_batch_retries=2)
    with pytest.raises(ValidationError):
        TeacherConfig(name="t", model="/m", max_restarts=-1)


def test_fault_injection_hook_parses_and_fires_on_the_chosen_attempts(monkeypatch):
    f = FaultInjection.parse("teacher=qwen,batch=2,action=raise,times=2")
    assert f == FaultInjection("qwen", 2, "raise", 2)
    assert f.fires(2, 1) and f.fires(2, 2) and not f.fires(2, 3) and not f.fires(1, 1)
    every = FaultInjection.parse("teacher=qwen,batch=*")
    assert every.fires(7, 1) and not every.fires(7, 2) and every.action == "kill"
    for bad in ("batch=1", "teacher=q,when=now", "teacher=q,action=explode"):
        with pytest.raises(ConfigError):
            FaultInjection.parse(bad)
    monkeypatch.setenv("TINYLLM_FAULT_INJECT", "teacher=qwen,batch=1")
    assert FaultInjection.from_env("qwen") == FaultInjection("qwen", 1)
    assert FaultInjection.from_env("llama") is None
    monkeypatch.delenv("TINYLLM_FAULT_INJECT")
    assert FaultInjection.from_env("qwen") is None


def test_several_injected_faults_per_teacher(monkeypatch):
    monkeypatch.setenv("TINYLLM_FAULT_INJECT", "teacher=q,batch=1,action=kill; teacher=q,batch=3,action=raise;"
                                               "teacher=other,batch=0")
    faults = FaultSet.from_env("q")
    assert faults.firing(1, 1) == FaultInjection("q", 1, "kill", 1)
    assert faults.firing(3, 1).action == "raise"
    assert faults.firing(1, 2) is None and faults.firing(0, 1) is None
    assert FaultSet.from_env("other").faults == (FaultInjection("other", 0),)
    assert FaultSet.from_env("nobody") is None


# ----------------------------------------------------------------------------- failed rows, retry


def prompts(ids):
    return pa.Table.from_pylist([{"example_id": i, "split": "train", "shard": 0, "prompt_hash": "h" + i,
                                  "prompt": "p", "batch": 3} for i in ids])


def raw_ok(ex, s, n_evals=0, toks=10):
    return {"kind": "rationale", "example_id": ex, "split": "train", "shard": 0, "sample_idx": s, "eval_idx": -1,
            "prompt_hash": "h" + ex, "text": OK, "prompt_tokens": 50 if s == 0 else 0, "output_tokens": toks,
            "finish_reason": "stop", "gen_seconds": 0.5, "n_evals": n_evals, "error": None}


def raw_se(ex, s, e):
    return {"kind": "self_eval", "example_id": ex, "split": "train", "shard": 0, "sample_idx": s, "eval_idx": e,
            "prompt_hash": "se" + ex, "text": "fine\nVerdict: correct", "prompt_tokens": 80, "output_tokens": 5,
            "finish_reason": "stop", "gen_seconds": 0.25, "n_evals": 0, "error": None}


def build(raw):
    return build_shard_records(raw, EX, "t", FilterConfig(), VERDICTS, key=CTX)


def test_a_given_up_batch_becomes_one_failed_row_per_cot_with_the_reason():
    out = failed_output(prompts(["q0", "q1"]), 2, "teacher engine died on 2 attempt(s)")
    rows = out.to_pylist()
    assert [(r["example_id"], r["sample_idx"]) for r in rows] == [("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1)]
    assert {r["error"] for r in rows} == {"teacher engine died on 2 attempt(s)"} and {r["n_evals"] for r in rows} == {0}
    recs = build(rows)
    assert recs.rationale == [] and len(recs.failed) == 4 and recs.stats.failed == 4
    assert recs.stats.outputs == 0 and recs.stats.kinds["rationale"].prompts == 2
    assert sorted(recs.stats.failed_cots) == [("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1)]
    assert all(r["record_key"] and r["error"] for r in recs.failed)


def test_failed_cots_travel_in_the_shard_footer_but_not_in_totals():
    st = build(failed_output(prompts(["q0"]), 1, "x").to_pylist()).stats
    again = TeacherStats.from_dict(st.to_dict())
    assert again.failed_cots == [("q0", 0)]
    total = TeacherStats("t").merge(again)
    assert total.failed == 1 and total.failed_cots == [] and "failed_cots" not in total.to_dict()


def test_retrying_failed_cots_rewrites_the_shard_exactly_once_with_consistent_stats():
    """Shard of q0..q2 with n=2: q1 failed entirely, q2 sample 1 failed. The retry regenerates
    q1 and q2 (whole prompts) and keeps only the failed CoTs; stats equal a run without failures."""
    clean_raw = [raw_ok("q0", 0, 1), raw_se("q0", 0, 0), raw_ok("q0", 1), raw_ok("q1", 0, 1), raw_se("q1", 0, 0),
                 raw_ok("q1", 1), raw_ok("q2", 0), raw_ok("q2", 1, 1), raw_se("q2", 1, 0)]
    clean = build(clean_raw)
    failed_q1 = [r | {"text": "", "output_tokens": 0, "prompt_tokens": 0, "n_evals": 0, "error": "died"}
                 for r in clean_raw if r["example_id"] == "q1" and r["kind"] == "rationale"]
    failed_q2 = [raw_ok("q2", 1) | {"text": "", "output_tokens": 0, "n_evals": 0, "error": "died"}]
    first = build([r for r in clean_raw if r["example_id"] == "q0"] + failed_q1 + [raw_ok("q2", 0)] + failed_q2)
    assert first.stats.failed == 3 and len(first.failed) == 3
    footer = TeacherStats.from_dict(first.stats.to_dict())
    retry = retry_set(footer)
    assert retry == {"q1": {0, 1}, "q2": {1}}

    retry_raw = [r for r in clean_raw if r["example_id"] in retry]  # whole prompts come back
    kept = retried_outputs(retry_raw, retry)
    assert ("q2", 0) not in {(r["example_id"], r["sample_idx"]) for r in kept}
    merged = merge_retried_shard(retry, build(kept), footer, first.rationale, first.self_eval, first.failed)
    key = lambda rows: sorted((r["example_id"], r["sample_idx"], r["eval_idx"]) for r in rows)
    assert key(merged.rationale) == key(clean.rationale) and key(merged.self_eval) == key(clean.self_eval)
    assert merged.failed == [] and merged.stats.failed_cots == []
    neutral = lambda s: s.to_dict() | {"generation_seconds": 0, "tokens_per_s": 0, "drop_examples": {}}
    assert neutral(merged.stats) == neutral(clean.stats)

    # killed after the self_eval file was rewritten, before the commit: rewriting again from the
    # same footer over the half-written files still stores each CoT once
    again = merge_retried_shard(retry, build(kept), footer, first.rationale, merged.self_eval, [])
    assert key(again.self_eval) == key(clean.self_eval) and neutral(again.stats) == neutral(clean.stats)


def test_a_retry_that_fails_again_keeps_the_cots_failed_with_the_new_reason():
    first = build([raw_ok("q0", 0), raw_ok("q1", 0) | {"text": "", "error": "died", "output_tokens": 0}])
    footer = TeacherStats.from_dict(first.stats.to_dict())
    retry = retry_set(footer)
    again = build([raw_ok("q1", 0) | {"text": "", "error": "died again", "output_tokens": 0}])
    merged = merge_retried_shard(retry, again, footer, first.rationale, first.self_eval, first.failed)
    assert [r["error"] for r in merged.failed] == ["died again"] and merged.stats.failed == 1
    assert merged.stats.failed_cots == [("q1", 0)] and merged.stats.kinds["rationale"].prompts == 2


def test_the_summary_shows_restarts_and_failed_generations():
    st = build(failed_output(prompts(["q0"]), 1, "x").to_pylist()).stats
    rep = GenerationReport(store_uri="/s", split="train", shard_size=4, num_shards=1, teachers={"t": st},
                           shards_written={"t": 1}, shards_skipped={"t": 0}, run_output_tokens={"t": 0},
                           wall_seconds=1.0, shards_retried={"t": 0},
                           faults={"t": {"restarts": 2, "retried_batches": 0, "failed_batches": 1,
                                         "failed_rows": 1, "engine_errors": 0, "last_reason": "pid 7 died"}})
    text = rep.summary()
    assert "engine restarted 2 time(s)" in text and "1 given up" in text and "pid 7 died" in text
    assert "failed generations in the store (rerun to retry): {'t': 1}" in text
    assert rep.to_dict()["faults"]["t"]["restarts"] == 2

"""Parse + filter of one shard's raw teacher outputs, and the stream-to-shard assembler."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import FilterConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.schema import RECORD_COLUMNS
from tinyllm_ray.store.stats import DROP_REASONS
from tinyllm_ray.teachers.assembler import AssemblyError, ShardAssembler
from tinyllm_ray.teachers.records import build_shard_records, judged_wrong, wrong_verdict

VERDICTS = ["correct", "wrong", "uncertain"]
CTX = KeyContext("t", "tiny:llama", "sha256:" + "0" * 32, "v1", '{"seed":0}', '{"temperature":0}')
EX = {
    "q1": MCQRecord("q1", "Which is a mammal?", ("shark", "whale", "trout"), "whale"),
    "q2": MCQRecord("q2", "What is 3 plus 4?", (), "7"),
}


def rat(ex, s, text, n_evals=0, toks=10, fin="stop"):
    return {"kind": "rationale", "example_id": ex, "split": "train", "shard": 0, "sample_idx": s, "eval_idx": -1,
                "prompt_hash": "h" + ex, "text": text, "prompt_tokens": 50, "output_tokens": toks, "finish_reason": fin,
                "gen_seconds": 0.5, "n_evals": n_evals}


def se(ex, s, e, text, toks=5):
    return {"kind": "self_eval", "example_id": ex, "split": "train", "shard": 0, "sample_idx": s, "eval_idx": e,
                "prompt_hash": "se" + ex, "text": text, "prompt_tokens": 80, "output_tokens": toks, "finish_reason": "stop",
                "gen_seconds": 0.25, "n_evals": 0}


def test_wrong_verdict_and_plurality():
    assert wrong_verdict(VERDICTS) == "wrong"
    assert wrong_verdict(["yes", "no"]) == "no"
    assert judged_wrong(["wrong", "wrong", "correct"], "wrong")
    assert not judged_wrong(["wrong", "correct"], "wrong")  # tie
    assert not judged_wrong([], "wrong")
    assert judged_wrong(["wrong"], "wrong")


def test_every_output_is_kept_or_dropped_once_with_a_reason():
    raw = [
        rat("q1", 0, "Whales breathe air. Thus, the answer is (b) whale."),
        rat("q1", 1, "Sharks are fish. Thus, the answer is (a) shark."),
        rat("q1", 2, ""),
        rat("q2", 0, "blah blah", fin="length"),
        rat("q2", 1, "3 plus 4 is 7. Thus, the answer is 7."),
    ]
    filt = FilterConfig(require_answer_match=True)
    out = build_shard_records(raw, EX, "llama", filt, VERDICTS, key=CTX)
    st = out.stats
    r = st.kinds["rationale"]
    assert r.outputs == 5 and r.kept == 2
    # "blah blah" has no number -> unparsable
    assert r.dropped == {"empty": 1, "unparsable": 1, "answer_mismatch": 1, "verdict_wrong": 0}
    assert r.prompts == 2 and r.truncated == 1
    assert r.prompt_tokens == 100  # one prompt per question, not per sample
    assert st.output_tokens == 50 and st.generation_seconds == pytest.approx(2.5)
    assert st.outputs == st.kept + sum(st.dropped.values())
    kept = {(x["example_id"], x["sample_idx"]) for x in out.rationale}
    assert kept == {("q1", 0), ("q2", 1)}
    row = next(x for x in out.rationale if x["example_id"] == "q1")
    assert tuple(row) == RECORD_COLUMNS
    assert row["parsed_answer"] == "whale" and row["answer_match"] is True and row["teacher"] == "llama"
    assert row["choices"] == ["shark", "whale", "trout"] and row["eval_idx"] == -1 and row["verdict"] is None
    assert st.drop_examples["rationale:unparsable"] == ["blah blah"]


def test_lenient_filter_keeps_unparsable_text_with_null_answer():
    raw = [rat("q1", 0, "no idea at all"), rat("q1", 1, "")]
    out = build_shard_records(raw, EX, "t", FilterConfig(drop_unparsable=False, drop_empty=False), VERDICTS, key=CTX)
    assert len(out.rationale) == 2 and out.stats.kept == 2
    assert out.rationale[0]["parsed_answer"] is None and out.rationale[0]["answer_match"] is None


def test_min_rationale_chars_counts_as_empty():
    out = build_shard_records([rat("q1", 0, "(b)")], EX, "t", FilterConfig(min_rationale_chars=10), VERDICTS, key=CTX)
    assert out.stats.dropped["empty"] == 1


def test_self_evaluation_verdicts_drop_wrong_cots_but_keep_their_evaluations():
    good = "Whales breathe air. Thus, the answer is (b) whale."
    bad = "Sharks are big. Thus, the answer is (a) shark."
    raw = [
        rat("q1", 0, good, n_evals=2),
        rat("q1", 1, bad, n_evals=2),
        se("q1", 0, 0, "Sound reasoning.\nVerdict: correct"),
        se("q1", 0, 1, "Looks fine. Verdict: wrong"),  # tie correct/wrong -> not judged wrong
        se("q1", 1, 0, "Sharks are fish.\nVerdict: wrong"),
        se("q1", 1, 1, "I cannot tell what this is"),  # unparsable verdict
    ]
    out = build_shard_records(raw, EX, "t", FilterConfig(drop_verdict_wrong=True), VERDICTS, key=CTX)
    st = out.stats
    assert [x["sample_idx"] for x in out.rationale] == [0]
    assert st.kinds["rationale"].dropped["verdict_wrong"] == 1
    s = st.kinds["self_eval"]
    assert (s.outputs, s.kept, s.dropped["unparsable"], s.prompts) == (4, 3, 1, 2)
    assert s.prompt_tokens == 160  # one prompt per judged CoT (n = evals_per_cot)
    judged_bad = [x for x in out.self_eval if x["sample_idx"] == 1]
    assert len(judged_bad) == 1 and judged_bad[0]["verdict"] == "wrong"
    assert judged_bad[0]["rationale"] == bad and judged_bad[0]["parsed_answer"] == "shark"
    assert judged_bad[0]["answer_match"] is False and judged_bad[0]["critique"] == "Sharks are fish."
    assert st.outputs == 6 and st.outputs == st.kept + sum(st.dropped.values())
    assert set(st.dropped) == set(DROP_REASONS)


def test_every_stored_row_carries_its_record_key_and_provenance():
    ctx = CTX
    raw = [rat("q1", 0, "Thus, the answer is (b) whale.", n_evals=1), rat("q1", 1, "Thus, the answer is (a) shark."),
           se("q1", 0, 0, "Verdict: correct")]
    out = build_shard_records(raw, EX, "t", FilterConfig(), VERDICTS, key=ctx)
    rows = out.rationale + out.self_eval
    assert len(rows) == 3
    for r in rows:
        assert r["record_key"] == ctx.record_key(r["prompt_hash"], r["kind"], r["sample_idx"], r["eval_idx"])
        assert (r["model"], r["model_revision"], r["template_version"]) == ("tiny:llama", ctx.model_revision, "v1")
    assert len({r["record_key"] for r in rows}) == 3


def test_assembler_completes_shards_only_when_all_outputs_arrived():
    a = ShardAssembler({0: 2, 1: 1})
    assert a.add([rat("q1", 0, "x", n_evals=2) | {"shard": 0}]) == []
    assert a.add([rat("q1", 1, "y") | {"shard": 0}]) == []  # waits for 2 self-evals of sample 0
    assert a.add([se("q1", 0, 0, "v") | {"shard": 0}, rat("q2", 0, "z") | {"shard": 1}]) == [1]
    assert len(a.take(1)) == 1
    assert a.add([se("q1", 0, 1, "v") | {"shard": 0}]) == [0]
    assert len(a.take(0)) == 4 and a.pending == []
    assert a.add([rat("q1", 0, "late") | {"shard": 0}]) == [] and a.duplicates == 1  # redelivered: dropped
    with pytest.raises(AssemblyError):
        a.add([rat("q9", 0, "x") | {"shard": 7}])  # a shard nobody asked for


def test_assembler_drops_outputs_a_retried_batch_delivers_twice():
    """Ray re-sends a batch whose actor died; a second delivery of an output is counted, not stored."""
    a = ShardAssembler({0: 2})
    first = [rat("q1", 0, "x", n_evals=1) | {"shard": 0}, se("q1", 0, 0, "v") | {"shard": 0}]
    assert a.add(first) == []
    assert a.add(first) == [] and a.duplicates == 2
    assert a.add([rat("q2", 0, "y") | {"shard": 0}, rat("q2", 0, "y again") | {"shard": 0}]) == [0]
    rows = a.take(0)
    assert sorted((r["kind"], r["example_id"], r["sample_idx"], r["eval_idx"]) for r in rows) == [
        ("rationale", "q1", 0, -1), ("rationale", "q2", 0, -1), ("self_eval", "q1", 0, 0)]
    assert a.duplicates == 3 and rows[-1]["text"] == "y"  # the first delivery wins


def test_assembler_rejects_too_many_rationales():
    a = ShardAssembler({0: 1})
    with pytest.raises(AssemblyError):
        a.add([rat("q1", 0, "x") | {"shard": 0}, rat("q1", 1, "y") | {"shard": 0}])


def test_failed_generations_are_counted_and_become_failed_rows():
    ctx = KeyContext("t", "tiny:llama", "sha256:" + "1" * 32, "v1", "{}", "{}")
    ok = "Thus, the answer is (b) whale."
    raw = [
        rat("q1", 0, ok, n_evals=2),
        rat("q1", 1, "") | {"error": "engine died: OOM", "output_tokens": None, "finish_reason": None},
        rat("q2", 0, "3 plus 4 is 7. Thus, the answer is 7."),
        se("q1", 0, 0, "Verdict: correct"),
        se("q1", 0, 1, "") | {"error": "timeout"},
    ]
    out = build_shard_records(raw, EX, "t", FilterConfig(), VERDICTS, key=ctx)
    st = out.stats
    r, s = st.kinds["rationale"], st.kinds["self_eval"]
    assert (r.prompts, r.outputs, r.kept, r.failed) == (2, 2, 2, 1)
    assert (s.prompts, s.outputs, s.kept, s.failed) == (1, 1, 1, 1)
    assert st.failed == 2 and st.outputs == st.kept + sum(st.dropped.values())
    assert st.to_dict()["failed"] == 2 and st.to_dict()["by_kind"]["rationale"]["failed"] == 1
    by_eval = {x["eval_idx"]: x for x in out.failed}
    assert set(by_eval) == {-1, 1} and all(x["kind"] == "failed" for x in out.failed)
    cot_fail, se_fail = by_eval[-1], by_eval[1]
    assert cot_fail["error"] == "engine died: OOM" and cot_fail["rationale"] is None
    assert cot_fail["output_tokens"] == 0 and cot_fail["sample_idx"] == 1
    # the key of the generation that failed: a successful retry gets the same key
    assert cot_fail["record_key"] == ctx.record_key("hq1", "rationale", 1, -1)
    assert se_fail["rationale"] == ok and se_fail["record_key"] == ctx.record_key("seq1", "self_eval", 0, 1)
    assert tuple(cot_fail)[:-1] == RECORD_COLUMNS and tuple(cot_fail)[-1] == "error"


def test_teacher_health_counts_degenerate_cut_and_gold_agreement():
    """Issue 10 item 6: a teacher that writes runs of one character is flagged, not just 'kept'."""
    from tinyllm_ray.store.stats import TeacherStats

    raw = [
        rat("q1", 0, "Whales breathe air. Thus, the answer is (b) whale."),  # agrees with gold
        rat("q1", 1, "Sharks are fish. Thus, the answer is (a) shark."),  # parsed, disagrees
        rat("q2", 0, "..........", fin="length"),  # degenerate and cut
        rat("q2", 1, "llll llll llll llll", fin="length"),  # degenerate and cut
    ]
    st = build_shard_records(raw, EX, "llama", FilterConfig(drop_unparsable=False), VERDICTS, key=CTX).stats
    r = st.kinds["rationale"]
    assert (r.degenerate, r.truncated, r.answer_parsed, r.answer_matches) == (2, 2, 2, 1)
    assert st.health() == {"cut_at_max_tokens": 0.5, "degenerate": 0.5, "gold_agreement": 0.25}
    assert st.health_warnings() == []  # half is not "most"
    back = TeacherStats.from_dict(st.to_dict())
    assert back.health() == st.health() and st.to_dict()["health"]["degenerate"] == 0.5
    bad = build_shard_records([rat("q2", 0, "....", fin="length"), rat("q2", 1, "", fin="length")], EX, "qwen",
                              FilterConfig(drop_unparsable=False, drop_empty=False), VERDICTS, key=CTX).stats
    warnings = bad.health_warnings()
    assert len(warnings) == 2 and "100% of its rationales are empty" in warnings[0] and "max_tokens" in warnings[1]
    assert TeacherStats(teacher="none").health()["degenerate"] is None


def test_report_markdown_shows_teacher_health_and_warns():
    from tinyllm_ray.jobs.report import render_markdown

    st = build_shard_records([rat("q2", 0, "....", fin="length")], EX, "qwen",
                             FilterConfig(drop_unparsable=False), VERDICTS, key=CTX).stats
    report = {"run": "r", "student": "s", "store_uri": "u", "teachers": {"qwen": st.to_dict()},
              "training": {"best_step": 1, "total_steps": 1, "best_val_accuracy": 0.5, "task_losses": {}},
              "evaluation": {}, "seconds": {}}
    md = render_markdown(report)
    assert "| qwen | 1 | 1 | 1 | 0 | 100% | 100% | 0% |" in md
    assert "> **Warning:** teacher 'qwen': 100% of its rationales are empty" in md

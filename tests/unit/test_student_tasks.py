"""Dataset records + store rows -> task rows and groups: weights, stages, prefixes, errors (pure).

The helpers ``records``, ``store_row``, ``write_store`` and ``job`` are shared with
tests/unit/test_student_data.py, tests/integration/test_train.py and
benchmarks/student_throughput.py; stores are written only through ``RationaleStore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tinyllm_ray.config import JobConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import EmptyTargetError, MissingTeacherError, StoreMismatchError, TaskDataError
from tinyllm_ray.store import DEFAULT_SHARD_SIZE, RECORD_COLUMNS, RationaleStore, TeacherStats, build_manifest
from tinyllm_ray.student.tasks import (
    ANSWER_TASK,
    GROUP_SCHEMA,
    SELF_EVAL_CRITIQUE_TASK,
    SELF_EVAL_TASKS,
    SELF_EVAL_VERDICT_TASK,
    TASK_ROW_SCHEMA,
    TaskPlan,
    build_task_groups,
    check_teacher_coverage,
    format_source,
)

# --------------------------------------------------------------------------- helpers (shared, see docstring)


def records(n: int = 3) -> list[MCQRecord]:
    return [MCQRecord(id=f"ex{i}", question=f"What is item {i}?", choices=("red", "blue", "green"),
                      answer=("red", "blue", "green")[i % 3]) for i in range(n)]


def store_row(rec: MCQRecord, teacher: str, kind: str = "rationale", sample_idx: int = 0, eval_idx: int = -1,
              rationale: str | None = None, parsed: str | None = None, verdict: str | None = None,
              critique: str | None = None) -> dict[str, Any]:
    """One store row of ``rec`` by ``teacher``: every column of the store's RECORD_SCHEMA (None
    where this helper has no value, e.g. provenance columns)."""
    return {c: None for c in RECORD_COLUMNS} | {
        "kind": kind, "teacher": teacher, "example_id": rec.id, "split": "train", "sample_idx": sample_idx,
        "eval_idx": eval_idx, "prompt_hash": "0" * 16, "question": rec.question, "context": rec.context,
        "choices": list(rec.choices), "answer": rec.answer,
        "rationale": f"{teacher} thinks it is {rec.answer}." if rationale is None else rationale,
        "parsed_answer": parsed, "answer_match": None if parsed is None else parsed == rec.answer,
        "verdict": verdict, "critique": critique, "prompt_tokens": 10, "output_tokens": 5,
        "finish_reason": "stop",
    }


def write_store(root: str | Path, rows: list[dict[str, Any]], *, records: Sequence[MCQRecord] | None = None,
                shard_size: int = DEFAULT_SHARD_SIZE, cfg: JobConfig | None = None) -> RationaleStore:
    """A finished store of ``rows``, written as generation writes it: manifest, then shard k of
    every teacher in ``rows`` = examples [k*S, (k+1)*S) of ``records`` (default: the examples of
    ``rows`` in order of first appearance), through ``RationaleStore.write_shard``."""
    store = RationaleStore(str(root))
    if records is None:
        seen: dict[str, MCQRecord] = {}
        for r in rows:
            seen.setdefault(r["example_id"], MCQRecord(id=r["example_id"], question=r["question"],
                                                       choices=tuple(r["choices"]), answer=r["answer"],
                                                       context=r["context"]))
        records = list(seen.values())
    store.write_manifest(build_manifest(cfg or JobConfig(), "train", records, shard_size))
    slice_of = {r.id: i // shard_size for i, r in enumerate(records)}
    buckets: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault((r["teacher"], slice_of[r["example_id"]], r["kind"]), []).append(r)
    for teacher in sorted({r["teacher"] for r in rows}):
        for k in range(-(-len(records) // shard_size)):
            self_eval = buckets.get((teacher, k, "self_eval"))
            store.write_shard(teacher, k, buckets.get((teacher, k, "rationale"), []), self_eval,
                              TeacherStats(teacher=teacher))
    return store


def job(**over: Any) -> JobConfig:
    raw: dict[str, Any] = {"teachers": [{"name": "llama", "model": "x"}, {"name": "qwen", "model": "y"}]}
    raw.update(over)
    return JobConfig.model_validate(raw)


def plan_of(**over: Any) -> TaskPlan:
    return TaskPlan.from_config(job(**over))


def both(recs: Sequence[MCQRecord], teachers: Sequence[str] = ("llama", "qwen")) -> list[dict[str, Any]]:
    return [store_row(r, t) for r in recs for t in teachers]


# --------------------------------------------------------------------------- plan


def test_additive_weights_prefixes_and_order():
    plan = plan_of(loss={"form": "additive", "alpha": {"llama": 0.5}, "default_alpha": 2.0})
    assert plan.names == ("answer", "rationale:llama", "rationale:qwen")
    assert plan.weights == {"answer": 1.0, "rationale:llama": 0.5, "rationale:qwen": 2.0}
    assert plan.prefixes["rationale:qwen"] == "explain qwen: "
    assert plan.prefixes["answer"] == "predict: "
    assert plan.num_stages == 1 and plan.store_kinds == ("rationale",)
    assert TaskPlan.from_dict(plan.to_dict()) == plan


def test_convex_weights_share_the_rationale_half():
    plan = plan_of(loss={"form": "convex", "convex_alpha": 0.3})
    assert plan.weights["answer"] == pytest.approx(0.3)
    assert plan.weights["rationale:llama"] == pytest.approx(0.35)
    assert plan.weights["rationale:qwen"] == pytest.approx(0.35)


def test_two_stage_puts_both_self_eval_tasks_first():
    plan = plan_of(self_eval={"enabled": True}, loss={"schedule": "two_stage", "self_eval_weight": 0.7})
    assert SELF_EVAL_TASKS == ("self_eval_verdict", "self_eval_critique")
    assert plan.names[-2:] == SELF_EVAL_TASKS
    assert plan.stages == {"answer": 1, "rationale:llama": 1, "rationale:qwen": 1,
                           "self_eval_verdict": 0, "self_eval_critique": 0}
    assert plan.weights["self_eval_verdict"] == plan.weights["self_eval_critique"] == 0.7  # additive: both
    assert plan.prefixes["self_eval_verdict"] == "verdict: " and plan.prefixes["self_eval_critique"] == "critique: "
    assert plan.tasks_of_stage(0) == SELF_EVAL_TASKS
    assert plan.tasks_of_stage(1) == ("answer", "rationale:llama", "rationale:qwen")
    assert plan.store_kinds == ("rationale", "self_eval")
    assert TaskPlan.from_dict(plan.to_dict()) == plan


def test_convex_self_eval_is_split_like_the_cot_stage():
    # the authors' loss: a L_verdict + (1-a) L_critique, scaled by the self-evaluation weight
    plan = plan_of(teachers=[{"name": "llama", "model": "x"}], self_eval={"enabled": True},
                   loss={"form": "convex", "convex_alpha": 0.3, "self_eval_weight": 2.0, "schedule": "two_stage"})
    assert plan.weights == pytest.approx({"answer": 0.3, "rationale:llama": 0.7,
                                          "self_eval_verdict": 0.6, "self_eval_critique": 1.4})


def test_joint_self_eval_tasks_share_stage_zero():
    plan = plan_of(self_eval={"enabled": True}, student={"self_eval_verdict_prefix": "predict: ",
                                                         "self_eval_critique_prefix": "explain: "})
    assert plan.num_stages == 1 and set(plan.stages.values()) == {0}
    assert plan.prefixes[SELF_EVAL_VERDICT_TASK] == "predict: "  # the official code's heads, if wanted
    assert plan.prefixes[SELF_EVAL_CRITIQUE_TASK] == "explain: "


def test_two_stage_without_self_eval_is_an_error():
    with pytest.raises(TaskDataError, match="self_eval.enabled"):
        plan_of(loss={"schedule": "two_stage"})


# --------------------------------------------------------------------------- build_task_groups


def test_answer_rows_only_without_teachers():
    plan = TaskPlan.from_config(JobConfig.model_validate({"loss": {"form": "convex"}}))
    assert plan.names == ("answer",) and plan.teachers == ()
    out = build_task_groups(records(2), [], plan)
    assert [r["task"] for r in out.rows] == ["answer", "answer"]
    assert sorted(t for g in out.groups for t in g["targets"]) == ["blue", "red"]
    assert out.stats.rows_per_task == {"answer": 2} and out.stats.groups_per_stage == {0: 2}


def test_rows_and_groups_follow_the_contract():
    recs = records(2)
    plan = plan_of()
    out = build_task_groups(recs, both(recs), plan)
    assert len(out.rows) == 6
    for r in out.rows:
        assert r["input"] == r["prefix"] + r["source"] and r["prefix"] == plan.prefixes[r["task"]]
    assert sorted(r["target"] for r in out.rows if r["task"] == ANSWER_TASK) == sorted(r.answer for r in recs)
    assert out.stats.rows_per_task == {"answer": 2, "rationale:llama": 2, "rationale:qwen": 2}
    # every task of one question shares one source, hence one group
    assert len(out.groups) == 2
    for g in out.groups:
        assert g["tasks"] == ["answer", "rationale:llama", "rationale:qwen"]
        assert len(g["prefixes"]) == len(g["targets"]) == len(g["weights"]) == 3
    # the public schemas hold the rows and groups exactly
    assert pa.Table.from_pylist(out.rows, schema=TASK_ROW_SCHEMA).to_pylist() == out.rows
    assert out.table().schema == GROUP_SCHEMA and out.table().to_pylist() == out.groups


def test_per_teacher_rows_carry_their_weights():
    recs = records(1)
    out = build_task_groups(recs, both(recs), plan_of(loss={"alpha": {"llama": 0.25, "qwen": 4.0}}))
    (g,) = out.groups
    assert dict(zip(g["tasks"], g["weights"])) == {"answer": 1.0, "rationale:llama": 0.25, "rationale:qwen": 4.0}
    assert dict(zip(g["tasks"], g["targets"]))["rationale:qwen"] == "qwen thinks it is red."


def test_groups_are_deterministic():
    recs = records(3)
    rows = both(recs)
    assert build_task_groups(recs, rows, plan_of()).groups == build_task_groups(recs, rows[::-1], plan_of()).groups


def test_unconfigured_teachers_are_counted_not_silently_dropped():
    recs = records(2)
    out = build_task_groups(recs, both(recs, ("mistral", "llama", "qwen")), plan_of())
    assert "rationale:mistral" not in out.stats.rows_per_task
    assert out.stats.ignored_teachers == {"mistral": 2}
    assert out.stats.to_dict()["ignored_teachers"] == {"mistral": 2}


def test_self_eval_rows_are_counted_when_disabled():
    rec = records(1)[0]
    row = store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="ok", verdict="correct")
    out = build_task_groups([rec], [*both([rec]), row], plan_of())
    assert out.stats.ignored_kinds == {"self_eval": 1}


def test_self_eval_gives_a_verdict_row_and_a_critique_row_in_stage_zero():
    rec = records(1)[0]
    plan = plan_of(self_eval={"enabled": True}, loss={"schedule": "two_stage", "self_eval_weight": 0.5})
    se = store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="The steps hold.", verdict="correct")
    out = build_task_groups([rec], [*both([rec]), se], plan)
    by_task = {r["task"]: r for r in out.rows if r["task"] in SELF_EVAL_TASKS}
    verdict, critique = by_task[SELF_EVAL_VERDICT_TASK], by_task[SELF_EVAL_CRITIQUE_TASK]
    assert verdict["target"] == "correct" and verdict["input"].startswith("verdict: ")
    assert critique["target"] == "The steps hold." and critique["input"].startswith("critique: ")
    for r in (verdict, critique):
        assert r["stage"] == 0 and r["weight"] == 0.5 and r["origin"] == "teacher"
        assert "Proposed reasoning: llama thinks it is red." in r["source"]
    assert verdict["group"] == critique["group"]  # one CoT to judge: one encoder pass for both tasks
    by_stage = {g["stage"]: g for g in out.groups}
    assert by_stage[0]["tasks"] == ["self_eval_critique", "self_eval_verdict"]
    assert by_stage[0]["weights"] == [0.5, 0.5]
    assert by_stage[1]["tasks"] == ["answer", "rationale:llama", "rationale:qwen"]
    assert out.stats.groups_per_stage == {0: 1, 1: 1}
    assert out.stats.rows_per_task[SELF_EVAL_VERDICT_TASK] == out.stats.rows_per_task[SELF_EVAL_CRITIQUE_TASK] == 1


def test_a_self_eval_without_verdict_or_critique_gives_its_other_task_and_is_counted():
    rec = records(1)[0]
    plan = plan_of(teachers=[{"name": "llama", "model": "x"}], self_eval={"enabled": True})
    rows = [store_row(rec, "llama"),
            store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="No verdict given.", verdict=None),
            store_row(rec, "llama", kind="self_eval", eval_idx=1, critique="  ", verdict="wrong")]
    out = build_task_groups([rec], rows, plan)
    got = sorted((r["task"], r["target"]) for r in out.rows if r["task"] in SELF_EVAL_TASKS)
    assert got == [("self_eval_critique", "No verdict given."), ("self_eval_verdict", "wrong")]
    assert out.stats.missing_targets == {"self_eval_verdict": 1, "self_eval_critique": 1}
    assert out.stats.to_dict()["missing_targets"] == {"self_eval_verdict": 1, "self_eval_critique": 1}


def test_teacher_labels_replace_gold_in_groups():
    recs = records(1)
    rows = [store_row(recs[0], "llama", sample_idx=0, parsed="blue"),
            store_row(recs[0], "llama", sample_idx=1, parsed=None),  # unparsed -> gold
            store_row(recs[0], "qwen", parsed="red")]
    out = build_task_groups(recs, rows, plan_of(filter={"label_source": "teacher"}))
    (g,) = out.groups
    answers = sorted(t for task, t in zip(g["tasks"], g["targets"]) if task == "answer")
    assert answers == ["blue", "red", "red"]  # 3 teacher labels, the gold row replaced
    assert g["tasks"].count("rationale:llama") == 2
    assert out.stats.rows_per_task["answer"] == 3  # what is trained, not what was built


def test_empty_rationale_is_an_error_not_a_skip():
    recs = records(2)
    rows = both(recs)
    rows[1]["rationale"] = "   "
    with pytest.raises(EmptyTargetError, match=r"teacher 'qwen', example 'ex0'"):
        build_task_groups(recs, rows, plan_of())


def test_empty_self_eval_and_empty_answer_are_errors():
    rec = records(1)[0]
    se = store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="", verdict="")
    with pytest.raises(EmptyTargetError, match="self-evaluation"):
        build_task_groups([rec], [se], plan_of(self_eval={"enabled": True}))
    blank = MCQRecord(id="b", question="Q?", choices=(), answer="0")
    object.__setattr__(blank, "answer", " ")
    with pytest.raises(EmptyTargetError, match="dataset example 'b'"):
        build_task_groups([blank], [], plan_of())


def test_rows_of_other_examples_are_a_store_mismatch():
    recs = records(3)
    with pytest.raises(StoreMismatchError, match="example 'ex2'"):
        build_task_groups(recs[:2], both(recs), plan_of())


def test_unknown_kind_is_an_error():
    rec = records(1)[0]
    with pytest.raises(TaskDataError, match="unknown kind 'critique'"):
        build_task_groups([rec], [store_row(rec, "llama", kind="critique")], plan_of())


def test_missing_teacher_coverage_is_a_clear_error():
    with pytest.raises(MissingTeacherError, match=r"qwen \(kind=rationale\).*tinyllm-ray generate"):
        check_teacher_coverage(plan_of(), {("llama", "rationale"): 3})
    with pytest.raises(MissingTeacherError, match="self_eval.enabled: false"):
        check_teacher_coverage(plan_of(self_eval={"enabled": True}),
                               {("llama", "rationale"): 3, ("qwen", "rationale"): 3, ("llama", "self_eval"): 1})
    check_teacher_coverage(plan_of(), {("llama", "rationale"): 1, ("qwen", "rationale"): 1})


def test_source_puts_context_last_and_letters_options():
    s = format_source("Why?", ("yes", "no"), "A long abstract.")
    assert s.splitlines()[0] == "Q: Why?"
    assert "(a) yes" in s and "(b) no" in s
    assert s.splitlines()[-1] == "Context: A long abstract."


# --------------------------------------------------------------------------- per-teacher self-evaluation, first k CoTs


def test_only_teachers_that_self_evaluate_give_self_eval_rows():
    rec = records(1)[0]
    plan = TaskPlan.from_config(JobConfig.model_validate(
        {"teachers": [{"name": "llama", "model": "x"}, {"name": "qwen", "model": "y", "self_eval": True}]}))
    assert plan.self_eval and plan.kinds_of("qwen") == ("rationale", "self_eval") and plan.kinds_of("llama") == (
        "rationale",)
    se = [store_row(rec, t, kind="self_eval", eval_idx=0, critique="ok", verdict="correct") for t in ("llama", "qwen")]
    out = build_task_groups([rec], [*both([rec]), *se], plan)
    assert out.stats.rows_per_task[SELF_EVAL_VERDICT_TASK] == 1
    assert out.stats.ignored_kinds == {"self_eval": 1}
    # coverage asks self-evaluations of the self-evaluating teacher only
    check_teacher_coverage(plan, {("llama", "rationale"): 1, ("qwen", "rationale"): 1, ("qwen", "self_eval"): 1})
    with pytest.raises(MissingTeacherError, match=r"qwen \(kind=self_eval\)"):
        check_teacher_coverage(plan, {("llama", "rationale"): 1, ("qwen", "rationale"): 1})
    assert TaskPlan.from_dict(plan.to_dict()) == plan


def test_max_cots_keeps_the_first_k_cots_and_their_self_evaluations_and_counts_the_rest():
    rec = records(1)[0]
    rows = [store_row(rec, "llama", sample_idx=j, rationale=f"cot {j}") for j in range(3)]
    rows += [store_row(rec, "llama", kind="self_eval", sample_idx=j, eval_idx=0, rationale=f"cot {j}",
                       critique="fine", verdict="correct") for j in range(3)]
    cfg = {"teachers": [{"name": "llama", "model": "x"}], "self_eval": {"enabled": True}}
    every = build_task_groups([rec], rows, TaskPlan.from_config(JobConfig.model_validate(cfg)))
    assert every.stats.rows_per_task["rationale:llama"] == 3 and not every.stats.extra_cots
    one = build_task_groups([rec], rows, TaskPlan.from_config(JobConfig.model_validate(
        {**cfg, "student": {"max_cots_per_teacher": 1}})))
    assert one.stats.rows_per_task["rationale:llama"] == 1
    assert one.stats.rows_per_task[SELF_EVAL_VERDICT_TASK] == 1
    assert one.stats.extra_cots == {"rationale": 2, "self_eval": 2}
    assert [t for g in one.groups for t in g["targets"] if t.startswith("cot")] == ["cot 0"]

"""Store rows + dataset -> task rows: weights, stages, prefixes, errors (pure, milliseconds)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tinyllm_ray.config import JobConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.student.tasks import (
    ANSWER_TASK,
    SELF_EVAL_TASK,
    EmptyTargetError,
    MissingTeacherError,
    TaskDataError,
    TaskPlan,
    TaskStats,
    build_task_rows,
    format_source,
    group_task_rows,
    self_eval_target,
    store_rows_to_task_rows,
)

# --------------------------------------------------------------------------- helpers (also used by
# tests/integration/test_train.py)


def records(n: int = 3) -> list[MCQRecord]:
    return [MCQRecord(id=f"ex{i}", question=f"What is item {i}?", choices=("red", "blue", "green"),
                      answer=("red", "blue", "green")[i % 3]) for i in range(n)]


def store_row(rec: MCQRecord, teacher: str, kind: str = "rationale", sample_idx: int = 0, eval_idx: int = -1,
              rationale: str | None = None, parsed: str | None = None, verdict: str | None = None,
              critique: str | None = None) -> dict[str, Any]:
    """One row with every column of docs/internals.md's rationale store."""
    return {
        "kind": kind, "teacher": teacher, "example_id": rec.id, "split": "train", "sample_idx": sample_idx,
        "eval_idx": eval_idx, "prompt_hash": "0" * 16, "question": rec.question, "context": rec.context,
        "choices": list(rec.choices), "answer": rec.answer,
        "rationale": f"{teacher} thinks it is {rec.answer}." if rationale is None else rationale,
        "parsed_answer": parsed, "answer_match": None if parsed is None else parsed == rec.answer,
        "verdict": verdict, "critique": critique, "prompt_tokens": 10, "output_tokens": 5,
        "finish_reason": "stop",
    }


def write_store(root: str | Path, rows: list[dict[str, Any]], rows_per_shard: int = 1000) -> None:
    """Write rows in the documented layout: records/teacher=<t>/kind=<k>/shard-NNNNN.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        parts.setdefault((r["teacher"], r["kind"]), []).append(r)
    schema = pa.schema([
        ("kind", pa.string()), ("teacher", pa.string()), ("example_id", pa.string()), ("split", pa.string()),
        ("sample_idx", pa.int32()), ("eval_idx", pa.int32()), ("prompt_hash", pa.string()),
        ("question", pa.string()), ("context", pa.string()), ("choices", pa.list_(pa.string())),
        ("answer", pa.string()), ("rationale", pa.string()), ("parsed_answer", pa.string()),
        ("answer_match", pa.bool_()), ("verdict", pa.string()), ("critique", pa.string()),
        ("prompt_tokens", pa.int32()), ("output_tokens", pa.int32()), ("finish_reason", pa.string()),
    ])
    for (teacher, kind), rs in parts.items():
        d = Path(root) / "records" / f"teacher={teacher}" / f"kind={kind}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(rs), rows_per_shard):
            pq.write_table(pa.Table.from_pylist(rs[i:i + rows_per_shard], schema=schema),
                           os.fspath(d / f"shard-{i // rows_per_shard:05d}.parquet"))


def job(**over: Any) -> JobConfig:
    raw: dict[str, Any] = {"teachers": [{"name": "llama", "model": "x"}, {"name": "qwen", "model": "y"}]}
    for k, v in over.items():
        raw[k] = v
    return JobConfig.model_validate(raw)


# --------------------------------------------------------------------------- plan


def test_additive_weights_prefixes_and_order():
    plan = TaskPlan.from_config(job(loss={"form": "additive", "alpha": {"llama": 0.5}, "default_alpha": 2.0}))
    assert plan.names == ("answer", "rationale:llama", "rationale:qwen")
    assert plan.weights == {"answer": 1.0, "rationale:llama": 0.5, "rationale:qwen": 2.0}
    assert plan.prefixes["rationale:qwen"] == "explain qwen: "
    assert plan.prefixes["answer"] == "predict: "
    assert plan.num_stages == 1
    assert TaskPlan.from_dict(plan.to_dict()) == plan


def test_convex_weights_share_the_rationale_half():
    plan = TaskPlan.from_config(job(loss={"form": "convex", "convex_alpha": 0.3}))
    assert plan.weights["answer"] == pytest.approx(0.3)
    assert plan.weights["rationale:llama"] == pytest.approx(0.35)
    assert plan.weights["rationale:qwen"] == pytest.approx(0.35)


def test_two_stage_puts_self_eval_first():
    plan = TaskPlan.from_config(job(self_eval={"enabled": True}, loss={"schedule": "two_stage",
                                                                       "self_eval_weight": 0.7}))
    assert plan.names[-1] == SELF_EVAL_TASK
    assert plan.stages == {"answer": 1, "rationale:llama": 1, "rationale:qwen": 1, "self_eval": 0}
    assert plan.weights["self_eval"] == 0.7
    assert plan.tasks_of_stage(0) == ("self_eval",)


def test_no_teachers_is_plain_fine_tuning():
    plan = TaskPlan.from_config(JobConfig.model_validate({"loss": {"form": "convex"}}))
    assert plan.names == ("answer",) and plan.teachers == ()
    rows, _ = build_task_rows(JobConfig(), records(2), [])
    assert [r["task"] for r in rows] == ["answer", "answer"]


def test_two_stage_without_self_eval_is_an_error():
    with pytest.raises(TaskDataError, match="self_eval.enabled"):
        TaskPlan.from_config(job(loss={"schedule": "two_stage"}))


# --------------------------------------------------------------------------- rows


def test_rows_follow_the_contract():
    recs = records(2)
    rows, stats = build_task_rows(job(), recs, [store_row(r, t) for r in recs for t in ("llama", "qwen")])
    assert len(rows) == 6
    for r in rows:
        assert set(r) >= {"input", "target", "task", "weight", "stage"}
        assert r["input"] == r["prefix"] + r["source"]
        assert r["input"].startswith(TaskPlan.from_config(job()).prefixes[r["task"]])
    ans = [r for r in rows if r["task"] == ANSWER_TASK]
    assert [r["target"] for r in ans] == [r.answer for r in recs]
    assert stats.rows_per_task == {"answer": 2, "rationale:llama": 2, "rationale:qwen": 2}
    # every task of one question shares one source, hence one group
    assert len({r["group"] for r in rows}) == 2


def test_source_puts_context_last_and_letters_options():
    s = format_source("Why?", ("yes", "no"), "A long abstract.")
    assert s.splitlines()[0] == "Q: Why?"
    assert "(a) yes" in s and "(b) no" in s
    assert s.splitlines()[-1] == "Context: A long abstract."


def test_missing_teacher_is_a_clear_error():
    recs = records(2)
    with pytest.raises(MissingTeacherError, match=r"qwen \(kind=rationale\).*tinyllm-ray generate"):
        build_task_rows(job(), recs, [store_row(r, "llama") for r in recs])


def test_missing_self_eval_rows_are_an_error_when_enabled():
    recs = records(1)
    rows = [store_row(recs[0], t) for t in ("llama", "qwen")]
    with pytest.raises(MissingTeacherError, match="self_eval"):
        build_task_rows(job(self_eval={"enabled": True}), recs, rows)


def test_empty_rationale_is_an_error_not_a_skip():
    recs = records(2)
    rows = [store_row(r, t) for r in recs for t in ("llama", "qwen")]
    rows[1]["rationale"] = "   "
    with pytest.raises(EmptyTargetError, match=r"teacher 'qwen', example 'ex0'"):
        build_task_rows(job(), recs, rows)


def test_empty_self_eval_is_an_error():
    rec = records(1)[0]
    plan = TaskPlan.from_config(job(self_eval={"enabled": True}))
    with pytest.raises(EmptyTargetError, match="self-evaluation"):
        store_rows_to_task_rows([store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="", verdict="")],
                                plan)


def test_unknown_teachers_are_counted_not_silently_dropped():
    rec = records(1)[0]
    stats = TaskStats()
    out = store_rows_to_task_rows([store_row(rec, "mistral"), store_row(rec, "llama")],
                                  TaskPlan.from_config(job()), stats)
    assert [r["task"] for r in out] == ["rationale:llama"]
    assert stats.ignored_teachers == {"mistral": 1}


def test_self_eval_rows_and_target():
    rec = records(1)[0]
    plan = TaskPlan.from_config(job(self_eval={"enabled": True}, loss={"schedule": "two_stage"}))
    row = store_row(rec, "llama", kind="self_eval", eval_idx=0, critique="The steps hold.", verdict="correct")
    (out,) = store_rows_to_task_rows([row], plan)
    assert out["task"] == SELF_EVAL_TASK and out["stage"] == 0
    assert out["input"].startswith("evaluate: ")
    assert "Proposed reasoning: llama thinks it is red." in out["source"]
    assert out["target"] == "The steps hold.\nVerdict: correct"
    assert self_eval_target("Fine.\nVerdict: wrong", "wrong") == "Fine.\nVerdict: wrong"


def test_teacher_labels_replace_gold_in_groups():
    recs = records(1)
    cfg = job(filter={"label_source": "teacher"})
    rows, _ = build_task_rows(cfg, recs, [
        store_row(recs[0], "llama", sample_idx=0, parsed="blue"),
        store_row(recs[0], "llama", sample_idx=1, parsed=None),  # unparsed -> gold
        store_row(recs[0], "qwen", parsed="red"),
    ])
    (g,) = group_task_rows(rows, label_source="teacher")
    answers = sorted(t for task, t in zip(g["tasks"], g["targets"]) if task == "answer")
    assert answers == ["blue", "red", "red"]  # 3 teacher labels, the gold row replaced
    assert g["tasks"].count("rationale:llama") == 2


def test_group_rows_are_aligned_and_deterministic():
    recs = records(3)
    rows, _ = build_task_rows(job(), recs, [store_row(r, t) for r in recs for t in ("llama", "qwen")])
    g1 = group_task_rows(rows)
    g2 = group_task_rows(list(reversed(rows)))
    assert g1 == g2
    for g in g1:
        assert len(g["tasks"]) == len(g["prefixes"]) == len(g["targets"]) == len(g["weights"]) == 3

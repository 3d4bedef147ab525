"""Cross-teacher agreement: the pure rule, the filter and weight modes of the builder, the
per-pair statistics, their config and their place in the reports (pure, milliseconds)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.unit.test_student_tasks import job, plan_of, records, store_row, write_store
from tinyllm_ray.config import JobConfig
from tinyllm_ray.jobs.progress import job_summary
from tinyllm_ray.jobs.report import render_markdown
from tinyllm_ray.store.agreement import (
    agreeing_teachers,
    agreement_stats,
    answer_key,
    answers_by_example,
    format_agreement,
    store_agreement,
)
from tinyllm_ray.store.manifest import build_manifest, manifest_conflicts
from tinyllm_ray.student.losses import packed_task_loss
from tinyllm_ray.student.tasks import TaskPlan, build_task_groups, cross_teacher_stats

THREE = [{"name": "llama", "model": "x"}, {"name": "qwen", "model": "y"}, {"name": "phi", "model": "z"}]


def _rows(recs, answers):
    """answers[teacher] = parsed answer per example (None: unparsed; missing key: no row)."""
    return [store_row(recs[i], t, parsed=a) for t, per in answers.items() for i, a in enumerate(per) if a != "-"]


# --------------------------------------------------------------------------- the pure rule


def test_answers_are_compared_normalised_and_unparsed_agrees_with_nobody():
    assert answer_key(" The Blue. ") == answer_key("blue") == "blue"
    assert answer_key("1,200.50") == answer_key("1200.5")
    assert answer_key(None) is None and answer_key("  ") is None and answer_key(float("nan")) is None
    recs = records(1)
    rows = [store_row(recs[0], "llama", parsed="Blue"), store_row(recs[0], "qwen", parsed="blue."),
            store_row(recs[0], "phi", parsed="red"), store_row(recs[0], "llama", kind="self_eval", parsed="red")]
    answers = answers_by_example(rows, ["llama", "qwen", "phi"])["ex0"]
    assert agreeing_teachers(answers, "blue") == 2  # the CoT's own teacher counts
    assert agreeing_teachers(answers, "red") == 1  # the self-evaluation row is not an answer
    assert agreeing_teachers(answers, None) == 0


def test_a_teacher_agrees_when_any_of_its_cots_reached_the_answer_within_max_cots():
    recs = records(1)
    rows = [store_row(recs[0], "llama", sample_idx=0, parsed="red"), store_row(recs[0], "llama", sample_idx=1,
                                                                               parsed="blue"),
            store_row(recs[0], "qwen", parsed="blue")]
    assert agreeing_teachers(answers_by_example(rows, ["llama", "qwen"])["ex0"], "blue") == 2
    assert agreeing_teachers(answers_by_example(rows, ["llama", "qwen"], max_cots=1)["ex0"], "blue") == 1


def test_pair_statistics_and_majority_shares():
    recs = records(4)
    rows = _rows(recs, {"llama": ["red", "blue", "green", "red"],
                        "qwen": ["red", "blue", "red", None],
                        "phi": ["red", "green", "blue", "-"]})
    st = agreement_stats(answers_by_example(rows, ["llama", "qwen", "phi"]), ["llama", "qwen", "phi"])
    assert st["examples"] == 4 and st["unanimous"] == 1
    assert st["pairs"]["llama~qwen"] == {"both_answered": 3, "agree": 2, "rate": round(2 / 3, 4)}
    assert st["pairs"]["llama~phi"] == {"both_answered": 3, "agree": 1, "rate": round(1 / 3, 4)}
    assert st["pairs"]["qwen~phi"] == {"both_answered": 3, "agree": 1, "rate": round(1 / 3, 4)}
    # majorities: ex0 red (3), ex1 blue (2 of 3), ex2 none (3 answers), ex3 red (llama alone answered)
    assert st["majority"]["llama"] == {"answered": 4, "with_majority": 3, "agrees": 3, "rate": 1.0}
    assert st["majority"]["phi"] == {"answered": 3, "with_majority": 2, "agrees": 1, "rate": 0.5}
    text = "\n".join(format_agreement(st))
    assert "llama ~ qwen: 67% (2/3 examples both answered)" in text
    assert "with the majority answer: llama 100% (3/3), qwen 100% (2/2), phi 50% (1/2)" in text


def test_a_teacher_answer_is_its_most_frequent_then_earliest():
    recs = records(1)
    rows = [store_row(recs[0], "llama", sample_idx=i, parsed=a) for i, a in enumerate(["red", "blue", "blue"])]
    rows.append(store_row(recs[0], "qwen", parsed="blue"))
    st = agreement_stats(answers_by_example(rows, ["llama", "qwen"]), ["llama", "qwen"])
    assert st["pairs"]["llama~qwen"]["agree"] == 1
    tie = [store_row(recs[0], "llama", sample_idx=1, parsed="blue"), store_row(recs[0], "llama", sample_idx=0,
                                                                               parsed="red"),
           store_row(recs[0], "qwen", parsed="blue")]
    assert agreement_stats(answers_by_example(tie, ["llama", "qwen"]), ["llama", "qwen"])["pairs"][
        "llama~qwen"]["agree"] == 0  # a tie goes to the earliest CoT (red)


def test_store_agreement_reads_the_store(tmp_path):
    recs = records(3)
    rows = _rows(recs, {"llama": ["red", "blue", "green"], "qwen": ["red", "green", None]})
    store = write_store(tmp_path / "s", rows, records=recs, shard_size=2)
    st = store_agreement(store, ["llama", "qwen"])
    assert st["pairs"]["llama~qwen"] == {"both_answered": 2, "agree": 1, "rate": 0.5}
    # read one slice (2 shards here) at a time, summed: the same as all rows at once
    assert st == agreement_stats(answers_by_example(rows, ["llama", "qwen"]), ["llama", "qwen"])
    assert store_agreement(store, ["llama"]) is None and format_agreement(None) == []


# --------------------------------------------------------------------------- config


def test_config_default_is_off_and_checks_teacher_counts():
    assert job().filter.cross_teacher.mode == "off"
    assert job(filter={"cross_teacher": {"mode": "weight"}}).filter.cross_teacher.mode == "weight"
    with pytest.raises(ValidationError, match="two or more teachers"):
        JobConfig.model_validate({"teachers": [{"name": "llama", "model": "x"}],
                                  "filter": {"cross_teacher": {"mode": "filter"}}})
    with pytest.raises(ValidationError, match="min_agreeing 3 is more than the 2"):
        job(filter={"cross_teacher": {"mode": "filter", "min_agreeing": 3}})


def test_cross_teacher_is_not_part_of_the_store_manifest():
    recs = records(2)
    off, on = job(), job(filter={"cross_teacher": {"mode": "filter"}})
    assert manifest_conflicts(build_manifest(off, "train", recs, 8), build_manifest(on, "train", recs, 8)) == []
    assert "cross_teacher" not in build_manifest(on, "train", recs, 8)["common"]["filter"]


def test_plan_carries_the_mode_through_its_dict():
    plan = plan_of(filter={"cross_teacher": {"mode": "weight", "min_agreeing": 1}})
    again = TaskPlan.from_dict(plan.to_dict())
    assert (again.cross_teacher, again.min_agreeing) == ("weight", 1)
    old = {k: v for k, v in plan.to_dict().items() if k not in ("cross_teacher", "min_agreeing")}
    assert TaskPlan.from_dict(old).cross_teacher == "off"


# --------------------------------------------------------------------------- the builder


def _teacher_rows(out, task="rationale:"):
    return sorted((r["example_id"], r["task"], r["weight"]) for r in out.rows if r["task"].startswith(task))


def test_off_is_exactly_today():
    recs = records(3)
    rows = _rows(recs, {"llama": ["red", "blue", None], "qwen": ["blue", "blue", "green"]})
    assert build_task_groups(recs, rows, plan_of()).groups == build_task_groups(
        recs, rows, TaskPlan.from_dict({**plan_of().to_dict(), "cross_teacher": "off"})).groups


def test_filter_drops_cots_too_few_teachers_agree_with_and_counts_them():
    recs = records(3)
    rows = _rows(recs, {"llama": ["red", "blue", None], "qwen": ["red", "green", "green"]})
    plan = plan_of(filter={"cross_teacher": {"mode": "filter"}})
    out = build_task_groups(recs, rows, plan)
    assert _teacher_rows(out) == [("ex0", "rationale:llama", 1.0), ("ex0", "rationale:qwen", 1.0)]
    assert out.stats.cross_teacher_dropped == {"llama": 2, "qwen": 2}
    assert out.stats.rows_per_task["rationale:llama"] == 1 and out.stats.rows_per_task["answer"] == 3
    assert out.stats.to_dict()["cross_teacher_dropped"] == {"llama": 2, "qwen": 2}
    # the driver-side count applies the same rule to the store's four columns
    assert cross_teacher_stats(rows, plan).cross_teacher_dropped == out.stats.cross_teacher_dropped


def test_filter_also_drops_the_answer_label_taken_from_a_dropped_cot():
    recs = records(1)
    rows = _rows(recs, {"llama": ["blue"], "qwen": ["green"]})
    out = build_task_groups(recs, rows, plan_of(filter={"label_source": "teacher",
                                                        "cross_teacher": {"mode": "filter"}}))
    (g,) = out.groups
    assert g["tasks"] == ["answer"] and g["targets"] == [recs[0].answer]  # gold is kept when no label survives


def test_weight_scales_each_cot_by_the_share_of_teachers_agreeing():
    recs = records(2)
    rows = _rows(recs, {"llama": ["red", "blue"], "qwen": ["red", "green"], "phi": ["red", None]})
    plan = TaskPlan.from_config(JobConfig.model_validate({
        "teachers": THREE, "loss": {"alpha": {"llama": 0.5}}, "filter": {"cross_teacher": {"mode": "weight"}}}))
    out = build_task_groups(recs, rows, plan)
    got = {(e, t): w for e, t, w in _teacher_rows(out)}
    assert got[("ex0", "rationale:llama")] == pytest.approx(0.5)  # alpha 0.5 x 3/3
    assert got[("ex1", "rationale:llama")] == pytest.approx(0.5 / 3)  # alone: alpha x 1/3
    assert got[("ex1", "rationale:qwen")] == pytest.approx(plan.weights["rationale:qwen"] / 3)
    assert ("ex1", "rationale:phi") not in got  # unparsed: share 0, left out and counted
    assert out.stats.cross_teacher_dropped == {"phi": 1}
    assert out.stats.cross_teacher_weights == {"llama@1.00": 1, "qwen@1.00": 1, "phi@1.00": 1,
                                               "llama@0.33": 1, "qwen@0.33": 1}
    g = next(g for g in out.groups if g["example_id"] == "ex1")
    assert dict(zip(g["tasks"], g["weights"]))["rationale:llama"] == pytest.approx(0.5 / 3)


def test_self_evaluations_are_kept_whatever_the_agreement():
    recs = records(1)
    rows = _rows(recs, {"llama": ["blue"], "qwen": ["green"]})
    rows.append(store_row(recs[0], "llama", kind="self_eval", eval_idx=0, parsed="blue", verdict="wrong",
                          critique="step 1 is wrong"))
    out = build_task_groups(recs, rows, plan_of(self_eval={"enabled": True}, filter={"cross_teacher": {"mode": "filter"}}))
    assert out.stats.rows_per_task["self_eval_verdict"] == 1 and out.stats.rows_per_task["self_eval_critique"] == 1
    assert out.stats.cross_teacher_dropped == {"llama": 1, "qwen": 1}


def test_per_row_weights_reach_the_packed_loss():
    """The loss already takes one weight per row: weights 1.0 x task weight reproduce the
    task-weighted loss exactly, and a row's agreement share scales only that row's term."""
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 4, 7, dtype=torch.float64), torch.randint(0, 7, (3, 4))
    task = torch.tensor([0, 1, 1])
    base = packed_task_loss(logits, labels, task, torch.tensor([1.0, 0.5, 0.5]), 2)
    same = packed_task_loss(logits, labels, task, torch.tensor([1.0, 0.5, 0.5]) * 1.0, 2)
    assert torch.equal(base.total, same.total)
    scaled = packed_task_loss(logits, labels, task, torch.tensor([1.0, 0.5, 0.5 / 3]), 2)
    row2 = packed_task_loss(logits, labels, task, torch.tensor([0.0, 0.0, 0.5]), 2).total
    assert torch.allclose(scaled.total, base.total - row2 + row2 / 3)


# --------------------------------------------------------------------------- reports


STATS = {"teachers": ["llama", "qwen"], "examples": 3, "unanimous": 1,
         "pairs": {"llama~qwen": {"both_answered": 2, "agree": 1, "rate": 0.5}},
         "majority": {"llama": {"answered": 3, "with_majority": 1, "agrees": 1, "rate": 1.0},
                      "qwen": {"answered": 2, "with_majority": 1, "agrees": 1, "rate": 1.0}}}


def test_generate_and_run_summaries_show_the_pair_rates():
    gen = job_summary("generate", {"teachers": {}, "agreement": STATS})
    assert "  llama ~ qwen: 50% (1/2 examples both answered)" in gen
    run = job_summary("run", {"teachers": {"llama": {"teacher": "llama"}}, "generation": {"agreement": STATS}})
    assert any("cross-teacher agreement" in line for line in run)


def test_run_report_has_an_agreement_table_and_the_student_counts():
    report = {"run": "r", "student": "s", "store_uri": "u", "teachers": {}, "evaluation": {}, "seconds": {},
              "generation": {"agreement": STATS},
              "training": {"best_step": 1, "total_steps": 1, "best_val_accuracy": 0.5, "task_losses": {},
                           "data": {"cross_teacher_dropped": {"qwen": 1}, "cross_teacher_weights": {}}}}
    md = render_markdown(report)
    assert "## Cross-teacher agreement" in md and "| llama ~ qwen | 1 | 2 | 50% |" in md
    assert "CoTs left out per teacher {'qwen': 1}" in md
    assert "Cross-teacher" not in render_markdown({**report, "generation": {}})


def test_the_readme_example_is_a_valid_config():
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Cross-teacher agreement"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    cfg = job(**yaml.safe_load(block[:block.index("```")]))
    assert cfg.filter.cross_teacher.mode == "filter" and cfg.filter.cross_teacher.min_agreeing == 2

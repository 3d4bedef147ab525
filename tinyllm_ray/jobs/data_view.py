"""``tinyllm-ray data``: what a config's dataset is, and what each consumer will see of it.

Why a command of its own: a dataset mistake (a wrong file for a split, rows silently
skipped, test questions repeated in train, a prompt layout nobody looked at) otherwise
surfaces only after teachers have spent hours writing rationales for it. This job answers,
in about a second and without Ray or any model: how big is each split and where it came
from, which rows were skipped and why, which questions appear in two splits, and, for a
few examples, the exact teacher prompt of every configured teacher and the student's
input/target per task.

It only *asks* the owners: rows come from ``load_splits`` (``data/loader.py``), teacher
prompts from ``teachers/prompt_rows.build_prompt`` (the text generation sends), the
student's answer rows from ``student/tasks/build.build_task_groups`` (the one builder,
given no store rows) and the other tasks' prefixes, weights and stages from ``TaskPlan``.
Nothing here re-implements a layout, so what it prints is what the stages do.

:func:`data_view` returns a JSON-able report (``--json``); :func:`render_data_view`
turns it into plain aligned text for a terminal.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from tinyllm_ray.config import JobConfig
from tinyllm_ray.data.loader import LoadedData, arithmetic_problems, load_splits
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.student.tasks.build import build_task_groups
from tinyllm_ray.student.tasks.formats import self_eval_source
from tinyllm_ray.student.tasks.plan import (
    ANSWER_TASK,
    SELF_EVAL_TASKS,
    SELF_EVAL_VERDICT_TASK,
    TaskPlan,
    rationale_task,
)
from tinyllm_ray.teachers.prompt_rows import build_prompt

__all__ = ["data_view", "render_data_view"]

_PREFIX_SIDE = {
    "decoder": "student.task_prefix_side: decoder: a seq2seq student encodes the question once "
               "and each task's prefix starts its target",
    "encoder": "student.task_prefix_side: encoder: the prefix and question are encoded together",
}
_COT_PLACEHOLDER = "<a teacher's CoT for this question, from the rationale store>"


def data_view(cfg: JobConfig, show: int, split: str | None = None) -> dict[str, Any]:
    """The report of ``tinyllm-ray data``: sizes, skips, overlap and ``show`` examples of ``split``.

    ``split`` defaults to ``train`` (what teachers and the student are trained on), or the
    first split there is when the dataset has no train split. A ``split`` the dataset
    does not have is a :class:`~tinyllm_ray.errors.DataLoadError` naming those it has.
    """
    plan = TaskPlan.from_config(cfg)  # before reading data: inconsistent loss settings fail first
    loaded = load_splits(cfg.data, enforce_overlap=False)  # show a refused overlap instead of failing
    split = _example_split(loaded, split)
    records = loaded.splits.get(split, [])[: max(show, 0)]
    solutions = _gold_solutions(cfg, split) if records else {}
    pool = loaded.splits.get("train", [])  # teachers' in-context examples: train only
    notes = []
    if "train" not in loaded.splits:
        notes.append("no train split: teacher prompts are shown without in-context examples")
    if cfg.data.split_overlap == "error" and any(o["shared_examples"] for o in loaded.overlap):
        notes.append("examples repeat across splits: generate, train, run and eval refuse this dataset until "
                     "data.split_overlap is drop (removed from the earlier split) or allow")
    if plan.label_source == "teacher":
        notes.append("filter.label_source: teacher: answer targets become each teacher's parsed answer")
    if plan.cross_teacher == "filter":
        notes.append(f"filter.cross_teacher: filter: a CoT trains only if at least {plan.min_agreeing} teachers "
                     "gave its parsed answer (the others are counted in the student-data stats)")
    elif plan.cross_teacher == "weight":
        notes.append("filter.cross_teacher: weight: each CoT's loss weight is scaled by the share of teachers "
                     "that gave its parsed answer")
    return {
        "dataset": cfg.data.name,
        "splits": {s: {"rows": len(r), "source": loaded.sources.get(s, "")} for s, r in loaded.splits.items()},
        "skipped": {s: dict(c) for s, c in loaded.skipped.items() if c},
        "split_overlap": cfg.data.split_overlap,
        "overlap": loaded.overlap,
        "examples": {
            "split": split,
            "shown": len(records),
            "of": len(loaded.splits.get(split, [])),
            "task_prefix_side": cfg.student.task_prefix_side,
            "items": [_example(cfg, plan, r, pool, solutions.get(r.id)) for r in records],
        },
        "notes": notes,
    }


def _example_split(loaded: LoadedData, split: str | None) -> str:
    if split is None:
        return "train" if "train" in loaded.splits else next(iter(loaded.splits), "train")
    loaded.require(split)  # DataLoadError naming the splits there are
    return split


def _gold_solutions(cfg: JobConfig, split: str) -> dict[str, str]:
    """Gold step-by-step solutions by id (only the built-in arithmetic task has them)."""
    if cfg.data.name != "arithmetic":
        return {}
    return {p.id: p.solution for p in arithmetic_problems(cfg.data).get(split, [])}


def _example(cfg: JobConfig, plan: TaskPlan, record: MCQRecord, pool: Sequence[MCQRecord],
             solution: str | None) -> dict[str, Any]:
    """One example as the dataset holds it, as each teacher is asked it, as the student learns it."""
    item: dict[str, Any] = {
        "id": record.id, "question": record.question, "choices": list(record.choices),
        "answer": record.answer, "context": record.context,
    }
    if solution is not None:
        item["gold_solution"] = solution
    item["teacher_prompts"] = [
        {"teacher": t.name, "style": t.prompt_style, "prompt": build_prompt(t, record, pool, cfg.prompts)}
        for t in cfg.teachers
    ]
    item["student"] = _student_tasks(plan, record)
    return item


def _student_tasks(plan: TaskPlan, record: MCQRecord) -> list[dict[str, Any]]:
    """Input and target per task: the answer row from the one builder, the others from its prefixes.

    Rationale tasks read the same source as the answer task (only the prefix differs);
    their targets exist only once teachers have written the store, so a placeholder says
    where they come from.
    """
    (answer,) = build_task_groups([record], [], plan).rows
    teacher_of = {rationale_task(t): t for t in plan.teachers}
    out = []
    for task in plan.names:
        prefix = plan.prefixes[task]
        if task == ANSWER_TASK:
            source, target = answer["source"], answer["target"]
        elif task in SELF_EVAL_TASKS:
            source = self_eval_source(record.question, record.choices, record.context, _COT_PLACEHOLDER)
            part = "verdict" if task == SELF_EVAL_VERDICT_TASK else "critique"
            target = f"<that teacher's self-evaluation {part}, from the rationale store>"
        else:
            source = answer["source"]
            target = f"<{teacher_of[task]}'s rationale for this question, from the rationale store>"
        out.append({"task": task, "weight": plan.weights[task], "stage": plan.stages[task], "prefix": prefix,
                    "source": source, "input": prefix + source, "target": target})
    return out


# --------------------------------------------------------------------------- text


def render_data_view(report: dict[str, Any]) -> str:
    """The report as plain aligned text (no colours, no terminal width assumed)."""
    lines = [f"dataset: {report['dataset']}", "", "splits"]
    lines += _table(["split", "rows", "source"],
                    [[s, str(v["rows"]), v["source"]] for s, v in report["splits"].items()], right={1})
    lines += ["", "skipped rows"]
    skipped = [[s, reason, str(n)] for s, counts in report["skipped"].items() for reason, n in counts.items()]
    lines += _table(["split", "reason", "rows"], skipped, right={2}) if skipped else ["  none"]
    lines += ["", ("overlap between splits (after normalising case, punctuation and spacing; "
                   f"data.split_overlap: {report['split_overlap']})")]
    overlap = [[" ~ ".join(o["splits"]), str(o["shared_examples"]), str(o["shared_questions"]),
                ", ".join(f"{a} = {b}" for a, b in o["examples"])] for o in report["overlap"]]
    header = ["splits", "same examples", "same questions", "e.g."]
    lines += _table(header, overlap, right={1, 2}) if overlap else ["  one split, or a generated task: not checked"]
    ex = report["examples"]
    lines += ["", f"examples: {ex['shown']} of {ex['of']} {ex['split']} rows",
              f"  student input = task prefix + question; {_PREFIX_SIDE[ex['task_prefix_side']]}"]
    for i, item in enumerate(ex["items"], 1):
        lines += _render_example(i, item)
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _render_example(i: int, item: dict[str, Any]) -> list[str]:
    lines = ["", f"--- example {i}: {item['id']} ---"]
    lines += _field("question", item["question"])
    if item["choices"]:
        lines += _field("choices", " | ".join(item["choices"]))
    lines += _field("answer", item["answer"])
    if item["context"]:
        lines += _field("context", item["context"])
    if "gold_solution" in item:
        lines += _field("gold solution", item["gold_solution"])
    by_text: dict[str, list[str]] = {}  # teachers sharing a prompt style get the same text: show it once
    for p in item["teacher_prompts"]:
        by_text.setdefault(p["prompt"], []).append(f"{p['teacher']} ({p['style']})")
    for text, names in by_text.items():
        lines += ["", f"  teacher prompt: {', '.join(names)}"] + _block(text)
    if not by_text:
        lines += ["", "  teacher prompt: no teachers configured"]
    answer_source = next((t["source"] for t in item["student"] if t["task"] == ANSWER_TASK), None)
    for t in item["student"]:
        lines += ["", (f"  student task {t['task']} (weight {t['weight']:g}, stage {t['stage']}, "
                       f"prefix {t['prefix']!r})")]
        if t["task"] != ANSWER_TASK and t["source"] == answer_source:
            lines += [f"    input:  {t['prefix']!r} + the answer task's question above"]
        else:
            lines += ["    input:"] + _block(t["input"], indent=6)
        lines += ["    target:"] + _block(t["target"], indent=6)
    return lines


def _field(name: str, value: str) -> list[str]:
    return [f"  {name + ':':<15}{value}"]


def _block(text: str, indent: int = 4) -> list[str]:
    """A multi-line text, indented and fenced by ``|`` so leading/trailing spaces stay visible."""
    return [" " * indent + "|" + line for line in text.split("\n")]


def _table(header: list[str], rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    """Columns padded to their widest cell (``right``: right-aligned column indexes)."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = [r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c]) for c in range(len(r))]
        return ("  " + "  ".join(cells)).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]

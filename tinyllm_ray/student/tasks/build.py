"""Store rows + dataset records -> student task rows and groups: the one builder.

Every path that trains a student calls :func:`build_task_groups`: batch ``train`` and
streaming ``run`` (per store slice, ``student/data.py``), ``tune`` (through
``run_training``), the tests and the benchmarks. Keeping it pure (no Ray, no torch, no
I/O) lets every rule be unit-tested in milliseconds.

Task row (one target; :data:`TASK_ROW_SCHEMA`)::

    {"input": prefix + source, "target": str, "task": str, "weight": float, "stage": int,
     "source": str, "prefix": str, "group": str, "origin": "gold" | "teacher", "example_id": str}

``task`` is ``answer``, ``rationale:<teacher>``, ``self_eval_verdict`` or
``self_eval_critique``. ``source`` (the text
without the task prefix) and ``prefix`` are kept apart so a seq2seq student can encode a
question ONCE and decode every task's target from it (task prefix on the decoder side).

Group row (the unit of a micro-batch; :data:`GROUP_SCHEMA`): the task rows sharing one
(stage, source), as aligned lists::

    {"group": "<stage>:<sha1(source)[:16]>", "stage": int, "source": str, "example_id": str,
     "tasks": [str], "prefixes": [str], "targets": [str], "weights": [float]}

Errors, never silent skips: an empty target or a store row that cannot be mapped raises a
:class:`~tinyllm_ray.errors.TaskDataError` subclass naming the teacher, example and fix; a
store row for an example that is not among the given records raises
:class:`~tinyllm_ray.errors.StoreMismatchError`. Store rows of teachers that are not
configured (and self-evaluations when disabled) are *counted* in :class:`TaskStats`,
because dropping a teacher from the config is a legitimate ablation; so are stored
self-evaluations without a verdict (kept with ``filter.drop_unparsable: false``) or without
a critique, which give only their other task's row.

Cross-teacher agreement (``filter.cross_teacher``, :mod:`tinyllm_ray.store.agreement`):
computed over the store rows given, which hold every configured teacher's rows of each of
their examples (a slice reads shard *k* of every teacher, and shard *k* is the same
examples for all; a streaming slice is read only once every teacher committed it).
``filter`` leaves out a CoT (and the answer label taken from it) that fewer than
``min_agreeing`` teachers agree with, counted in ``TaskStats.cross_teacher_dropped`` per
teacher; ``weight`` multiplies its weight by the share of configured teachers agreeing,
counted in ``TaskStats.cross_teacher_weights`` (``<teacher>@<share>``); a CoT without a
parsed answer has share 0 and is left out (and counted) in both modes.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tinyllm_ray.errors import EmptyTargetError, MissingTeacherError, StoreMismatchError, TaskDataError
from tinyllm_ray.store.agreement import agreeing_teachers, answers_by_example
from tinyllm_ray.student.tasks.formats import format_source, group_key, self_eval_source
from tinyllm_ray.student.tasks.plan import (
    ANSWER_TASK,
    SELF_EVAL_CRITIQUE_TASK,
    SELF_EVAL_VERDICT_TASK,
    TaskPlan,
    rationale_task,
)

if TYPE_CHECKING:
    from tinyllm_ray.data.schema import MCQRecord

__all__ = [
    "GROUP_SCHEMA",
    "STORE_COLUMNS",
    "TASK_ROW_SCHEMA",
    "TaskGroups",
    "TaskStats",
    "build_task_groups",
    "check_teacher_coverage",
    "cross_teacher_stats",
]

#: Store columns the student reads (everything else in a shard is left on disk).
STORE_COLUMNS: tuple[str, ...] = (
    "kind", "teacher", "example_id", "sample_idx", "eval_idx", "question", "context", "choices",
    "answer", "rationale", "parsed_answer", "verdict", "critique",
)

#: One task row per target (see the module docstring for the meaning of each column).
TASK_ROW_SCHEMA = pa.schema([
    ("input", pa.string()), ("target", pa.string()), ("task", pa.string()), ("weight", pa.float64()),
    ("stage", pa.int64()), ("source", pa.string()), ("prefix", pa.string()), ("group", pa.string()),
    ("origin", pa.string()), ("example_id", pa.string()),
])

#: One group row per (stage, source): what the training datasets hold and the collator reads.
GROUP_SCHEMA = pa.schema([
    ("group", pa.string()), ("stage", pa.int64()), ("source", pa.string()), ("example_id", pa.string()),
    ("tasks", pa.list_(pa.string())), ("prefixes", pa.list_(pa.string())),
    ("targets", pa.list_(pa.string())), ("weights", pa.list_(pa.float64())),
])


@dataclass
class TaskStats:
    """What became of the inputs, all counted: targets per task (as trained), groups per
    stage, store rows left out (unconfigured teachers; self-evaluations when disabled) and
    targets a stored self-evaluation lacks (``missing_targets[task]``: no verdict or no
    critique, so no row for that task)."""

    rows_per_task: Counter = field(default_factory=Counter)
    groups_per_stage: Counter = field(default_factory=Counter)
    ignored_teachers: Counter = field(default_factory=Counter)
    ignored_kinds: Counter = field(default_factory=Counter)
    missing_targets: Counter = field(default_factory=Counter)
    extra_cots: Counter = field(default_factory=Counter)  # rows past student.max_cots_per_teacher, by kind
    cross_teacher_dropped: Counter = field(default_factory=Counter)  # CoTs too few teachers agree with, by teacher
    cross_teacher_weights: Counter = field(default_factory=Counter)  # CoTs by "<teacher>@<agreeing share>" (weight)

    def merge(self, other: TaskStats) -> TaskStats:
        self.rows_per_task.update(other.rows_per_task)
        self.groups_per_stage.update(other.groups_per_stage)
        self.ignored_teachers.update(other.ignored_teachers)
        self.ignored_kinds.update(other.ignored_kinds)
        self.missing_targets.update(other.missing_targets)
        self.extra_cots.update(other.extra_cots)
        self.cross_teacher_dropped.update(other.cross_teacher_dropped)
        self.cross_teacher_weights.update(other.cross_teacher_weights)
        return self

    def to_dict(self) -> dict[str, dict[Any, int]]:
        return {
            "rows_per_task": dict(self.rows_per_task),
            "groups_per_stage": dict(self.groups_per_stage),
            "ignored_teachers": dict(self.ignored_teachers),
            "ignored_kinds": dict(self.ignored_kinds),
            "missing_targets": dict(self.missing_targets),
            "extra_cots": dict(self.extra_cots),
            "cross_teacher_dropped": dict(self.cross_teacher_dropped),
            "cross_teacher_weights": dict(self.cross_teacher_weights),
        }


@dataclass
class TaskGroups:
    """The output of :func:`build_task_groups`: task rows, their groups, and the counts."""

    rows: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    stats: TaskStats

    def table(self) -> pa.Table:
        """The groups as an Arrow table with :data:`GROUP_SCHEMA` (a Ray Data block)."""
        return pa.Table.from_pylist(self.groups, schema=GROUP_SCHEMA)


def build_task_groups(
    records: Sequence[MCQRecord], store_rows: Iterable[Mapping[str, Any]], plan: TaskPlan
) -> TaskGroups:
    """Dataset records + their store rows -> validated task rows, packed into groups.

    Every record gives one gold ``answer`` row. Each ``rationale`` store row gives one
    ``rationale:<teacher>`` row (target = the CoT) and, with ``filter.label_source:
    teacher``, one answer row labelled with the answer parsed from that CoT (gold when
    unparsed), which then replaces the gold answer in that question's group (Mind's
    Mirror). When self-evaluation is enabled, each ``self_eval`` store row gives a
    ``self_eval_verdict`` row (target = the verdict word) and a ``self_eval_critique`` row
    (target = the critique), both with input = question + CoT. Rows are grouped by
    (stage, source); ``stats.rows_per_task`` counts the targets that are trained.

    ``store_rows`` must belong to ``records`` (one store slice and its examples, or the
    whole split and the whole store).
    """
    stats = TaskStats()
    rows = _answer_rows(records, plan)
    rows += _store_rows(store_rows, plan, stats, {r.id for r in records})
    groups = _group_rows(rows, plan.label_source)
    for g in groups:
        stats.groups_per_stage[int(g["stage"])] += 1
        stats.rows_per_task.update(g["tasks"])
    return TaskGroups(rows=rows, groups=groups, stats=stats)


def cross_teacher_stats(store_rows: Iterable[Mapping[str, Any]], plan: TaskPlan) -> TaskStats:
    """The ``filter.cross_teacher`` counts :func:`build_task_groups` makes for these rationale rows.

    Why: slices are built inside Ray tasks, whose :class:`TaskStats` never reach the driver;
    the driver reads only ``store.agreement.AGREEMENT_COLUMNS`` of the whole store and
    applies the same rule, so the student-data statistics show what was left out or
    weighted. Empty when the plan does not use cross-teacher agreement.
    """
    stats = TaskStats()
    if plan.cross_teacher == "off":
        return stats
    rows = [r for r in store_rows if str(_get(r, "kind") or "rationale") == "rationale"
            and r.get("teacher") in plan.teachers
            and (plan.max_cots is None or int(_get(r, "sample_idx") or 0) < plan.max_cots)]
    answers = answers_by_example(rows, plan.teachers, plan.max_cots)
    for r in rows:
        _agreement_scale(plan, answers.get(str(r["example_id"]), {}), str(r["teacher"]), _get(r, "parsed_answer"),
                         stats)
    return stats


def check_teacher_coverage(
    plan: TaskPlan, rows_per_teacher_kind: Mapping[tuple[str, str], int], store: str = "rationale store"
) -> None:
    """Raise :class:`MissingTeacherError` when a configured teacher has no (needed) rows.

    ``rows_per_teacher_kind[(teacher, kind)]`` counts the store rows (e.g.
    ``RationaleStore.row_counts``). Every configured teacher needs ``rationale`` rows; with
    self-evaluation enabled, every teacher also needs ``self_eval`` rows.
    """
    missing = [f"{t} (kind={k})" for t in plan.teachers for k in plan.kinds_of(t)
               if rows_per_teacher_kind.get((t, k), 0) == 0]
    if missing:
        have = sorted({f"{t} (kind={k})" for (t, k), n in rows_per_teacher_kind.items() if n})
        raise MissingTeacherError(
            f"{store}: no rows for configured teacher(s) {missing}; present: {have or 'nothing'}. "
            "Run `tinyllm-ray generate` for them, or remove them from `teachers` (and loss.alpha)"
            + ("; or set self_eval.enabled: false" if any("self_eval" in m for m in missing) else "")
        )


# --------------------------------------------------------------------------- internals


def _row(plan: TaskPlan, task: str, source: str, target: str, origin: str, example_id: str,
         scale: float = 1.0) -> dict[str, Any]:
    prefix = plan.prefixes[task]
    stage = plan.stages[task]
    return {
        "input": prefix + source, "target": target, "task": task, "weight": float(plan.weights[task]) * scale,
        "stage": int(stage), "source": source, "prefix": prefix, "group": group_key(stage, source),
        "origin": origin, "example_id": str(example_id),
    }


def _answer_rows(records: Iterable[MCQRecord], plan: TaskPlan) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if not r.answer.strip():
            raise EmptyTargetError(f"dataset example {r.id!r} has an empty answer; fix the dataset row")
        out.append(_row(plan, ANSWER_TASK, format_source(r.question, r.choices, r.context), r.answer,
                        "gold", r.id))
    return out


def _get(row: Mapping[str, Any], key: str) -> Any:
    v = row.get(key)
    if isinstance(v, float) and math.isnan(v):  # pandas hands missing strings as NaN
        return None
    return v


def _store_rows(rows: Iterable[Mapping[str, Any]], plan: TaskPlan, stats: TaskStats,
                example_ids: set[str]) -> list[dict[str, Any]]:
    teachers = set(plan.teachers)
    out: list[dict[str, Any]] = []
    rows = list(rows)
    answers = (answers_by_example(rows, plan.teachers, plan.max_cots) if plan.cross_teacher != "off" else {})
    for row in rows:
        teacher = str(_get(row, "teacher") or "")
        kind = str(_get(row, "kind") or "")
        ex = str(_get(row, "example_id") or "")
        if teacher not in teachers:
            stats.ignored_teachers[teacher] += 1
            continue
        if kind == "self_eval" and not plan.self_evaluates(teacher):
            stats.ignored_kinds["self_eval"] += 1
            continue
        if plan.max_cots is not None and int(_get(row, "sample_idx") or 0) >= plan.max_cots:
            stats.extra_cots[kind] += 1
            continue
        where = f"teacher {teacher!r}, example {ex!r}, sample {_get(row, 'sample_idx')}"
        if ex not in example_ids:
            raise StoreMismatchError(
                f"rationale store row of {where} has no matching example in the train split: the store was "
                "generated from other data; regenerate it (`tinyllm-ray generate` into a new runtime.store_uri)"
            )
        question = _get(row, "question") or ""
        choices = _get(row, "choices")
        choices = [] if choices is None else [str(c) for c in choices]
        context = _get(row, "context")
        rationale = (_get(row, "rationale") or "").strip()
        if kind == "rationale":
            if not rationale:
                raise EmptyTargetError(
                    f"rationale store: empty rationale for {where}; regenerate with filter.drop_empty: true "
                    f"(empty outputs are then dropped and counted in stats/{teacher}.json)"
                )
            scale = _agreement_scale(plan, answers.get(ex, {}), teacher, _get(row, "parsed_answer"), stats)
            if scale is None:
                continue
            source = format_source(question, choices, context)
            out.append(_row(plan, rationale_task(teacher), source, rationale, "teacher", ex, scale))
            if plan.label_source == "teacher":
                label = (_get(row, "parsed_answer") or "").strip() or (_get(row, "answer") or "").strip()
                if not label:
                    raise EmptyTargetError(f"rationale store: no parsed or gold answer for {where}")
                out.append(_row(plan, ANSWER_TASK, source, label, "teacher", ex, scale))
        elif kind == "self_eval":
            targets = {SELF_EVAL_VERDICT_TASK: (_get(row, "verdict") or "").strip(),
                       SELF_EVAL_CRITIQUE_TASK: (_get(row, "critique") or "").strip()}
            if not any(targets.values()):
                raise EmptyTargetError(
                    f"rationale store: empty critique and verdict for self-evaluation "
                    f"{_get(row, 'eval_idx')} of {where}; regenerate, or drop such rows in the teacher filter"
                )
            if not rationale:
                raise EmptyTargetError(f"rationale store: self-evaluation of {where} has an empty CoT to judge")
            source = self_eval_source(question, choices, context, rationale)
            for task, target in targets.items():
                if target:
                    out.append(_row(plan, task, source, target, "teacher", ex))
                else:
                    stats.missing_targets[task] += 1
        else:
            raise TaskDataError(f"rationale store: unknown kind {kind!r} for {where} (expected rationale|self_eval)")
    return out


def _agreement_scale(plan: TaskPlan, answers: Mapping[str, Any], teacher: str, parsed: Any,
                     stats: TaskStats) -> float | None:
    """The weight factor of one CoT under ``filter.cross_teacher`` (1.0 when off); None: leave it out (counted)."""
    if plan.cross_teacher == "off":
        return 1.0
    agree = agreeing_teachers(answers, parsed)
    if plan.cross_teacher == "filter":
        if agree < plan.min_agreeing:
            stats.cross_teacher_dropped[teacher] += 1
            return None
        return 1.0
    share = agree / len(plan.teachers)
    if share == 0:
        stats.cross_teacher_dropped[teacher] += 1
        return None
    stats.cross_teacher_weights[f"{teacher}@{share:.2f}"] += 1
    return share


def _group_rows(rows: Iterable[Mapping[str, Any]], label_source: str) -> list[dict[str, Any]]:
    """Pack task rows sharing a (stage, source) into one group row, deterministically ordered.

    With ``label_source == "teacher"`` a gold answer row is replaced by the teacher-labelled
    answer rows of the same question when there are any.
    """
    by_group: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_group[str(r["group"])].append(r)
    out = []
    for g, members in by_group.items():
        if label_source == "teacher" and any(
            m["task"] == ANSWER_TASK and m["origin"] == "teacher" for m in members
        ):
            members = [m for m in members if not (m["task"] == ANSWER_TASK and m["origin"] == "gold")]
        members = sorted(members, key=lambda m: (str(m["task"]), str(m["target"])))
        if len({m["source"] for m in members}) != 1:  # pragma: no cover - sha1 collision
            raise TaskDataError(f"group {g} mixes sources")
        out.append({
            "group": g,
            "stage": int(members[0]["stage"]),
            "source": members[0]["source"],
            "example_id": str(members[0]["example_id"]),
            "tasks": [str(m["task"]) for m in members],
            "prefixes": [str(m["prefix"]) for m in members],
            "targets": [str(m["target"]) for m in members],
            "weights": [float(m["weight"]) for m in members],
        })
    out.sort(key=lambda d: d["group"])
    return out

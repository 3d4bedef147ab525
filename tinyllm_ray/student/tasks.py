"""Rationale-store rows + dataset records -> student task rows (pure, no Ray, no torch).

Why a separate, pure module: this is where the two methods differ (TinyLLM's additive
``L_A + sum_m alpha_m L_m``; the convex ``a L_label + (1-a) L_rationale`` of Distilling
Step-by-Step / Mind's Mirror; Mind's Mirror's two-stage schedule), and where bad
rationale stores must be caught. Keeping it free of Ray and torch lets every rule be
unit-tested in milliseconds; the Ray Data pipeline (``student/data.py``) only maps these
functions over store shards.

Task rows (the contract of ``docs/internals.md``)::

    {"input": prefix + source, "target": str, "task": str, "weight": float, "stage": int,
     "source": str, "prefix": str, "group": str, "origin": "gold" | "teacher"}

``task`` is ``answer``, ``rationale:<teacher>`` or ``self_eval``. ``source`` (the text
without the task prefix) and ``prefix`` are kept apart so a seq2seq student can encode a
question ONCE and decode every task's target from it (task prefix on the decoder side);
``group`` names the rows that share one source within one stage.

Weights (one weight per task, so the packed loss equals the separate-pass reference):

- additive: answer 1, ``rationale:<m>`` alpha_m (``loss.alpha`` / ``default_alpha``),
  ``self_eval`` ``loss.self_eval_weight``;
- convex: answer a, each ``rationale:<m>`` (1-a)/M (the M teachers share the rationale
  half equally, so M=1 is exactly DSS / Mind's Mirror), ``self_eval`` the self-eval weight.

Stages: ``joint`` puts every row in stage 0; ``two_stage`` puts self-evaluation rows in
stage 0 and the CoT rows (answer + rationales) in stage 1, trained in that order.

Errors, never silent skips: a configured teacher with no rows, an empty target, or a
store row that cannot be mapped raise :class:`TaskDataError` subclasses naming the
teacher, example and fix. Store rows of teachers that are not configured are *counted*
(``TaskStats.ignored_teachers``), because dropping a teacher from the config is a legitimate
ablation.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import EmptyTargetError, MissingTeacherError, TaskDataError

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord

__all__ = [
    "ANSWER_TASK",
    "SELF_EVAL_TASK",
    "EmptyTargetError",
    "MissingTeacherError",
    "TaskDataError",
    "TaskPlan",
    "TaskStats",
    "answer_task_rows",
    "build_task_rows",
    "format_source",
    "group_key",
    "group_task_rows",
    "rationale_task",
    "self_eval_source",
    "self_eval_target",
    "store_rows_to_task_rows",
]

ANSWER_TASK = "answer"
SELF_EVAL_TASK = "self_eval"
RATIONALE_PREFIX = "rationale:"

#: Store columns the student reads (everything else in a shard is left on disk).
STORE_COLUMNS: tuple[str, ...] = (
    "kind", "teacher", "example_id", "sample_idx", "eval_idx", "question", "context", "choices",
    "answer", "rationale", "parsed_answer", "verdict", "critique",
)


def rationale_task(teacher: str) -> str:
    """Task name of one teacher's rationale task."""
    return f"{RATIONALE_PREFIX}{teacher}"


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TaskPlan:
    """Which tasks exist, their prefixes, weights and stages (derived from one JobConfig).

    Built on the driver and shipped to workers as a dict, so every process agrees on the
    task order (the index of a task in ``names`` is its id in the packed loss).
    """

    names: tuple[str, ...]
    prefixes: dict[str, str]
    weights: dict[str, float]
    stages: dict[str, int]
    teachers: tuple[str, ...]
    self_eval: bool
    label_source: str = "gold"

    @classmethod
    def from_config(cls, cfg: JobConfig) -> TaskPlan:
        teachers = tuple(t.name for t in cfg.teachers)
        loss = cfg.loss
        self_eval = bool(cfg.self_eval.enabled)
        if loss.schedule == "two_stage" and not self_eval:
            raise TaskDataError(
                "loss.schedule 'two_stage' trains self-evaluation first, but self_eval.enabled is false; "
                "set self_eval.enabled: true (and generate self-evaluations) or loss.schedule: joint"
            )
        names = [ANSWER_TASK, *(rationale_task(t) for t in teachers)]
        if self_eval:
            names.append(SELF_EVAL_TASK)
        prefixes = {ANSWER_TASK: cfg.student.answer_prefix, SELF_EVAL_TASK: cfg.student.self_eval_prefix}
        for t in teachers:
            prefixes[rationale_task(t)] = cfg.student.rationale_prefix.format(teacher=t)
        weights: dict[str, float] = {}
        if loss.form == "additive":
            weights[ANSWER_TASK] = 1.0
            for t in teachers:
                weights[rationale_task(t)] = float(cfg.alpha_for(t))
        else:
            a = float(loss.convex_alpha)
            weights[ANSWER_TASK] = a
            for t in teachers:
                weights[rationale_task(t)] = (1.0 - a) / len(teachers)
        weights[SELF_EVAL_TASK] = float(loss.self_eval_weight)
        cot_stage = 1 if loss.schedule == "two_stage" else 0
        stages = {n: (0 if n == SELF_EVAL_TASK else cot_stage) for n in names}
        return cls(
            names=tuple(names),
            prefixes={n: prefixes[n] for n in names},
            weights={n: weights[n] for n in names},
            stages=stages,
            teachers=teachers,
            self_eval=self_eval,
            label_source=cfg.filter.label_source,
        )

    @property
    def num_stages(self) -> int:
        return max(self.stages.values()) + 1

    def tasks_of_stage(self, stage: int) -> tuple[str, ...]:
        return tuple(n for n in self.names if self.stages[n] == stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names), "prefixes": dict(self.prefixes), "weights": dict(self.weights),
            "stages": dict(self.stages), "teachers": list(self.teachers), "self_eval": self.self_eval,
            "label_source": self.label_source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskPlan:
        return cls(
            names=tuple(d["names"]), prefixes=dict(d["prefixes"]), weights=dict(d["weights"]),
            stages={k: int(v) for k, v in d["stages"].items()}, teachers=tuple(d["teachers"]),
            self_eval=bool(d["self_eval"]), label_source=d.get("label_source", "gold"),
        )


@dataclass
class TaskStats:
    """What became of the inputs: rows per task, store rows ignored and why (all counted)."""

    rows_per_task: Counter = field(default_factory=Counter)
    ignored_teachers: Counter = field(default_factory=Counter)
    ignored_kinds: Counter = field(default_factory=Counter)

    def merge(self, other: TaskStats) -> TaskStats:
        self.rows_per_task.update(other.rows_per_task)
        self.ignored_teachers.update(other.ignored_teachers)
        self.ignored_kinds.update(other.ignored_kinds)
        return self

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "rows_per_task": dict(self.rows_per_task),
            "ignored_teachers": dict(self.ignored_teachers),
            "ignored_kinds": dict(self.ignored_kinds),
        }


# --------------------------------------------------------------------------- text formats


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_source(question: str, choices: Sequence[str] | None, context: str | None = None) -> str:
    """The student's view of a question (without task prefix), also used at evaluation.

    Layout: ``Q: ...`` then lettered options ``(a) ...`` (so letter answers are meaningful),
    then ``Context: ...`` LAST. Why last: inputs are truncated from the right when longer
    than ``student.max_input_length``; a long PubMedQA abstract should lose its tail, not
    the question or the options.
    """
    from tinyllm_ray.prompts import format_choices  # pure module; same option layout as teachers

    parts = [f"Q: {_one_line(question)}"]
    if choices is not None and len(choices) > 0:
        parts.append(format_choices(list(choices)))
    if context:
        parts.append(f"Context: {_one_line(context)}")
    return "\n".join(parts)


def self_eval_source(question: str, choices: Sequence[str] | None, context: str | None, rationale: str) -> str:
    """Mind's Mirror self-evaluation input: the question and the CoT to be judged.

    The reasoning goes before the context so that truncation cuts the context first.
    """
    from tinyllm_ray.prompts import format_choices

    parts = [f"Q: {_one_line(question)}"]
    if choices is not None and len(choices) > 0:
        parts.append(format_choices(list(choices)))
    parts.append(f"Proposed reasoning: {_one_line(rationale)}")
    if context:
        parts.append(f"Context: {_one_line(context)}")
    return "\n".join(parts)


def self_eval_target(critique: str | None, verdict: str | None) -> str:
    """Critique followed by its verdict line (added when the critique does not end with it).

    One self-evaluation target teaches both halves of Mind's Mirror's self-evaluation
    (the critique and the verdict) while keeping one ``self_eval`` task.
    """
    crit = (critique or "").strip()
    verd = (verdict or "").strip()
    if not verd:
        return crit
    last = crit.splitlines()[-1].lower() if crit else ""
    if verd.lower() in last and "verdict" in last:
        return crit
    line = f"Verdict: {verd}"
    return f"{crit}\n{line}" if crit else line


def group_key(stage: int, source: str) -> str:
    """Rows sharing (stage, source) are decoded from one encoder pass."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]
    return f"{stage}:{digest}"


def _row(plan: TaskPlan, task: str, source: str, target: str, origin: str, example_id: str) -> dict[str, Any]:
    prefix = plan.prefixes[task]
    stage = plan.stages[task]
    return {
        "input": prefix + source,
        "target": target,
        "task": task,
        "weight": float(plan.weights[task]),
        "stage": int(stage),
        "source": source,
        "prefix": prefix,
        "group": group_key(stage, source),
        "origin": origin,
        "example_id": str(example_id),
    }


# --------------------------------------------------------------------------- builders


def answer_task_rows(records: Iterable[MCQRecord], plan: TaskPlan) -> list[dict[str, Any]]:
    """One gold answer row per dataset record (target = the answer text)."""
    out = []
    for r in records:
        if not r.answer.strip():
            raise EmptyTargetError(f"dataset example {r.id!r} has an empty answer; fix the dataset row")
        out.append(_row(plan, ANSWER_TASK, format_source(r.question, r.choices, r.context), r.answer,
                        "gold", r.id))
    return out


def _get(row: Mapping[str, Any], key: str) -> Any:
    v = row.get(key)
    # pyarrow/pandas hand missing strings as None or NaN
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def store_rows_to_task_rows(
    rows: Iterable[Mapping[str, Any]], plan: TaskPlan, stats: TaskStats | None = None
) -> list[dict[str, Any]]:
    """Map store rows (docs/internals.md columns) to task rows.

    ``rationale`` rows -> one ``rationale:<teacher>`` row (target = the CoT), plus, with
    ``filter.label_source: teacher``, one answer row labelled with the answer parsed from
    that CoT (gold when unparsed). ``self_eval`` rows -> one ``self_eval`` row (input =
    question + CoT, target = critique + verdict) when self-evaluation is enabled.
    Rows of unconfigured teachers (or self-evaluations when disabled) are counted in
    ``stats``; an empty target raises :class:`EmptyTargetError`.
    """
    stats = stats if stats is not None else TaskStats()
    teachers = set(plan.teachers)
    out: list[dict[str, Any]] = []
    for row in rows:
        teacher = str(_get(row, "teacher") or "")
        kind = str(_get(row, "kind") or "")
        ex = str(_get(row, "example_id") or "")
        if teacher not in teachers:
            stats.ignored_teachers[teacher] += 1
            continue
        question = _get(row, "question") or ""
        choices = _get(row, "choices")
        choices = [] if choices is None else [str(c) for c in choices]
        context = _get(row, "context")
        rationale = (_get(row, "rationale") or "").strip()
        where = f"teacher {teacher!r}, example {ex!r}, sample {_get(row, 'sample_idx')}"
        if kind == "rationale":
            if not rationale:
                raise EmptyTargetError(
                    f"rationale store: empty rationale for {where}; regenerate with filter.drop_empty: true "
                    f"(empty outputs are then dropped and counted in stats/{teacher}.json)"
                )
            source = format_source(question, choices, context)
            task = rationale_task(teacher)
            out.append(_row(plan, task, source, rationale, "teacher", ex))
            stats.rows_per_task[task] += 1
            if plan.label_source == "teacher":
                label = (_get(row, "parsed_answer") or "").strip() or (_get(row, "answer") or "").strip()
                if not label:
                    raise EmptyTargetError(f"rationale store: no parsed or gold answer for {where}")
                out.append(_row(plan, ANSWER_TASK, source, label, "teacher", ex))
                stats.rows_per_task[ANSWER_TASK] += 1
        elif kind == "self_eval":
            if not plan.self_eval:
                stats.ignored_kinds["self_eval"] += 1
                continue
            target = self_eval_target(_get(row, "critique"), _get(row, "verdict"))
            if not target.strip():
                raise EmptyTargetError(
                    f"rationale store: empty critique and verdict for self-evaluation "
                    f"{_get(row, 'eval_idx')} of {where}; regenerate, or drop such rows in the teacher filter"
                )
            if not rationale:
                raise EmptyTargetError(f"rationale store: self-evaluation of {where} has an empty CoT to judge")
            source = self_eval_source(question, choices, context, rationale)
            out.append(_row(plan, SELF_EVAL_TASK, source, target, "teacher", ex))
            stats.rows_per_task[SELF_EVAL_TASK] += 1
        else:
            raise TaskDataError(f"rationale store: unknown kind {kind!r} for {where} (expected rationale|self_eval)")
    return out


def group_task_rows(rows: Iterable[Mapping[str, Any]], label_source: str = "gold") -> list[dict[str, Any]]:
    """Pack task rows sharing a (stage, source) into one group row.

    A group row is the unit of a micro-batch: ``{"group", "stage", "source", "tasks",
    "prefixes", "targets", "weights", "example_id"}`` (lists aligned per target). With
    ``label_source == "teacher"`` a gold answer row is replaced by the teacher-labelled
    answer rows of the same question when there are any (Mind's Mirror: the label is the
    answer parsed from each CoT, or gold). Order inside a group is made deterministic.
    """
    by_group: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_group[str(r["group"])].append(r)
    out = []
    for g, members in by_group.items():
        if label_source == "teacher" and any(
            m["task"] == ANSWER_TASK and m.get("origin") == "teacher" for m in members
        ):
            members = [m for m in members if not (m["task"] == ANSWER_TASK and m.get("origin") == "gold")]
        members = sorted(members, key=lambda m: (str(m["task"]), str(m["target"])))
        sources = {m["source"] for m in members}
        if len(sources) != 1:  # pragma: no cover - sha1 collision
            raise TaskDataError(f"group {g} mixes {len(sources)} sources")
        out.append({
            "group": g,
            "stage": int(members[0]["stage"]),
            "source": members[0]["source"],
            "example_id": str(members[0].get("example_id", "")),
            "tasks": [str(m["task"]) for m in members],
            "prefixes": [str(m["prefix"]) for m in members],
            "targets": [str(m["target"]) for m in members],
            "weights": [float(m["weight"]) for m in members],
        })
    out.sort(key=lambda d: d["group"])
    return out


def check_teacher_coverage(
    plan: TaskPlan, rows_per_teacher_kind: Mapping[tuple[str, str], int], store: str = "rationale store"
) -> None:
    """Raise :class:`MissingTeacherError` when a configured teacher has no (needed) rows.

    ``rows_per_teacher_kind[(teacher, kind)]`` counts the store rows (or shard files).
    Every configured teacher needs ``rationale`` rows; with self-evaluation enabled, every
    teacher also needs ``self_eval`` rows.
    """
    missing = []
    for t in plan.teachers:
        if rows_per_teacher_kind.get((t, "rationale"), 0) == 0:
            missing.append(f"{t} (kind=rationale)")
        if plan.self_eval and rows_per_teacher_kind.get((t, "self_eval"), 0) == 0:
            missing.append(f"{t} (kind=self_eval)")
    if missing:
        have = sorted({f"{t} (kind={k})" for (t, k), n in rows_per_teacher_kind.items() if n})
        raise MissingTeacherError(
            f"{store}: no rows for configured teacher(s) {missing}; present: {have or 'nothing'}. "
            "Run `tinyllm-ray generate` for them, or remove them from `teachers` (and loss.alpha)"
            + ("; or set self_eval.enabled: false" if any("self_eval" in m for m in missing) else "")
        )


def build_task_rows(
    cfg: JobConfig, train_records: Sequence[MCQRecord], store_rows: Iterable[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], TaskStats]:
    """In-memory path (tests, small runs): dataset + store rows -> validated task rows.

    The Ray path (``student/data.py``) applies the same functions per shard.
    """
    plan = TaskPlan.from_config(cfg)
    store_rows = list(store_rows)
    counts: Counter = Counter((str(r.get("teacher")), str(r.get("kind"))) for r in store_rows)
    check_teacher_coverage(plan, counts)
    stats = TaskStats()
    rows = answer_task_rows(train_records, plan)
    stats.rows_per_task[ANSWER_TASK] += len(rows)
    rows += store_rows_to_task_rows(store_rows, plan, stats)
    return rows, stats

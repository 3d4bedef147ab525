"""Which tasks a run trains, with their prefixes, weights and stages (from one JobConfig).

Why here: this is where the two methods differ (TinyLLM's additive
``L_A + sum_m alpha_m L_m``; the convex ``a L_label + (1-a) L_rationale`` of Distilling
Step-by-Step / Mind's Mirror; Mind's Mirror's two-stage schedule). Weights (one per task,
so the packed loss equals the separate-pass reference):

- additive: answer 1, ``rationale:<m>`` alpha_m (``loss.alpha`` / ``default_alpha``),
  ``self_eval_verdict`` and ``self_eval_critique`` each ``w = loss.self_eval_weight``;
- convex: answer a, each ``rationale:<m>`` (1-a)/M (the M teachers share the rationale
  half equally, so M=1 is exactly DSS / Mind's Mirror), and the self-evaluation split the
  same way, scaled by w: ``self_eval_verdict`` a*w, ``self_eval_critique`` (1-a)*w.

Why self-evaluation is two tasks: Mind's Mirror's official code distils a self-evaluation
as its verdict (under the label/``predict`` head) and its critique (under the
rationale/``explain`` head), trained with the same ``a L_label + (1-a) L_rationale`` loss as
the CoT stage. With the convex form, a = 0.5 and w = 1 this is exactly the authors' loss.

Per-teacher self-evaluation: only teachers that self-evaluate (``TeacherConfig.self_eval``,
else ``self_eval.enabled``) contribute self-evaluation rows (``self_eval_teachers``); a
stored self-evaluation of another teacher is counted as left out, like a disabled kind.
``max_cots`` (``student.max_cots_per_teacher``) keeps the first k CoTs of each teacher
(``sample_idx < k``) and their self-evaluations; the rest are counted, never silent.
``cross_teacher`` / ``min_agreeing`` (``filter.cross_teacher``) drop or down-weight CoTs few
teachers agree with (``store/agreement.py``; applied by ``build.py``).

Stages: ``joint`` puts every task in stage 0; ``two_stage`` puts self-evaluation in stage 0
and the CoT tasks (answer + rationales) in stage 1, trained in that order. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import TaskDataError

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig

__all__ = [
    "ANSWER_TASK",
    "RATIONALE_PREFIX",
    "SELF_EVAL_CRITIQUE_TASK",
    "SELF_EVAL_TASKS",
    "SELF_EVAL_VERDICT_TASK",
    "TaskPlan",
    "rationale_task",
]

ANSWER_TASK = "answer"
SELF_EVAL_VERDICT_TASK = "self_eval_verdict"
SELF_EVAL_CRITIQUE_TASK = "self_eval_critique"
#: The self-evaluation tasks, in task order (verdict = the label, critique = the rationale).
SELF_EVAL_TASKS: tuple[str, ...] = (SELF_EVAL_VERDICT_TASK, SELF_EVAL_CRITIQUE_TASK)
RATIONALE_PREFIX = "rationale:"


def rationale_task(teacher: str) -> str:
    """Task name of one teacher's rationale task."""
    return f"{RATIONALE_PREFIX}{teacher}"


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
    self_eval_teachers: tuple[str, ...] | None = None  # None: every teacher when self_eval
    max_cots: int | None = None
    cross_teacher: str = "off"  # filter.cross_teacher.mode: off | filter | weight
    min_agreeing: int = 2

    @classmethod
    def from_config(cls, cfg: JobConfig) -> TaskPlan:
        teachers = tuple(t.name for t in cfg.teachers)
        loss = cfg.loss
        se_teachers = tuple(t for t in teachers if cfg.self_evaluates(t))
        self_eval = bool(se_teachers)
        if loss.schedule == "two_stage" and not self_eval:
            raise TaskDataError(
                "loss.schedule 'two_stage' trains self-evaluation first, but no teacher self-evaluates; "
                "set self_eval.enabled: true (and generate self-evaluations) or loss.schedule: joint"
            )
        names = [ANSWER_TASK, *(rationale_task(t) for t in teachers)]
        if self_eval:
            names.extend(SELF_EVAL_TASKS)
        prefixes = {ANSWER_TASK: cfg.student.answer_prefix,
                    SELF_EVAL_VERDICT_TASK: cfg.student.self_eval_verdict_prefix,
                    SELF_EVAL_CRITIQUE_TASK: cfg.student.self_eval_critique_prefix}
        for t in teachers:
            prefixes[rationale_task(t)] = cfg.student.rationale_prefix.format(teacher=t)
        weights: dict[str, float] = {}
        w = float(loss.self_eval_weight)
        if loss.form == "additive":
            weights[ANSWER_TASK] = 1.0
            for t in teachers:
                weights[rationale_task(t)] = float(cfg.alpha_for(t))
            weights[SELF_EVAL_VERDICT_TASK] = weights[SELF_EVAL_CRITIQUE_TASK] = w
        else:
            a = float(loss.convex_alpha)
            weights[ANSWER_TASK] = a
            for t in teachers:
                weights[rationale_task(t)] = (1.0 - a) / len(teachers)
            weights[SELF_EVAL_VERDICT_TASK] = a * w
            weights[SELF_EVAL_CRITIQUE_TASK] = (1.0 - a) * w
        cot_stage = 1 if loss.schedule == "two_stage" else 0
        stages = {n: (0 if n in SELF_EVAL_TASKS else cot_stage) for n in names}
        return cls(
            names=tuple(names),
            prefixes={n: prefixes[n] for n in names},
            weights={n: weights[n] for n in names},
            stages=stages,
            teachers=teachers,
            self_eval=self_eval,
            label_source=cfg.filter.label_source,
            self_eval_teachers=se_teachers,
            max_cots=cfg.student.max_cots_per_teacher,
            cross_teacher=cfg.filter.cross_teacher.mode,
            min_agreeing=cfg.filter.cross_teacher.min_agreeing,
        )

    @property
    def num_stages(self) -> int:
        return max(self.stages.values()) + 1

    @property
    def store_kinds(self) -> tuple[str, ...]:
        """Store record kinds this plan reads (self-evaluations only when enabled)."""
        return ("rationale", "self_eval") if self.self_eval else ("rationale",)

    def kinds_of(self, teacher: str) -> tuple[str, ...]:
        """Store record kinds this plan reads from ``teacher`` (self-evaluations only if it self-evaluates)."""
        return self.store_kinds if self.self_evaluates(teacher) else ("rationale",)

    def self_evaluates(self, teacher: str) -> bool:
        if not self.self_eval:
            return False
        return self.self_eval_teachers is None or teacher in self.self_eval_teachers

    def tasks_of_stage(self, stage: int) -> tuple[str, ...]:
        return tuple(n for n in self.names if self.stages[n] == stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names), "prefixes": dict(self.prefixes), "weights": dict(self.weights),
            "stages": dict(self.stages), "teachers": list(self.teachers), "self_eval": self.self_eval,
            "label_source": self.label_source,
            "self_eval_teachers": None if self.self_eval_teachers is None else list(self.self_eval_teachers),
            "max_cots": self.max_cots, "cross_teacher": self.cross_teacher, "min_agreeing": self.min_agreeing,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskPlan:
        return cls(
            names=tuple(d["names"]), prefixes=dict(d["prefixes"]), weights=dict(d["weights"]),
            stages={k: int(v) for k, v in d["stages"].items()}, teachers=tuple(d["teachers"]),
            self_eval=bool(d["self_eval"]), label_source=d.get("label_source", "gold"),
            self_eval_teachers=None if d.get("self_eval_teachers") is None else tuple(d["self_eval_teachers"]),
            max_cots=d.get("max_cots"), cross_teacher=d.get("cross_teacher", "off"),
            min_agreeing=int(d.get("min_agreeing", 2)),
        )

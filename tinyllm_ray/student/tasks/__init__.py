"""Student tasks: which tasks a run trains, and the one builder of its task rows (pure).

The student never sees the store's layout: :func:`build_task_groups` turns dataset records
plus their rationale-store rows into task rows (:data:`TASK_ROW_SCHEMA`) packed into
groups (:data:`GROUP_SCHEMA`), with :class:`TaskStats` counting what was used and what was
left out. Modules: ``plan`` (tasks, prefixes, weights, stages from a JobConfig),
``formats`` (the student's view of a question, shared with evaluation), ``build`` (rows,
groups, checks). No Ray, no torch; pyarrow only for the schemas.
"""

from tinyllm_ray.errors import EmptyTargetError, MissingTeacherError, TaskDataError
from tinyllm_ray.student.tasks.build import (
    GROUP_SCHEMA,
    STORE_COLUMNS,
    TASK_ROW_SCHEMA,
    TaskGroups,
    TaskStats,
    build_task_groups,
    check_teacher_coverage,
    cross_teacher_stats,
)
from tinyllm_ray.student.tasks.formats import format_source, group_key, self_eval_source
from tinyllm_ray.student.tasks.plan import (
    ANSWER_TASK,
    SELF_EVAL_CRITIQUE_TASK,
    SELF_EVAL_TASKS,
    SELF_EVAL_VERDICT_TASK,
    TaskPlan,
    rationale_task,
)

__all__ = [
    "ANSWER_TASK",
    "GROUP_SCHEMA",
    "SELF_EVAL_CRITIQUE_TASK",
    "SELF_EVAL_TASKS",
    "SELF_EVAL_VERDICT_TASK",
    "STORE_COLUMNS",
    "TASK_ROW_SCHEMA",
    "EmptyTargetError",
    "MissingTeacherError",
    "TaskDataError",
    "TaskGroups",
    "TaskPlan",
    "TaskStats",
    "build_task_groups",
    "check_teacher_coverage",
    "cross_teacher_stats",
    "format_source",
    "group_key",
    "rationale_task",
    "self_eval_source",
]

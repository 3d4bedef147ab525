"""The student stage: rationale store -> packed multi-task training on Ray Train + DeepSpeed.

Front door (what the CLI and Tune call):

- :func:`run_training` (``trainer.py``): ``JobConfig`` -> :class:`TrainingResult` (best
  checkpoint chosen on validation, exported in Hugging Face format);
- :func:`evaluate_student` (``evaluate_model.py``): a saved student folder + split ->
  :class:`EvalResult` (answer-only generation, normalised exact match).

Modules, one job each: ``tasks`` (store rows -> task rows, weights, stages; pure),
``collate`` (tokenize, truncate with counts, pad), ``losses`` (packed loss and its
separate-pass reference; pure torch), ``packed`` (the one-forward step, encoder shared
across tasks), ``model`` (find/load the student, its saved layout), ``deepspeed_config``
(pure dict builder), ``data`` (Ray Data pipeline and pre-flight checks), ``loop`` (per
worker), ``trainer`` (driver).

Importing this package is cheap: names resolve lazily, so torch, transformers, Ray Train
and DeepSpeed load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_training": "tinyllm_ray.student.trainer",
    "build_trainer": "tinyllm_ray.student.trainer",
    "export_checkpoint": "tinyllm_ray.student.trainer",
    "TrainingResult": "tinyllm_ray.student.trainer",
    "evaluate_student": "tinyllm_ray.student.evaluate_model",
    "evaluate_records": "tinyllm_ray.student.evaluate_model",
    "EvalResult": "tinyllm_ray.student.evaluate_model",
    "prepare_student_data": "tinyllm_ray.student.data",
    "check_store_ready": "tinyllm_ray.student.store_checks",
    "build_task_groups": "tinyllm_ray.student.tasks",
    "TaskPlan": "tinyllm_ray.student.tasks",
    "TaskDataError": "tinyllm_ray.student.tasks",
    "MissingTeacherError": "tinyllm_ray.student.tasks",
    "EmptyTargetError": "tinyllm_ray.student.tasks",
    "TruncationError": "tinyllm_ray.student.collate",
    "PackedStudent": "tinyllm_ray.student.packed",
}

__all__ = [
    "EmptyTargetError",
    "EvalResult",
    "MissingTeacherError",
    "PackedStudent",
    "TaskDataError",
    "TaskPlan",
    "TrainingResult",
    "TruncationError",
    "build_task_groups",
    "build_trainer",
    "check_store_ready",
    "evaluate_records",
    "evaluate_student",
    "export_checkpoint",
    "prepare_student_data",
    "run_training",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tinyllm_ray.student' has no attribute {name!r}")

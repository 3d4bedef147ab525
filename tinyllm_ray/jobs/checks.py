"""Pre-flight checks: refuse a job the user can fix, in a second, before Ray starts.

Why a module of its own: every check here would otherwise surface minutes later (after
Ray, the teachers' engines or the trainer's workers started), or half-way through a
``run`` whose generation is already spending the cluster. Each raises a
:class:`tinyllm_ray.errors.UserError` subclass whose message says what to do; none
starts Ray or loads a model. They only *ask* the stages (``TaskPlan``, ``load_splits``),
never re-implement their rules; the store's readiness for ``train`` is the student's own
pre-flight (``tinyllm_ray.student.store_checks.check_store_ready``).
"""

from __future__ import annotations

import logging
import os

from tinyllm_ray.config import JobConfig
from tinyllm_ray.errors import UsageError
from tinyllm_ray.paths import RunPaths

__all__ = ["check_eval", "check_runnable"]

log = logging.getLogger(__name__)


def check_runnable(cfg: JobConfig) -> None:
    """``run`` streams rationales into training; refuse what streaming cannot train or report.

    Streaming builds one training stage while the store is still growing, so a
    two-stage schedule (every self-evaluation before the first CoT step) cannot run
    this way; the same config trains fine from a finished store. The splits the run
    needs (train, validation, and ``eval.split`` for the report) must exist now, not
    after an hour of generation and training; loading them also applies every data
    check (malformed rows, ``data.split_overlap``) before Ray starts.
    """
    from tinyllm_ray.data.discovery import reads_hub
    from tinyllm_ray.data.loader import can_stream, load_splits
    from tinyllm_ray.student.tasks import TaskPlan

    plan = TaskPlan.from_config(cfg)  # raises its own TaskDataError for inconsistent settings
    if plan.num_stages != 1:
        raise UsageError(
            f"`run` streams rationales into training, which needs loss.schedule: joint (this config trains "
            f"{plan.num_stages} stages: loss.schedule={cfg.loss.schedule}); run `tinyllm-ray generate` then "
            "`tinyllm-ray train` with the same config, or set loss.schedule=joint"
        )
    if reads_hub(cfg.data):  # no download before Ray; `run` requires train/validation once it has the data
        log.info("data.path %r is a hub dataset: its splits are checked when `run` downloads it", cfg.data.path)
        return
    if can_stream(cfg.data):  # a generated task has every split: nothing to load (memory flat in its size)
        return
    loaded = load_splits(cfg.data)
    for split in ("train", "validation"):
        if split not in loaded.splits:
            raise UsageError(f"`run` trains on train and selects on validation: {loaded.missing_split_message(split)}")
    if cfg.eval.split not in loaded.splits:
        raise UsageError(f"`run` reports eval.split={cfg.eval.split}: "
                         + loaded.missing_split_message(cfg.eval.split, "eval.split"))


def check_eval(cfg: JobConfig, paths: RunPaths, *, model: str | None, split: str | None,
               teacher: str | None) -> str:
    """What ``eval`` will score, checked: the teacher, the split, the student folder exist.

    Returns the split to evaluate. Loads the dataset's splits (cheap next to a model
    load, and needed to name the available ones).
    """
    from tinyllm_ray.data.loader import can_stream, load_splits

    names = [t.name for t in cfg.teachers]
    if teacher is not None and teacher not in names:
        raise UsageError(f"--teacher {teacher}: no such teacher in this config; teachers are "
                         f"{', '.join(names) or 'none'} (or add it under teachers:)")
    if teacher is not None and cfg.eval.mode != "generate":
        raise UsageError(f"eval.mode={cfg.eval.mode} ranks a student's choices by likelihood; teachers are scored "
                         "by generation: set eval.mode=generate with --teacher")
    setting = "--split" if split else "eval.split"
    split = split or cfg.eval.split
    loaded = None if can_stream(cfg.data) else load_splits(cfg.data)  # generated: every split exists
    if loaded is not None and split not in loaded.splits:
        raise UsageError(loaded.missing_split_message(split, setting))
    if teacher is None and model is not None:
        if _names_local_folder(model) and not os.path.isdir(os.path.expanduser(model)):
            raise UsageError(f"--model {model}: no such folder (a Hugging Face model folder, e.g. <run>/student)")
    elif teacher is None and not os.path.isdir(paths.student):
        raise UsageError(f"no trained student at {paths.student}; run `tinyllm-ray train` first or pass "
                         "--model PATH")
    return split


def _names_local_folder(model: str) -> bool:
    """Whether ``--model`` is written as a local path (``/``, ``.`` or ``~`` first).

    Anything else may be a hub name (``org/model``) that the student loader resolves.
    """
    return model.startswith(("/", ".", "~"))

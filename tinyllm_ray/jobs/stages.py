"""The stages as jobs: what each CLI subcommand runs, returning a JSON-able report.

Why a module between the CLI and the stages: ``run`` chains the stages and ``tune``
reuses ``generate``'s store; keeping the chaining here leaves ``cli.py`` a parser and
each stage package ignorant of the others. Every job first builds its
:class:`~tinyllm_ray.paths.RunPaths` (local paths made absolute once) and runs its
pre-flight checks (``checks.py``) before Ray starts.
"""

from __future__ import annotations

from typing import Any

from tinyllm_ray.config import JobConfig
from tinyllm_ray.jobs.checks import check_eval
from tinyllm_ray.jobs.run import run_pipeline
from tinyllm_ray.observability import progress
from tinyllm_ray.paths import RunPaths, join
from tinyllm_ray.runtime import init_ray

__all__ = ["compare", "evaluate", "generate", "run", "train", "tune"]


def generate(cfg: JobConfig) -> dict[str, Any]:
    """Teacher rationales into the store; rerunning resumes (finished shards are skipped)."""
    from tinyllm_ray.teachers.pipeline import run_generation

    paths = RunPaths.of(cfg)
    cfg = paths.pin(cfg)
    init_ray(cfg.runtime)
    progress("generation", cfg=cfg, shard_size=cfg.runtime.store_shard_size)
    report = run_generation(cfg, shard_size=cfg.runtime.store_shard_size,
                            on_shard=lambda shard: progress("shard", shard=shard)).to_dict()
    report["paths"] = {"store": paths.store}
    return report


def train(cfg: JobConfig) -> dict[str, Any]:
    """Train the student on the persisted store; the best-on-validation export is kept."""
    from tinyllm_ray.student.store_checks import check_store_ready
    from tinyllm_ray.student.trainer import METRICS_FILE, TRAIN_RUN_NAME, run_training

    paths = RunPaths.of(cfg)
    check_store_ready(cfg, store_uri=paths.store)  # before Ray: `train` before `generate` is one line
    cfg = paths.pin(cfg)
    init_ray(cfg.runtime)
    progress("training", label="student", pattern=join(paths.train, TRAIN_RUN_NAME, METRICS_FILE),
             total=cfg.train.max_steps)
    report = run_training(cfg).to_dict()
    report["paths"] = {"student": report["model_dir"] or paths.student, "store": paths.store}
    return report


def evaluate(
    cfg: JobConfig, model: str | None = None, split: str | None = None, teacher: str | None = None,
    show: int = 0,
) -> dict[str, Any]:
    """Answer-only accuracy of a student folder (default: this run's student) or a teacher.

    ``show``: keep the first ``show`` predictions (with the generated text and the gold
    answer) in the report's ``predictions``; ``tinyllm-ray eval --show N`` prints them.
    """
    paths = RunPaths.of(cfg)
    split = check_eval(cfg, paths, model=model, split=split, teacher=teacher)
    progress("stage", name="evaluation", detail=f"{f'teacher {teacher}' if teacher else 'student'} on {split}")
    if teacher is not None:
        from tinyllm_ray.teachers.evaluate_teacher import evaluate_teacher

        init_ray(cfg.runtime)
        result = evaluate_teacher(cfg, teacher, split=split, keep_predictions=show)
    else:
        from tinyllm_ray.student.evaluate_model import evaluate_student

        result = evaluate_student(cfg, model or paths.student, split=split, keep_predictions=show)
    return result.to_dict(with_predictions=show > 0)


def run(cfg: JobConfig) -> dict[str, Any]:
    """generate -> train -> evaluate as one streaming job; writes report.json and report.md."""
    return run_pipeline(cfg)


def tune(cfg: JobConfig) -> dict[str, Any]:
    """Ray Tune sweep of the loss weights over the (once generated) rationale store."""
    from tinyllm_ray.tune import run_tune

    return run_tune(cfg)


def compare(cfg: JobConfig, mode: str = "default", seeds: int | None = None) -> dict[str, Any]:
    """The papers' settings as Tune trials over one store; table under ``<run>/compare/``."""
    from tinyllm_ray.compare.run import run_compare

    return run_compare(cfg, mode=mode, seeds=seeds)

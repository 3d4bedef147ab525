"""The stages as jobs: what each CLI subcommand runs, returning a JSON-able report.

Why a module between the CLI and the stages: ``run`` chains the stages and ``tune``
reuses ``generate``'s store; keeping the chaining here leaves ``cli.py`` a parser and
each stage package ignorant of the others.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tinyllm_ray.config import JobConfig
from tinyllm_ray.errors import UsageError
from tinyllm_ray.runtime import init_ray

log = logging.getLogger(__name__)


def run_dir(cfg: JobConfig) -> str:
    """``<storage_path>/<run_name>``: every artifact of one job lives below it."""
    return f"{cfg.runtime.storage_path.rstrip('/')}/{cfg.runtime.run_name}"


def student_dir(cfg: JobConfig) -> str:
    """Where ``train`` exports the selected student (Hugging Face format)."""
    return f"{run_dir(cfg)}/student"


def generate(cfg: JobConfig) -> dict[str, Any]:
    """Teacher rationales into the store; rerunning resumes (finished shards are skipped)."""
    from tinyllm_ray.teachers.pipeline import run_generation

    init_ray(cfg.runtime)
    return run_generation(cfg, shard_size=cfg.runtime.store_shard_size).to_dict()


def train(cfg: JobConfig) -> dict[str, Any]:
    """Train the student on the persisted store; the best-on-validation export is kept."""
    from tinyllm_ray.student.trainer import run_training

    init_ray(cfg.runtime)
    return run_training(cfg).to_dict()


def evaluate(
    cfg: JobConfig, model: str | None = None, split: str | None = None, teacher: str | None = None
) -> dict[str, Any]:
    """Answer-only accuracy of a student folder (default: this run's student) or a teacher."""
    if teacher is not None:
        from tinyllm_ray.teachers.evaluate_teacher import evaluate_teacher

        init_ray(cfg.runtime)
        return evaluate_teacher(cfg, teacher, split=split).to_dict()
    from tinyllm_ray.student.evaluate_model import evaluate_student

    path = model or student_dir(cfg)
    if model is not None and model.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(model)):
        raise UsageError(f"--model {model}: no such folder (a Hugging Face model folder, e.g. <run>/student)")
    if model is None and not os.path.isdir(path):
        raise UsageError(f"no trained student at {path}; run `tinyllm-ray train` first or pass --model PATH")
    return evaluate_student(cfg, path, split=split).to_dict(with_predictions=False)


def run(cfg: JobConfig) -> dict[str, Any]:
    """generate -> train -> evaluate as one job; writes report.json and report.md."""
    from tinyllm_ray.jobs.run import run_pipeline

    return run_pipeline(cfg)


def tune(cfg: JobConfig) -> dict[str, Any]:
    """Ray Tune sweep of the loss weights over the (once generated) rationale store."""
    from tinyllm_ray.tune import run_tune

    return run_tune(cfg)


def write_report(report: dict[str, Any], out_dir: str | Path, markdown: str) -> dict[str, str]:
    """Write ``report.json`` + ``report.md`` next to the run's artifacts (local paths)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(markdown)
    return {"json": str(out / "report.json"), "markdown": str(out / "report.md")}


"""The jobs: what each CLI subcommand runs, chaining the stages' public functions.

Nothing below this package imports it (stages never know how they are chained).
"""

from tinyllm_ray.jobs.stages import evaluate, generate, run, student_dir, train, tune, write_report

__all__ = ["evaluate", "generate", "run", "student_dir", "train", "tune", "write_report"]

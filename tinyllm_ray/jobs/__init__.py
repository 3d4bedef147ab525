"""The jobs: what each CLI subcommand runs, chaining the stages' public functions.

Nothing below this package imports it (stages never know how they are chained).
Modules: ``stages`` (one function per subcommand), ``run`` (the streaming ``run``),
``checks`` (pre-flight checks, before Ray starts), ``report`` (run report files),
``data_view`` (``tinyllm-ray data``: the dataset as each stage sees it; no Ray, no model).
Where a job writes is :class:`tinyllm_ray.paths.RunPaths` (re-exported here).
"""

from tinyllm_ray.jobs.checks import check_eval, check_runnable
from tinyllm_ray.jobs.data_view import data_view, render_data_view
from tinyllm_ray.jobs.report import render_markdown, write_report
from tinyllm_ray.jobs.run import run_pipeline
from tinyllm_ray.jobs.stages import compare, evaluate, generate, run, train, tune
from tinyllm_ray.paths import RunPaths

__all__ = [
    "RunPaths",
    "check_eval",
    "check_runnable",
    "compare",
    "data_view",
    "evaluate",
    "generate",
    "render_data_view",
    "render_markdown",
    "run",
    "run_pipeline",
    "train",
    "tune",
    "write_report",
]

"""Teachers: vLLM engines in Ray actors (serving), the generation pipeline, records.

Front door (everything else is internals with its own module docstring)::

    from tinyllm_ray.teachers import run_generation, GenerationRun, plan_serving

    report = run_generation(cfg)            # tinyllm-ray generate
    for shard in GenerationRun(cfg): ...    # stream shards as they are persisted (run.cancel() stops)
    with plan_serving(cfg, cfg.teachers).pool("llama") as pool:   # serve prompts directly
        for rows in pool.run(prompt_rows, batch_size): ...

The rationale store itself is :mod:`tinyllm_ray.store` (re-exported here for convenience).

Importing this package imports neither Ray nor vLLM.
"""

from tinyllm_ray.store import RECORD_SCHEMA, RationaleStore, StoreMismatchError
from tinyllm_ray.store.stats import DROP_REASONS, TeacherStats
from tinyllm_ray.teachers.engine import EngineSpec, TeacherEngine, TeacherStartupError
from tinyllm_ray.teachers.pipeline import GenerationRun, committed_stats, run_generation
from tinyllm_ray.teachers.placement import (
    PlacementError,
    TeacherPlan,
    check_fits,
    plan_teacher,
)
from tinyllm_ray.teachers.report import GenerationError, GenerationReport, ShardWritten
from tinyllm_ray.teachers.serving import EnginePool, ServingPlan, plan_serving

__all__ = [
    "DROP_REASONS",
    "RECORD_SCHEMA",
    "EnginePool",
    "EngineSpec",
    "GenerationError",
    "GenerationReport",
    "GenerationRun",
    "PlacementError",
    "RationaleStore",
    "ServingPlan",
    "ShardWritten",
    "StoreMismatchError",
    "TeacherEngine",
    "TeacherPlan",
    "TeacherStartupError",
    "TeacherStats",
    "check_fits",
    "committed_stats",
    "plan_serving",
    "plan_teacher",
    "run_generation",
]

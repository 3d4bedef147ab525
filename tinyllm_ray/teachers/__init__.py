"""Teachers: vLLM engines in Ray actors, the generation pipeline and the rationale store.

Front door (everything else is internals with its own module docstring)::

    from tinyllm_ray.teachers import run_generation, GenerationRun, RationaleStore

    report = run_generation(cfg)            # tinyllm-ray generate
    for shard in GenerationRun(cfg): ...    # stream shards as they are persisted
    RationaleStore(cfg.runtime.resolved_store_uri).read_table("rationale")

Importing this package imports neither Ray nor vLLM.
"""

from tinyllm_ray.store import RECORD_SCHEMA, RationaleStore, StoreMismatchError
from tinyllm_ray.store.stats import DROP_REASONS, TeacherStats
from tinyllm_ray.teachers.engine import EngineSpec, TeacherEngine, TeacherStartupError
from tinyllm_ray.teachers.pipeline import DEFAULT_SHARD_SIZE, GenerationRun, committed_stats, run_generation
from tinyllm_ray.teachers.placement import (
    PlacementError,
    TeacherPlan,
    check_fits,
    plan_generation,
    plan_teacher,
)
from tinyllm_ray.teachers.report import GenerationError, GenerationReport, ShardWritten

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DROP_REASONS",
    "RECORD_SCHEMA",
    "EngineSpec",
    "GenerationError",
    "GenerationReport",
    "GenerationRun",
    "PlacementError",
    "RationaleStore",
    "ShardWritten",
    "StoreMismatchError",
    "TeacherEngine",
    "TeacherPlan",
    "TeacherStartupError",
    "TeacherStats",
    "check_fits",
    "committed_stats",
    "plan_generation",
    "plan_teacher",
    "run_generation",
]

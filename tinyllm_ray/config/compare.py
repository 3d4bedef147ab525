"""The ``compare`` section: which settings ``tinyllm-ray compare`` runs, seeds, budgets.

Why a section of its own (and not flags only): the comparison must work on ANY config, so
what it varies (settings, the teacher Mind's Mirror samples CoTs from, seeds, the step
budget per student kind) is part of the validated job config, overridable like every other
field (``compare.seeds=3``), with each default defined here once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tinyllm_ray.config.base import StrictModel


class CompareConfig(StrictModel):
    """``tinyllm-ray compare``: the papers' settings as Ray Tune trials over one store."""

    settings: list[str] | None = Field(
        None, description="setting names to run (see `tinyllm-ray compare --list`); None: the mode's list")
    seeds: int = Field(1, ge=1, le=64, description="seeds per setting (train.seed + i); --full uses at least 3")
    mirror_teacher: str | None = Field(
        None, description="teacher whose CoTs Mind's Mirror settings distil; None: the first teacher. A teacher "
        "with prompt_style cot and sampling.n > 1 is used as is; otherwise a '<name>_cot' entry is derived")
    mirror_cots: int = Field(3, ge=2, le=64, description="CoTs sampled per question for a derived Mind's Mirror entry")
    mirror_temperature: float = Field(0.7, gt=0.0, le=5.0)
    max_steps: dict[Literal["seq2seq", "causal"], int] = Field(
        default_factory=dict,
        description="optimizer steps per setting by student kind; unset: train.max_steps (the same for every "
        "setting; a two-stage setting splits it between its stages)")
    quick_max_steps: int = Field(6, ge=1, description="--quick: steps per setting")
    quick_examples: int | None = Field(
        16, ge=1, description="--quick: test (and validation) rows evaluated; None: all")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="None: as many trials as the cluster's CPUs hold (train.cpus_per_worker each)")
    teacher_rows: bool = Field(True, description="measure the teachers' own test accuracy (vLLM, answer-only)")
    min_teachers_leave_one_out: int = Field(3, ge=2, description="leave-one-out needs this many teachers")

    @field_validator("max_steps")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if n < 1:
                raise ValueError(f"compare.max_steps.{k} must be >= 1, got {n}")
        return v

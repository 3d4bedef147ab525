"""The job: ``tune``, ``eval`` and ``runtime`` sections, and :class:`JobConfig` over all of them.

Cross-section rules (teacher names vs loss weights, self-evaluation needs a teacher) live
on :class:`JobConfig`, the one object every stage receives.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tinyllm_ray.config.base import NAME_RE, Split, StrictModel
from tinyllm_ray.config.compare import CompareConfig
from tinyllm_ray.config.dataset import DataConfig
from tinyllm_ray.config.student import LossConfig, StudentConfig, TrainConfig
from tinyllm_ray.config.teachers import FilterConfig, PromptConfig, SelfEvalConfig, TeacherConfig


class TuneConfig(StrictModel):
    """Ray Tune sweep over loss weights; trials reuse the persisted rationales."""

    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: every combination; random: num_samples draws; optuna: TPE (Bayesian)"
    )
    alpha_values: list[float] = Field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0, 2.0, 3.0])
    tune_self_eval_weight: bool = False
    self_eval_values: list[float] = Field(default_factory=lambda: [0.1, 0.5, 1.0])
    tune_lr: bool = False
    lr_range: tuple[float, float] = (1e-5, 1e-3)
    num_samples: int = Field(1, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    asha: bool = True
    grace_period: int = Field(10, ge=1, description="ASHA: optimizer steps before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2)
    trial_cpus: float = Field(0.5, ge=0.0, description="CPUs held by each trial's driver (its trainer's workers hold their own)")
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _lr_range(self) -> TuneConfig:
        lo, hi = self.lr_range
        if not 0 < lo < hi:
            raise ValueError(f"tune.lr_range must be 0 < low < high, got {self.lr_range}")
        return self

    @field_validator("alpha_values", "self_eval_values")
    @classmethod
    def _nonempty_nonneg(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("needs at least one value")
        if any(x < 0 for x in v):
            raise ValueError(f"weights must be >= 0, got {v}")
        return v


class EvalConfig(StrictModel):
    """Answer-only evaluation; model selection uses validation, never test."""

    split: Split = "validation"
    max_new_tokens: int = Field(16, ge=1)
    batch_size: int = Field(32, ge=1)
    limit: int | None = Field(None, ge=1)
    mode: Literal["generate", "rank", "both"] = Field(
        "generate", description="students: generate = free answer generation; rank = the most likely choice "
        "(multiple-choice only); both = generation, with the ranked accuracy reported apart under 'rank'",
    )
    teacher_prompt: Literal["answer", "cot"] = Field(
        "answer",
        description="eval --teacher: 'answer' = few-shot answer-only prompt (eval.max_new_tokens); 'cot' = the "
        "plain CoT generation prompt, read up to the teacher's sampling.max_tokens",
    )


#: What a secret's value becomes in every config this project writes or prints.
REDACTED = "<redacted>"
#: Environment variable names whose values are secrets (API keys, tokens, passwords).
SECRET_NAME_RE = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's value must never be written or printed."""
    return bool(SECRET_NAME_RE.search(name))


class RuntimeConfig(StrictModel):
    """Where Ray runs and where everything is written."""

    ray_address: str | None = Field(None, description="None: local Ray; 'auto' or ray://... for a cluster")
    cpu_preload: list[Literal["tcmalloc", "iomp"]] = Field(
        default_factory=lambda: ["tcmalloc", "iomp"],
        description="libraries preloaded into CPU vLLM actors when present (benchmarks/vllm_preload.py); [] = none",
    )
    allow_second_ray: bool = Field(
        False, description="start a local Ray even when another one runs on this machine (Ray Train may hang)"
    )
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs for a local Ray (may over-commit)")
    num_gpus: int | None = Field(None, ge=0)
    storage_path: str = Field("./runs", description="local path or URI (s3://, gs://) for all outputs")
    run_name: str = "tinyllm"
    store_uri: str | None = Field(None, description="rationale store; default <storage_path>/<run_name>/rationales")
    store_shard_size: int | None = Field(
        None,
        ge=1,
        description="examples per store shard (unit of resume and of streaming); "
        "default: the store's DEFAULT_SHARD_SIZE (defined there only)",
    )
    record_cache: bool = Field(
        True,
        description="reuse every teacher output whose record key (prompt, model + revision, template, sampling) "
        "is in the record cache, and let a changed generation config regenerate only what it touches "
        "(superseded shards are moved aside); false: generate everything, refuse a changed config",
    )
    record_cache_uri: str | None = Field(
        None, description="record cache location; default <storage_path>/record_cache (shared by every run there)"
    )
    dashboard_host: str = "127.0.0.1"
    metrics_export_port: int | None = Field(None, ge=1024, le=65535)
    env_vars: dict[str, str] = Field(default_factory=dict)

    @field_validator("env_vars")
    @classmethod
    def _restore_redacted(cls, v: dict[str, str]) -> dict[str, str]:
        """A secret written as :data:`REDACTED` (``dump_config``) is read back from the environment."""
        out = dict(v)
        for name, value in v.items():
            if value == REDACTED:
                if name not in os.environ:
                    raise ValueError(
                        f"runtime.env_vars.{name} was redacted when this config was written; export {name}=... "
                        f"(or put its value in the config) and run again"
                    )
                out[name] = os.environ[name]
        return out

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"run_name {v!r} must start with a letter and use letters, digits, '_', '.', '-'")
        return v

    @property
    def resolved_store_uri(self) -> str:
        """The rationale store location, derived so train/tune find what generate wrote."""
        if self.store_uri:
            return self.store_uri
        return f"{self.storage_path.rstrip('/')}/{self.run_name}/rationales"

    @property
    def resolved_record_cache_uri(self) -> str | None:
        """Where the record cache lives, or None when ``record_cache`` is off (defined here only)."""
        if not self.record_cache:
            return None
        return self.record_cache_uri or f"{self.storage_path.rstrip('/')}/record_cache"


class JobConfig(StrictModel):
    """The whole job. Cross-section rules (teacher names vs loss weights) live here."""

    data: DataConfig = Field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    self_eval: SelfEvalConfig = Field(default_factory=SelfEvalConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> JobConfig:
        names = [t.name for t in self.teachers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"teachers: names must be unique, repeated: {dupes}")
        unknown = sorted(set(self.loss.alpha) - set(names))
        if unknown:
            raise ValueError(f"loss.alpha names unknown teachers {unknown}; teachers are {names}")
        if self.self_eval.enabled and not self.teachers:
            raise ValueError("self_eval.enabled needs at least one teacher")
        if self.compare.mirror_teacher is not None and self.compare.mirror_teacher not in names:
            raise ValueError(f"compare.mirror_teacher {self.compare.mirror_teacher!r} is not a teacher; "
                             f"teachers are {names}")
        stages = 2 if self.loss.schedule == "two_stage" else 1
        if self.train.stage_epochs is not None and len(self.train.stage_epochs) != stages:
            raise ValueError(f"train.stage_epochs has {len(self.train.stage_epochs)} entries but loss.schedule "
                             f"{self.loss.schedule!r} trains {stages} stage(s)"
                             + (" ([self-evaluation, CoT])" if stages == 2 else ""))
        ct = self.filter.cross_teacher
        if ct.mode != "off" and len(names) < 2:
            raise ValueError(f"filter.cross_teacher.mode {ct.mode!r} compares the answers of two or more teachers; "
                             f"this config has {len(names)}: add a teacher or set filter.cross_teacher.mode: off")
        if ct.mode == "filter" and ct.min_agreeing > len(names):
            raise ValueError(f"filter.cross_teacher.min_agreeing {ct.min_agreeing} is more than the {len(names)} "
                             "teachers: every CoT would be dropped; lower it")
        boot = [t.name for t in self.teachers if t.bootstrap is not None]
        if boot and self.data.name != "arithmetic":
            raise ValueError(f"teachers {boot} set bootstrap, which trains on the built-in arithmetic task; "
                             f"set data.name: arithmetic or remove their bootstrap section")
        return self

    def self_evaluates(self, teacher: str) -> bool:
        """Whether ``teacher`` self-evaluates its CoTs: its own ``self_eval`` switch, else
        ``self_eval.enabled`` (so one teacher of a store can self-evaluate, e.g. Mind's Mirror's)."""
        own = self.teacher(teacher).self_eval
        return self.self_eval.enabled if own is None else bool(own)

    def self_eval_for(self, teacher: str) -> SelfEvalConfig:
        """The ``self_eval`` section as it applies to ``teacher`` (``enabled`` per teacher)."""
        flag = self.self_evaluates(teacher)
        return self.self_eval if flag == self.self_eval.enabled else self.self_eval.model_copy(update={"enabled": flag})

    def alpha_for(self, teacher: str) -> float:
        """The additive weight of one teacher's rationale task (default when unset)."""
        return self.loss.alpha.get(teacher, self.loss.default_alpha)

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"no teacher named {name!r}; teachers are {[t.name for t in self.teachers]}")

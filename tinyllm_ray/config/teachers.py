"""The teacher-side sections: ``teachers``, ``prompts``, ``self_eval`` and ``filter``.

Defaults that describe the prompt layout (CoT trigger, stop sequences, verdict words) are
imported from :mod:`tinyllm_ray.prompts`, which owns that layout, never copied here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tinyllm_ray.config.base import NAME_RE, StrictModel
from tinyllm_ray.prompts import DEFAULT_COT_TRIGGER, DEFAULT_STOPS, DEFAULT_VERDICTS


class SamplingConfig(StrictModel):
    """vLLM SamplingParams for one teacher; ``n`` > 1 samples several distinct CoTs."""

    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(128, ge=1, le=32768)
    stop: list[str] = Field(default_factory=lambda: list(DEFAULT_STOPS))
    n: int = Field(1, ge=1, le=64)
    seed: int | None = 0

    @model_validator(mode="after")
    def _greedy_single(self) -> SamplingConfig:
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError(
                f"n={self.n} distinct CoTs need sampling: set temperature > 0 (e.g. 0.7)"
            )
        return self


BootstrapForm = Literal["cot", "teacher_forcing", "self_eval"]


class BootstrapConfig(StrictModel):
    """Train this teacher first (``teachers.<i>.bootstrap``): a tiny model taught the arithmetic task.

    Why: issue 9 needs competent teachers that run on a CPU without a download. The
    teacher's ``model`` (``tiny:llama?...`` / ``tiny:qwen2?...``) gives the architecture and
    initial weights; these fields say how it is trained (Ray Train, on gold step-by-step
    solutions of a problem pool disjoint from the job's splits, on exactly the prompts it
    will be served with: ``teachers/bootstrap.py``). The result is cached by a hash of
    everything that changes the weights.
    """

    forms: list[BootstrapForm] = Field(
        default_factory=lambda: ["cot", "teacher_forcing", "self_eval"],
        description="prompt forms trained: plain CoT, teacher forcing (gold answer shown), self-evaluation",
    )
    num_problems: int = Field(4000, ge=8, description="problems in the teacher's own training pool")
    max_steps: int = Field(600, ge=1, description="optimizer steps")
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    micro_batch_size: int = Field(16, ge=1)
    warmup_steps: int = Field(20, ge=0)
    max_input_length: int = Field(768, ge=64, description="prompt tokens kept (longer prompts are cut)")
    seed: int = Field(0, ge=0, description="seeds the teacher's problem pool and its training")

    @field_validator("forms")
    @classmethod
    def _forms(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"bootstrap.forms needs one or more distinct forms of cot, teacher_forcing, self_eval; got {v}")
        return v


class TeacherConfig(StrictModel):
    """One teacher LLM, served by vLLM engines inside ``replicas`` Ray actors."""

    name: str
    model: str = Field(description="local HF folder (offline) or hub name (cluster)")
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(2048, ge=64)
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_space_gib: float = Field(1.0, gt=0.0, description="vLLM CPU KV cache (VLLM_CPU_KVCACHE_SPACE)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    trust_remote_code: bool = False
    replicas: int = Field(1, ge=1, le=1024)
    num_cpus: float = Field(1.0, gt=0.0, description="CPUs per replica (= vLLM CPU threads)")
    batch_size: int = Field(16, ge=1, description="prompts per Ray Data batch sent to one actor")
    resources: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per replica, e.g. {teacher_node: 1} to pin nodes"
    )
    prompt_style: Literal["teacher_forcing", "cot"] = "teacher_forcing"
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    self_eval: bool | None = Field(
        None, description="this teacher self-evaluates its CoTs; None: follow self_eval.enabled (a store can "
        "then hold one self-evaluating teacher, e.g. Mind's Mirror's, beside teacher-forcing ones)")
    bootstrap: BootstrapConfig | None = Field(
        None, description="train this tiny teacher on the arithmetic task before serving it (cached)"
    )

    @model_validator(mode="after")
    def _bootstrap_model(self) -> TeacherConfig:
        if self.bootstrap is not None and not self.model.startswith(("tiny:llama", "tiny:qwen2")):
            raise ValueError(
                f"teacher {self.name!r}: bootstrap trains a tiny causal model; set model to tiny:llama or tiny:qwen2 "
                f"(e.g. tiny:llama?hidden_size=128&num_layers=2), not {self.model!r}"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"teacher name {v!r} must start with a letter and use only letters, digits, '_', '.', '-'"
            )
        return v


class PromptConfig(StrictModel):
    """How teacher prompts are built (TinyLLM: teacher forcing + 2 random train examples)."""

    cot_trigger: str = DEFAULT_COT_TRIGGER
    icl_k: int = Field(2, ge=0, le=16)
    icl_strategy: Literal["random", "none"] = "random"
    seed: int = 0

    @model_validator(mode="after")
    def _k_vs_strategy(self) -> PromptConfig:
        if self.icl_strategy == "none" and self.icl_k != 0:
            raise ValueError("prompts.icl_strategy 'none' needs prompts.icl_k: 0")
        return self


class SelfEvalConfig(StrictModel):
    """Mind's Mirror self-evaluation: the teacher judges each of its own CoTs."""

    enabled: bool = False
    evals_per_cot: int = Field(1, ge=1, le=16)
    verdicts: list[str] = Field(default_factory=lambda: list(DEFAULT_VERDICTS))
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=5.0)

    @model_validator(mode="after")
    def _evals(self) -> SelfEvalConfig:
        if self.evals_per_cot > 1 and self.temperature == 0.0:
            raise ValueError("self_eval.evals_per_cot > 1 needs self_eval.temperature > 0")
        if len(set(self.verdicts)) < 2:
            raise ValueError("self_eval.verdicts needs at least two distinct verdicts")
        return self


class FilterConfig(StrictModel):
    """Which teacher outputs are kept; every drop is counted by reason."""

    drop_empty: bool = True
    drop_unparsable: bool = True
    require_answer_match: bool = False
    drop_verdict_wrong: bool = False
    min_rationale_chars: int = Field(1, ge=0)
    label_source: Literal["gold", "teacher"] = "gold"

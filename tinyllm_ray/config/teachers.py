"""The teacher-side sections: ``teachers``, ``prompts``, ``self_eval`` and ``filter``.

Defaults that describe the prompt layout (CoT trigger, stop sequences, verdict words) are
imported from :mod:`tinyllm_ray.prompts`, which owns that layout, never copied here.
"""

from __future__ import annotations

import re
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
    length_window: int = Field(
        64, ge=0, description="micro-batches of rows of similar length, sorted within windows of this many "
        "batches and then shuffled: the same rows and steps with ~20% less padding to compute; 0: random batches",
    )

    @field_validator("forms")
    @classmethod
    def _forms(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"bootstrap.forms needs one or more distinct forms of cot, teacher_forcing, self_eval; got {v}")
        return v

#: An environment variable's name (what ``api.api_key_env`` holds; never the key itself).
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ApiConfig(StrictModel):
    """An OpenAI-compatible endpoint serving this teacher (``teachers.<i>.api``) instead of vLLM actors.

    Why: Mind's Mirror's own teacher is an API model, and users mix models they host with
    models they reach over an API. The key is read from the environment variable
    ``api_key_env`` names, on the driver, when the run starts: it is never in a config file,
    a dump or a log. Limits apply per teacher: ``concurrency`` and ``requests_per_minute``
    are split evenly over its ``replicas`` (one small Ray actor each).
    """

    base_url: str = Field(description="the endpoint's /v1 URL, e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the key (e.g. OPENAI_API_KEY); None: no key")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="completions: the raw prompt text (as vLLM teachers get it); chat: "
        "the prompt as one user message (chat-only models)")
    n_per_request: bool = Field(
        True, description="ask for sampling.n samples in one request (OpenAI n); False: n requests of one "
        "sample each (endpoints without n)")
    actor_cpus: float = Field(
        0.25, gt=0.0, le=64, description="CPUs each replica's Ray actor reserves (it waits on HTTP; the "
        "teacher's num_cpus, vLLM's threads, does not apply)")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight at once (also bounded by the batch: "
                             "batch_size prompts per actor call)")
    requests_per_minute: float | None = Field(None, gt=0, description="token-bucket rate limit; None: unlimited")
    max_retries: int = Field(4, ge=0, le=20, description="retries after a 429, 5xx, timeout or connection error")
    backoff_s: float = Field(1.0, gt=0, le=600, description="first retry delay; doubles per retry, with jitter")
    max_backoff_s: float = Field(60.0, gt=0, le=3600, description="cap of one retry delay (also of Retry-After)")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="per-request timeout")
    max_stops: int | None = Field(
        None, ge=0, description="send at most this many stop strings (OpenAI's API takes 4); the rest are "
        "still cut from the text afterwards")
    prompt_cost_per_1k: float = Field(0.0, ge=0, description="price per 1000 prompt tokens, for the stats")
    output_cost_per_1k: float = Field(0.0, ge=0, description="price per 1000 generated tokens, for the stats")

    @model_validator(mode="after")
    def _checks(self) -> ApiConfig:
        # model-level (the input is the section, which format_validation_error never echoes)
        if self.api_key_env is not None and not ENV_NAME_RE.match(self.api_key_env):
            raise ValueError("api.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                             "never the key itself: export the key and name its variable here")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("api.base_url must start with http:// or https:// (e.g. https://api.openai.com/v1)")
        if self.backoff_s > self.max_backoff_s:
            raise ValueError("api.backoff_s must be <= api.max_backoff_s")
        return self


class TeacherConfig(StrictModel):
    """One teacher LLM, served by vLLM engines inside ``replicas`` Ray actors, or by an API (``api``)."""

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
    batches_per_round: int = Field(
        1024, ge=1, le=1_000_000, description="batches served per Ray Data execution (a round); the next round "
        "starts new engine actors. Why: Ray Data builds and keeps every read task of an execution up front "
        "(~1.4 KB of object store per batch), so rounds bound the object store whatever the prompt count; "
        "a round's engine start (~10 s on CPU, ~1 min for a 7B model on GPU) is small against 1024 batches")
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
    api: ApiConfig | None = Field(
        None, description="serve this teacher from an OpenAI-compatible endpoint (model = the API's model name)")
    max_restarts: int = Field(
        3, ge=0, le=1000, description="engine deaths in a row (no batch finished in between) that Ray restarts "
        "the teacher's actor after (process killed, engine error, out of memory); one more ends the job. "
        "0: the first death ends the job")
    max_batch_retries: int = Field(
        1, ge=0, le=100, description="times a batch whose engine died is retried on the restarted actor; then "
        "its rows are stored as failed (with the reason) and retried by the next run")

    @model_validator(mode="after")
    def _bootstrap_model(self) -> TeacherConfig:
        if self.bootstrap is not None and not self.model.startswith(("tiny:llama", "tiny:qwen2")):
            raise ValueError(
                f"teacher {self.name!r}: bootstrap trains a tiny causal model; set model to tiny:llama or tiny:qwen2 "
                f"(e.g. tiny:llama?hidden_size=128&num_layers=2), not {self.model!r}"
            )
        if self.api is not None and (self.bootstrap is not None or self.model.startswith("tiny:")):
            raise ValueError(f"teacher {self.name!r}: an api teacher is served by its endpoint; set model to the "
                             f"API's model name and drop bootstrap (tiny: models are local vLLM teachers)")
        return self

    @model_validator(mode="after")
    def _fault_budget(self) -> TeacherConfig:
        # A batch that kills its engine on every attempt costs max_batch_retries + 1 deaths in a row;
        # within max_restarts it becomes failed rows, beyond it the whole teacher would be given up.
        if self.max_restarts and self.max_batch_retries >= self.max_restarts:
            raise ValueError(
                f"teacher {self.name!r}: max_batch_retries ({self.max_batch_retries}) must be below max_restarts "
                f"({self.max_restarts}), or one bad batch ends the teacher instead of being stored as failed"
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


class CrossTeacherConfig(StrictModel):
    """Cross-teacher agreement (``filter.cross_teacher``): trust a CoT more when other teachers
    reached the same answer.

    Why at student-data time and not at generation: teachers generate independently, so the
    answers of every teacher for an example exist together only when the student reads a
    slice (shard *k* of every teacher holds the same examples). It never changes what is
    stored, so it is left out of the store's manifest: one store serves every mode.

    A teacher *agrees* with a CoT's answer when one of its CoTs of that example parsed to the
    same answer (``evaluate.normalize_answer``); the CoT's own teacher counts. ``filter``
    drops rationale rows (and the answer labels taken from them) agreed on by fewer than
    ``min_agreeing`` teachers; ``weight`` multiplies their loss weight by the share of the
    configured teachers that agree. Self-evaluations are kept either way (judging a wrong
    CoT is their training signal).
    """

    mode: Literal["off", "filter", "weight"] = Field(
        "off", description="off: every kept CoT trains as before; filter: drop CoTs too few teachers agree on; "
        "weight: scale each CoT's loss weight by the share of teachers agreeing with its answer")
    min_agreeing: int = Field(
        2, ge=1, le=64, description="filter: teachers (the CoT's own included) that must give its answer")


class FilterConfig(StrictModel):
    """Which teacher outputs are kept; every drop is counted by reason."""

    drop_empty: bool = True
    drop_unparsable: bool = True
    require_answer_match: bool = False
    drop_verdict_wrong: bool = False
    min_rationale_chars: int = Field(1, ge=0)
    label_source: Literal["gold", "teacher"] = "gold"
    cross_teacher: CrossTeacherConfig = Field(default_factory=CrossTeacherConfig)

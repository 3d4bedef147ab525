"""One validated configuration object for the whole distillation job.

Why pydantic models rather than a dict: every stage (data, teachers, student, tune,
runtime) takes *its* section, and a typo or an out-of-range value must fail before
any Ray worker or vLLM engine is started, with one message that names the field path
(``teachers.1.sampling.top_p``) and what is allowed.

Loading is YAML first, then dotted command-line overrides (``loss.alpha.t5=2``,
``teachers.0.replicas=2``) applied to the raw mapping, then validation, so an override
is checked exactly like the file it overrides.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tinyllm_ray.errors import ConfigError

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

DatasetName = Literal[
    "synthetic",
    "tinyllm",
    "obqa",
    "arc",
    "piqa",
    "riddlesense",
    "pubmedqa",
    "bioasq",
    "commonsense_qa",
    "svamp",
    "anli",
    "generic",
]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class StrictModel(BaseModel):
    """Base for every section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------- data


class ColumnMap(StrictModel):
    """Where the canonical fields live in a generic local file (``data.name: generic``)."""

    id: str | None = Field(None, description="id column; row index when absent")
    question: str = "question"
    choices: str | None = Field("choices", description="list column, or None for free-form answers")
    answer: str = "answer"
    context: str | None = None


class SyntheticConfig(StrictModel):
    """Size of the built-in learnable demo task (no files, no network)."""

    train: int = Field(256, ge=4)
    validation: int = Field(64, ge=2)
    test: int = Field(64, ge=2)


class DataConfig(StrictModel):
    """Which dataset, where it comes from, and how malformed rows are treated."""

    name: DatasetName = "synthetic"
    path: str | None = Field(
        None,
        description="hub dataset name (cluster), or a local directory / file (offline)",
    )
    hub_config: str | None = Field(None, description="hub subset, e.g. ARC-Challenge, pqa_labeled")
    files: dict[Split, str | list[str]] = Field(default_factory=dict)
    format: Literal["auto", "json", "jsonl", "parquet", "csv"] = "auto"
    columns: ColumnMap | None = None
    split_names: dict[Split, str] = Field(
        default_factory=dict, description="dataset's own split names, e.g. validation: valid"
    )
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    limit: dict[Split, int] = Field(default_factory=dict, description="max rows per split")
    seed: int = 0
    on_malformed: Literal["error", "skip"] = "error"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("limit")
    @classmethod
    def _positive_limits(cls, v: dict[str, int]) -> dict[str, int]:
        for split, n in v.items():
            if n < 1:
                raise ValueError(f"limit for split {split!r} must be >= 1, got {n}")
        return v

    @model_validator(mode="after")
    def _source_present(self) -> DataConfig:
        if self.name == "synthetic":
            return self
        if self.path is None and not self.files:
            raise ValueError(f"dataset {self.name!r} needs data.path (hub name or local path) or data.files")
        if self.name == "generic" and self.columns is None:
            raise ValueError("data.name 'generic' needs data.columns (question/choices/answer column names)")
        return self


# --------------------------------------------------------------------------- teachers


class SamplingConfig(StrictModel):
    """vLLM SamplingParams for one teacher; ``n`` > 1 samples several distinct CoTs."""

    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(128, ge=1, le=32768)
    stop: list[str] = Field(default_factory=lambda: ["\n\nQ:", "\nQuestion:", "\n\n\n"])
    n: int = Field(1, ge=1, le=64)
    seed: int | None = 0

    @model_validator(mode="after")
    def _greedy_single(self) -> SamplingConfig:
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError(
                f"n={self.n} distinct CoTs need sampling: set temperature > 0 (e.g. 0.7)"
            )
        return self


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

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"teacher name {v!r} must start with a letter and use only letters, digits, '_', '.', '-'"
            )
        return v


class PromptConfig(StrictModel):
    """How teacher prompts are built (TinyLLM: teacher forcing + 2 random train examples)."""

    cot_trigger: str = "Let's think step by step."
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
    verdicts: list[str] = Field(default_factory=lambda: ["correct", "wrong", "uncertain"])
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


# --------------------------------------------------------------------------- student


class TinyModelConfig(StrictModel):
    """A tiny random model built locally (``student.model: tiny``): no download."""

    family: Literal["llama", "qwen2", "t5"] = "t5"
    hidden_size: int = Field(128, ge=64)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    vocab_size: int = Field(2000, ge=300)
    seed: int = 0


class StudentConfig(StrictModel):
    """The student model and how its inputs/targets are formatted and truncated."""

    model: str = Field("tiny", description="'tiny' (built locally), a local HF folder, or a hub name")
    arch: Literal["auto", "seq2seq", "causal"] = "auto"
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    max_input_length: int = Field(512, ge=16)
    max_target_length: int = Field(128, ge=4)
    answer_prefix: str = "predict: "
    rationale_prefix: str = Field("explain {teacher}: ", description="'{teacher}' is replaced by the name")
    self_eval_prefix: str = "evaluate: "
    task_prefix_side: Literal["decoder", "encoder"] = Field(
        "decoder",
        description="seq2seq: 'decoder' encodes each question once for all tasks (faster, same loss "
        "form); 'encoder' is the papers' layout (prefix + question in the encoder)",
    )
    truncation: Literal["count", "error"] = "count"
    trust_remote_code: bool = False

    @field_validator("rationale_prefix")
    @classmethod
    def _has_teacher(cls, v: str) -> str:
        if "{teacher}" not in v:
            raise ValueError("student.rationale_prefix must contain '{teacher}' so each teacher is its own task")
        return v


class LossConfig(StrictModel):
    """TinyLLM additive ``L_A + sum_m alpha_m L_m`` or convex ``a L_A + (1-a) L_R``."""

    form: Literal["additive", "convex"] = "additive"
    alpha: dict[str, float] = Field(default_factory=dict, description="per-teacher weight (additive)")
    default_alpha: float = Field(1.0, ge=0.0)
    convex_alpha: float = Field(0.5, ge=0.0, le=1.0)
    self_eval_weight: float = Field(1.0, ge=0.0)
    schedule: Literal["joint", "two_stage"] = "joint"

    @field_validator("alpha")
    @classmethod
    def _nonneg(cls, v: dict[str, float]) -> dict[str, float]:
        for k, a in v.items():
            if a < 0:
                raise ValueError(f"alpha for teacher {k!r} must be >= 0, got {a}")
        return v


class TrainConfig(StrictModel):
    """Ray Train + DeepSpeed settings; CPU and GPU differ only here."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per training worker, e.g. {trainer_node: 1}"
    )
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    micro_batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    gradient_clipping: float = Field(1.0, ge=0.0, description="0 disables clipping")
    optimizer: Literal["adamw"] = "adamw"
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    eval_every_steps: int = Field(50, ge=1)
    checkpoint_every_steps: int = Field(50, ge=1)
    num_checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)
    eval_max_new_tokens: int = Field(16, ge=1)
    eval_limit: int | None = Field(None, ge=1, description="validation rows per evaluation")
    seed: int = 0

    @model_validator(mode="after")
    def _backend(self) -> TrainConfig:
        if self.backend == "nccl" and not self.use_gpu:
            raise ValueError("train.backend 'nccl' needs train.use_gpu: true (use 'gloo' or 'auto' on CPU)")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("train.precision 'fp16' needs a GPU; use 'fp32' or 'bf16' on CPU")
        return self

    @property
    def resolved_backend(self) -> str:
        """gloo on CPU, nccl on GPU unless set explicitly."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.use_gpu else "gloo"


# --------------------------------------------------------------------------- tune, eval, runtime


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


class RuntimeConfig(StrictModel):
    """Where Ray runs and where everything is written."""

    ray_address: str | None = Field(None, description="None: local Ray; 'auto' or ray://... for a cluster")
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs for a local Ray (may over-commit)")
    num_gpus: int | None = Field(None, ge=0)
    storage_path: str = Field("./runs", description="local path or URI (s3://, gs://) for all outputs")
    run_name: str = "tinyllm"
    store_uri: str | None = Field(None, description="rationale store; default <storage_path>/<run_name>/rationales")
    store_shard_size: int | None = Field(
        None, ge=1, description="examples per store shard (unit of resume and of streaming); default 64"
    )
    dashboard_host: str = "127.0.0.1"
    metrics_export_port: int | None = Field(None, ge=1024, le=65535)
    env_vars: dict[str, str] = Field(default_factory=dict)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"run_name {v!r} must start with a letter and use letters, digits, '_', '.', '-'")
        return v

    @property
    def resolved_store_uri(self) -> str:
        """The rationale store location, derived so train/tune find what generate wrote."""
        if self.store_uri:
            return self.store_uri
        return f"{self.storage_path.rstrip('/')}/{self.run_name}/rationales"


# --------------------------------------------------------------------------- the job


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
        return self

    def alpha_for(self, teacher: str) -> float:
        """The additive weight of one teacher's rationale task (default when unset)."""
        return self.loss.alpha.get(teacher, self.loss.default_alpha)

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"no teacher named {name!r}; teachers are {[t.name for t in self.teachers]}")


# --------------------------------------------------------------------------- loading


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at ``loc`` (for 'unknown key' errors), walking the models."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        nxt = None
        for c in candidates:
            if isinstance(c, type) and issubclass(c, BaseModel):
                nxt = c
                break
            for a in getattr(c, "__args__", ()):
                if isinstance(a, type) and issubclass(a, BaseModel):
                    nxt = a
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """Turn pydantic's report into lines ``<source>: <field.path>: <problem>``."""
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        path = _fmt_loc(loc) or "<root>"
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            allowed = _allowed_keys(JobConfig, loc)
            msg = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        elif "input" in e and e.get("type") not in ("missing",) and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        msg = msg.removeprefix("Value error, ")
        # Cross-section checks raise at the root with the field path in the message.
        lines.append(f"{source}: {msg}" if path == "<root>" else f"{source}: {path}: {msg}")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    """Override values are YAML scalars or flow collections (``2``, ``true``, ``[a, b]``).

    Text that only *looks* like block YAML (``explain:``) stays a string: a prefix ending
    in a colon is far more likely on a command line than a nested mapping.
    """
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override value {text!r} is not valid YAML: {exc}") from exc
    if isinstance(value, dict | list) and text.lstrip()[:1] not in ("[", "{"):
        return text
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.0.c=value`` overrides to a raw mapping (lists indexed by integers)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like field.path=value")
        key, _, value = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty field path")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            path = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key}: {path} is not an index of a list of {len(node)} items")
                idx = int(part)
                if last:
                    node[idx] = _parse_value(value)
                else:
                    if node[idx] is None:
                        node[idx] = {}
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = _parse_value(value)
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"override {key}: {'.'.join(parts[:i])} is a value, not a section")
    return out


def validate_config(raw: dict[str, Any], source: str = "config") -> JobConfig:
    """Validate a raw mapping; raise :class:`ConfigError` with one line per problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a YAML file (safe loader only: nothing in a config is ever evaluated)."""
    p = Path(path)
    if not p.is_file():
        shipped = shipped_config_path(str(path))
        if shipped is None:
            raise ConfigError(
                f"config file {str(path)!r} not found (shipped configs: {', '.join(list_shipped_configs())})"
            )
        p = shipped
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """YAML file (or a shipped config's name) + dotted overrides -> validated JobConfig."""
    raw = load_raw(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, source=str(path) if path is not None else "config")


def dump_config(cfg: JobConfig, path: str | Path) -> None:
    """Write a config that ``load_config`` reads back to an equal object."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


CONFIG_DIR = Path(__file__).parent / "configs"


def list_shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def shipped_config_path(name: str) -> Path | None:
    """Resolve ``demo_cpu`` or ``demo_cpu.yaml`` to the packaged file."""
    stem = Path(name).name.removesuffix(".yaml")
    p = CONFIG_DIR / f"{stem}.yaml"
    return p if p.is_file() else None

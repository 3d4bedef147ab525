"""The student-side sections: ``student`` (model and input layout), ``loss`` and ``train``.

Why together: they are what one Ray Train worker needs, and CPU vs GPU differs only in
``train`` (accelerator, precision, backend), checked here before any worker starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tinyllm_ray.config.base import StrictModel, each_at_least

#: Between a causal student's prompt and its target (``student.causal_separator``); the
#: collator and evaluation read it from the config / the saved student format.
DEFAULT_CAUSAL_SEPARATOR = "\nOutput: "


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
    self_eval_verdict_prefix: str = Field(
        "verdict: ", description="Mind's Mirror self-evaluation, task 1: predict the verdict word of a CoT"
    )
    self_eval_critique_prefix: str = Field(
        "critique: ", description="Mind's Mirror self-evaluation, task 2: write the critique of a CoT"
    )
    task_prefix_side: Literal["decoder", "encoder"] = Field(
        "decoder",
        description="'decoder': the task prefix follows the question, computed once for all tasks (seq2seq: "
        "one encoder pass; causal: one row with a block mask; faster, same loss form); 'encoder' is the "
        "papers' layout (prefix before the question)",
    )
    truncation: Literal["count", "error"] = "count"
    max_cots_per_teacher: int | None = Field(
        None, ge=1, description="train on the first k stored CoTs (sample_idx < k) of each teacher and their "
        "self-evaluations; the rest are counted as left out (Mind's Mirror's one-CoT vs several-CoTs ablation)")
    trust_remote_code: bool = False
    causal_separator: str = Field(
        DEFAULT_CAUSAL_SEPARATOR,
        description="causal students: text between the prompt and the target; '' = plain prompt -> completion "
        "(bootstrapped teachers, served with the prompt alone)",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_self_eval_prefix(cls, data: object) -> object:
        if isinstance(data, dict) and "self_eval_prefix" in data:
            raise ValueError("student.self_eval_prefix was split in two: self-evaluation is distilled as two "
                             "tasks; set student.self_eval_verdict_prefix and student.self_eval_critique_prefix")
        return data

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
    self_eval_weight: float = Field(
        1.0, ge=0.0,
        description="weight of the two self-evaluation tasks: each gets it (additive); convex splits it as "
        "the CoT tasks are split, verdict convex_alpha x w and critique (1 - convex_alpha) x w",
    )
    schedule: Literal["joint", "two_stage"] = "joint"

    @field_validator("alpha")
    @classmethod
    def _nonneg(cls, v: dict[str, float]) -> dict[str, float]:
        return each_at_least(v, 0, "alpha for teacher")


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
    local_shuffle: bool = Field(
        True, description="shuffle rows within a window of 4 micro-batches on every pass; false: read them "
        "in the order given (rows already ordered on purpose, e.g. a bootstrapped teacher's length-grouped batches)",
    )
    # --- learning-rate schedule and per-stage length (student/schedule.py, student/data.py) ---
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0,
        description="linear/cosine decay to train.lr x this at each stage's last step (0: to zero)",
    )
    stage_epochs: list[int] | None = Field(
        None,
        description="epochs of each training stage (two_stage: [self-evaluation, CoT], e.g. Mind's Mirror's "
        "[50, 80]); replaces train.epochs; train.max_steps, when set, still fixes every stage's steps",
    )
    # --- end of the schedule block ---
    eval_every_steps: int = Field(50, ge=1)
    checkpoint_every_steps: int = Field(50, ge=1)
    num_checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)
    eval_max_new_tokens: int = Field(16, ge=1)
    eval_limit: int | None = Field(None, ge=1, description="validation rows per evaluation")
    seed: int = 0
    mlflow_tracking_uri: str | None = Field(
        None, description="opt-in: also log every training report to this MLflow tracking URI "
        "(e.g. http://mlflow:5000 or sqlite:///mlflow.db; needs `pip install mlflow-skinny`)",
    )
    mlflow_experiment: str = Field("tinyllm-ray", min_length=1, description="MLflow experiment of the runs")
    build_lock_timeout_s: float = Field(
        600.0, gt=0.0, description="longest wait on a JIT extension build lock before failing (student/build_lock.py)"
    )

    @field_validator("stage_epochs")
    @classmethod
    def _stage_epochs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(int(e) < 1 for e in v)):
            raise ValueError(f"train.stage_epochs needs one epoch count >= 1 per stage, got {v}")
        return v

    @model_validator(mode="after")
    def _one_epoch_setting(self) -> TrainConfig:
        if self.stage_epochs is not None and self.epochs != 1:
            raise ValueError("set train.epochs or train.stage_epochs (epochs of each stage), not both")
        return self

    def epochs_of_stage(self, stage: int) -> int:
        """Epochs of training stage ``stage`` (``stage_epochs[stage]``, else ``epochs``)."""
        return self.stage_epochs[stage] if self.stage_epochs is not None else self.epochs

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

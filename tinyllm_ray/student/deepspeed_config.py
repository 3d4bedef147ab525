"""``TrainConfig`` -> a DeepSpeed config dict (pure: no deepspeed import).

Why a pure builder: the DeepSpeed JSON is where CPU and GPU runs differ (precision,
optimizer implementation), and where silent mistakes hide (a batch size that does not
match world size x micro-batch x accumulation). Building it
as a plain dict makes each rule a millisecond unit test and lets the trainer log the exact
config it hands to ``deepspeed.initialize``.

Choices:

- ``train_batch_size = micro_batch_size x grad_accum_steps x world_size`` (DeepSpeed
  checks the product; we state it). A micro-batch is ``micro_batch_size`` *questions*
  (groups) with all their task rows.
- Optimizer ``AdamW`` with ``torch_adam: true`` on CPU (torch's implementation; DeepSpeed's
  FusedAdam is a CUDA kernel) and DeepSpeed's fused kernel on GPU.
- No ``scheduler`` section: the learning rate of every step is ours
  (``student/schedule.py``, written into the optimizer by the loop). DeepSpeed's built-in
  schedules warm up over at least 2 steps from a floor, so their first step is wasted, and
  "no warm-up" could only be had by raising the floor to the peak, which froze a linear
  decay at the peak.
- Gradient clipping at 1.0 (TinyLLM/T5 fine-tuning default).
- ZeRO-3 gathers 16-bit weights on save so the Hugging Face export sees whole tensors.
- One worker runs ZeRO-1/2 as stage 0: with a single rank there is nothing to partition,
  yet DeepSpeed's ZeRO-1/2 path still costs ~10% CPU per step and ~100 MB (flat fp32 copies,
  gradient buckets) on the benchmark's T5 (``benchmarks/student_throughput.py``). Stage 3
  is kept as asked (the loop gathers its weights on save).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyllm_ray.config import TrainConfig

__all__ = ["GRADIENT_CLIPPING", "build_deepspeed_config", "effective_zero_stage"]

GRADIENT_CLIPPING = 1.0


def _zero(stage: int) -> dict[str, Any]:
    z: dict[str, Any] = {"stage": int(stage)}
    if stage in (1, 2):
        z.update({"contiguous_gradients": True, "overlap_comm": False,
                  "reduce_bucket_size": int(5e7), "allgather_bucket_size": int(5e7)})
    elif stage == 3:
        z.update({"overlap_comm": False, "contiguous_gradients": True,
                  "stage3_gather_16bit_weights_on_model_save": True})
    return z


def effective_zero_stage(stage: int, world_size: int) -> int:
    """ZeRO-1/2 on one rank partitions nothing but costs ~10% per step: run stage 0 then."""
    return 0 if world_size == 1 and stage in (1, 2) else stage


def build_deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of one run (the learning-rate schedule is ``student/schedule.py``'s)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    on_gpu = bool(train.use_gpu)
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(train.micro_batch_size),
        "gradient_accumulation_steps": int(train.grad_accum_steps),
        "train_batch_size": int(train.micro_batch_size * train.grad_accum_steps * world_size),
        "gradient_clipping": float(train.gradient_clipping),
        "zero_optimization": _zero(effective_zero_stage(train.zero_stage, world_size)),
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "optimizer": {"type": "AdamW", "params": {
            "lr": float(train.lr), "betas": [0.9, 0.999], "eps": 1e-8,
            "weight_decay": float(train.weight_decay), "torch_adam": not on_gpu}},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return cfg

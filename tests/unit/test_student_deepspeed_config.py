"""TrainConfig -> DeepSpeed config dict (pure; deepspeed is never imported here)."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import TrainConfig
from tinyllm_ray.student.data import steps_per_stage
from tinyllm_ray.student.deepspeed_config import build_deepspeed_config


def test_batch_sizes_multiply_out():
    cfg = build_deepspeed_config(TrainConfig(micro_batch_size=4, grad_accum_steps=3), world_size=2)
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 3
    assert cfg["train_batch_size"] == 24


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage(stage):
    z = build_deepspeed_config(TrainConfig(zero_stage=stage), 2)["zero_optimization"]
    assert z["stage"] == stage
    if stage == 3:
        assert z["stage3_gather_16bit_weights_on_model_save"] is True


def test_precision_and_cpu_optimizer():
    cpu = build_deepspeed_config(TrainConfig(precision="bf16", lr=1e-3, weight_decay=0.01), 1)
    assert cpu["bf16"] == {"enabled": True} and cpu["fp16"]["enabled"] is False
    assert cpu["optimizer"]["type"] == "AdamW"
    assert cpu["optimizer"]["params"]["torch_adam"] is True  # FusedAdam is a CUDA kernel
    assert cpu["optimizer"]["params"]["lr"] == 1e-3 and cpu["optimizer"]["params"]["weight_decay"] == 0.01
    gpu = build_deepspeed_config(TrainConfig(use_gpu=True, precision="fp16"), 1)
    assert gpu["fp16"]["enabled"] is True and gpu["optimizer"]["params"]["torch_adam"] is False
    fp32 = build_deepspeed_config(TrainConfig(), 1)
    assert not fp32["bf16"]["enabled"] and not fp32["fp16"]["enabled"]


def test_no_deepspeed_scheduler():
    # the loop sets every step's rate itself (student/schedule.py): DeepSpeed's built-ins waste
    # the first step at their warm-up floor
    for kind in ("constant", "linear", "cosine"):
        assert "scheduler" not in build_deepspeed_config(TrainConfig(scheduler=kind, warmup_steps=3), 1)


def test_builder_does_not_import_deepspeed():
    import inspect

    import tinyllm_ray.student.deepspeed_config as m

    assert "import deepspeed" not in inspect.getsource(m)  # ~16 s import stays in the workers


def test_steps_per_stage():
    # 10 groups, 2 workers -> 5 each -> 3 micro-batches of 2 per epoch
    assert steps_per_stage(10, 2, 2, 1, epochs=2, max_steps=None) == (6, 3)
    assert steps_per_stage(10, 2, 2, 2, epochs=2, max_steps=None) == (3, 3)
    assert steps_per_stage(10, 2, 2, 1, epochs=1, max_steps=40) == (40, 3)  # max_steps cycles epochs
    with pytest.raises(ValueError, match="num_workers"):
        steps_per_stage(1, 2, 2, 1, 1, None)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        steps_per_stage(4, 1, 4, 8, 1, None)


def test_one_worker_runs_zero_1_2_as_stage_0_and_keeps_stage_3() -> None:
    from tinyllm_ray.config import TrainConfig
    from tinyllm_ray.student.deepspeed_config import build_deepspeed_config, effective_zero_stage

    assert [effective_zero_stage(s, 1) for s in (0, 1, 2, 3)] == [0, 0, 0, 3]
    assert [effective_zero_stage(s, 2) for s in (0, 1, 2, 3)] == [0, 1, 2, 3]
    cfg = TrainConfig(zero_stage=2)
    assert build_deepspeed_config(cfg, 1)["zero_optimization"]["stage"] == 0
    assert build_deepspeed_config(cfg, 2)["zero_optimization"]["stage"] == 2

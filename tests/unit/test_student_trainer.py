"""The TorchTrainer plan (resources, backend, storage, failures, env) and checkpoint choice,
built and checked without starting Ray or any worker."""

from __future__ import annotations

import os

import pytest

from tinyllm_ray.config import JobConfig, TinyModelConfig
from tinyllm_ray.student.data import StudentData
from tinyllm_ray.student.tasks import TaskPlan
from tinyllm_ray.student.trainer import _select_best, build_trainer, controller_poll_interval


@pytest.fixture(scope="module")
def t5_path(tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path

    return str(tiny_model_path(TinyModelConfig(family="t5"), tiny_cache))


def _bundle(cfg: JobConfig, groups: dict[int, int], **kw):
    data = StudentData(plan=TaskPlan.from_config(cfg), datasets={}, groups=groups)
    return build_trainer(cfg, data=data, **kw)


def _cfg(path: str, tmp_path, **train) -> JobConfig:
    return JobConfig.model_validate({
        "teachers": [{"name": "a", "model": "x"}],
        "student": {"model": path},
        "train": {"num_workers": 2, "cpus_per_worker": 1, "micro_batch_size": 4, "epochs": 2, **train},
        "runtime": {"storage_path": str(tmp_path), "run_name": "plan"},
    })


def test_cpu_plan(t5_path, tmp_path):
    cfg = _cfg(t5_path, tmp_path, zero_stage=3, max_failures=2, grad_accum_steps=2)
    b = _bundle(cfg, {0: 41}, worker_env={"EXTRA": "1"})
    t = b.trainer
    assert t.scaling_config.num_workers == 2 and not t.scaling_config.use_gpu
    assert t.scaling_config.resources_per_worker == {"CPU": 1.0}
    assert t.train_loop_config["stage_steps"] == [5]  # 41 // 2 = 20 per worker -> 5 micro x 2 epochs / 2
    assert t.train_loop_config["micro_per_epoch"] == [5]
    assert t.train_loop_config["collate"]["prefix_side"] == "decoder"
    rc = t.run_config
    assert rc.storage_path == os.path.join(str(tmp_path), "plan") and rc.name == "train"
    assert rc.failure_config.max_failures == 2
    assert rc.checkpoint_config.checkpoint_score_attribute == "val_accuracy"
    assert rc.checkpoint_config.checkpoint_score_order == "max"
    env = rc.worker_runtime_env["env_vars"]
    assert env["DS_ACCELERATOR"] == "cpu" and env["EXTRA"] == "1"
    assert b.metrics_file == os.path.join(str(tmp_path), "plan", "train", "metrics.jsonl")
    from ray.train.torch import TorchConfig

    assert isinstance(t.train_run_context.backend_config, TorchConfig)
    assert t.train_run_context.backend_config.backend == "gloo"


def test_stage_epochs_size_each_stage_and_warmup_is_checked(t5_path, tmp_path):
    # Mind's Mirror: self-evaluation 50 epochs, then CoT 80 (here 2 and 3), each stage its own length
    base = _cfg(t5_path, tmp_path).model_dump()
    base["train"].pop("epochs")
    cfg = JobConfig.model_validate({**base, "self_eval": {"enabled": True},
                                    "loss": {"form": "convex", "schedule": "two_stage"},
                                    "train": {**base["train"], "stage_epochs": [2, 3]}})
    t = _bundle(cfg, {0: 16, 1: 8}).trainer
    # 16 // 2 = 8 per worker -> 2 micro x 2 epochs; 8 // 2 = 4 -> 1 micro x 3 epochs
    assert t.train_loop_config["stage_steps"] == [4, 3]
    from tinyllm_ray.errors import ConfigError

    warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"warmup_steps": 3})})
    with pytest.raises(ConfigError, match="stage 1"):
        _bundle(warm, {0: 16, 1: 8})


def test_stage_epochs_rules():
    with pytest.raises(ValueError, match="not both"):
        JobConfig.model_validate({"train": {"epochs": 2, "stage_epochs": [1]}})
    with pytest.raises(ValueError, match="trains 1 stage"):
        JobConfig.model_validate({"train": {"stage_epochs": [1, 2]}})
    with pytest.raises(ValueError, match=">= 1"):
        JobConfig.model_validate({"train": {"stage_epochs": [0]}})
    ok = JobConfig.model_validate({"train": {"stage_epochs": [4]}})
    assert ok.train.epochs_of_stage(0) == 4
    assert JobConfig.model_validate(ok.model_dump(mode="json")) == ok  # workers re-validate the dump


def test_gpu_plan_uses_nccl_and_no_cpu_accelerator(t5_path, tmp_path):
    cfg = _cfg(t5_path, tmp_path, use_gpu=True, precision="bf16")
    t = _bundle(cfg, {0: 16}).trainer
    assert t.scaling_config.use_gpu and t.scaling_config.resources_per_worker["GPU"] == 1.0
    assert t.train_run_context.backend_config.backend == "nccl"
    assert "DS_ACCELERATOR" not in t.run_config.worker_runtime_env["env_vars"]


def test_tune_overrides_and_callbacks(t5_path, tmp_path):
    from ray.train import UserCallback

    cfg = _cfg(t5_path, tmp_path)
    marker = UserCallback()
    t = _bundle(cfg, {0: 8}, callbacks=[marker],
                run_config_overrides={"name": "trial_3", "storage_path": str(tmp_path / "tune")}).trainer
    assert t.run_config.name == "trial_3" and t.run_config.storage_path == str(tmp_path / "tune")
    assert t.run_config.callbacks[0] is marker and len(t.run_config.callbacks) == 2  # + metrics log


def test_select_best_uses_validation_and_the_final_stage():
    ck = [("a", {"step": 2, "stage": 0, "val_accuracy": 0.9}),
          ("b", {"step": 4, "stage": 1, "val_accuracy": 0.5}),
          ("c", {"step": 6, "stage": 1, "val_accuracy": 0.5}),
          ("d", {"step": 5, "stage": 1, "val_accuracy": 0.4, "test_accuracy": 1.0})]
    assert _select_best(ck, last_stage=1)[0] == "c"  # stage-0 model never wins; ties -> later
    assert _select_best(ck, last_stage=0)[0] == "a"
    assert _select_best([], last_stage=0) is None


def test_poll_interval_is_scoped(monkeypatch):
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    monkeypatch.delenv(key, raising=False)
    with controller_poll_interval(0.2):
        assert os.environ[key] == "0.2"
    assert key not in os.environ
    monkeypatch.setenv(key, "5")
    with controller_poll_interval(0.2):
        assert os.environ[key] == "5"  # the user's choice wins


def test_package_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, tinyllm_ray.student, tinyllm_ray.student.trainer, tinyllm_ray.student.tasks;"
            "print(sorted(m for m in ('torch', 'deepspeed', 'ray.train', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""The learning rate of every step (student/schedule.py): first and last step, warm-up, each kind, stages."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from tinyllm_ray.config import TrainConfig, load_config
from tinyllm_ray.student.schedule import check_warmup, lr_at, set_lr, stage_lrs

LR = 5e-5


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_no_warmup_first_step_runs_at_the_peak(kind):
    assert lr_at(1, 100, 0, kind, LR) == LR


def test_linear_is_hugging_faces_schedule_no_step_at_zero():
    lrs = stage_lrs([5], 0, "linear", 1.0)[0]
    assert lrs == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # HF: lr * (N - s + 1) / N
    assert lr_at(10_000, 10_000, 0, "linear", LR) == pytest.approx(LR / 10_000)  # TinyLLM's last step
    floor = stage_lrs([4], 0, "linear", 1.0, min_lr_ratio=0.2)[0]
    assert floor == pytest.approx([1.0, 0.8, 0.6, 0.4])  # the floor is reached one step after the last


def test_cosine_decays_towards_the_floor():
    lrs = stage_lrs([4], 0, "cosine", 1.0, min_lr_ratio=0.1)[0]
    assert lrs[0] == 1.0 and lrs[-1] > 0.1
    assert lrs[2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))  # half way: mid point
    assert all(a > b for a, b in pairwise(lrs))


def test_constant_stays_at_the_peak():
    assert stage_lrs([4], 0, "constant", LR)[0] == [LR] * 4
    assert stage_lrs([4], 2, "constant", 1.0)[0] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_warmup_rises_to_the_peak_then_decays_to_the_floor(kind):
    lrs = stage_lrs([6], 2, kind, 1.0)[0]
    assert lrs[:2] == [0.5, 1.0]  # step 1 is not wasted at 0; step W runs at the peak
    assert 0.0 < lrs[-1] < 0.5
    assert all(a >= b for a, b in pairwise(lrs[1:]))


def test_each_stage_restarts_its_schedule():
    # Mind's Mirror: two stages, each a run of its own (warm-up, then its own decay)
    a, b = stage_lrs([3, 5], 1, "linear", 1.0)
    assert a == pytest.approx([1.0, 2 / 3, 1 / 3]) and b == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    a, b = stage_lrs([4, 2], 0, "linear", 1.0)
    assert a[0] == b[0] == 1.0 and (a[-1], b[-1]) == pytest.approx((0.25, 0.5))


def test_one_step_stage_and_bad_arguments():
    assert lr_at(1, 1, 0, "linear", LR) == LR  # its first step is also its last: the peak wins
    with pytest.raises(ValueError, match="fewer than"):
        lr_at(1, 3, 3, "linear", LR)
    with pytest.raises(ValueError, match="outside"):
        lr_at(0, 3, 0, "linear", LR)
    with pytest.raises(ValueError, match="outside"):
        lr_at(4, 3, 0, "linear", LR)
    with pytest.raises(ValueError, match="unknown scheduler"):
        lr_at(1, 3, 0, "step", LR)
    with pytest.raises(ValueError, match="stage 1"):
        check_warmup([10, 4], 4)
    check_warmup([10, 5], 4)
    check_warmup([1], 0)


def test_set_lr_writes_every_group():
    from types import SimpleNamespace

    opt = SimpleNamespace(param_groups=[{"lr": 1.0}, {"lr": 2.0}])
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_config_fields():
    t = TrainConfig()
    assert (t.scheduler, t.warmup_steps, t.min_lr_ratio) == ("linear", 0, 0.0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)
    assert load_config("demo_cpu", ["train.min_lr_ratio=0.1"]).train.min_lr_ratio == 0.1

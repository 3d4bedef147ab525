"""The learning rate of every optimizer step, as one pure function (no torch, no DeepSpeed).

Why our own schedule and not DeepSpeed's: DeepSpeed's ``WarmupLR`` / ``WarmupDecayLR`` /
``WarmupCosineLR`` always warm up over at least 2 steps from ``warmup_min_lr``, so the
first step of every run (and of every restarted stage) trains at the floor — a wasted
step — and "no warm-up" could only be faked by raising that floor to the peak, which froze
``linear`` at the peak for the whole run. Here the rate is a function of the step alone:

    lr_at(stage_step, stage_steps, warmup_steps, kind, peak_lr, min_lr_ratio)

with ``stage_step`` 1-based within the stage (the loop's ``stage_step`` metric):

- warm-up (``warmup_steps`` W > 0): steps 1..W rise linearly, ``peak * s / W``, so step W
  runs at the peak; with W = 0 the first step runs at the peak;
- then ``constant`` stays at the peak; ``linear`` and ``cosine`` decay from the peak at
  step max(W, 1) towards the floor ``peak * min_lr_ratio``, which is reached one step
  *after* the stage's last step (``linear`` straight, ``cosine`` half a cosine), so no step
  trains at a rate of 0 — Hugging Face's schedule, whose last step runs at ``lr / N``;
- a stage of one step (W = 0) runs at the peak (its first step is also its last);
- W must be smaller than the stage's steps, or the stage would end before reaching the
  peak (:func:`check_warmup` says so before any worker starts).

The loop (``student/loop.py``) writes this rate into every optimizer parameter group before
each optimizer step. Nothing is stateful: a resumed run recomputes the rate from the step
in its checkpoint, and a new stage (``loss.schedule: two_stage``) restarts at its own step 1.

The papers' code (TinyLLM, Mind's Mirror) trains with Hugging Face's default schedule:
linear decay to 0 with no warm-up (``lr * (N - s + 1) / N`` at step s, so its last step is
at ``lr / N``, not 0); ``scheduler: linear``, ``warmup_steps: 0``, ``min_lr_ratio: 0`` is
exactly that schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["SCHEDULER_KINDS", "check_warmup", "lr_at", "set_lr", "stage_lrs"]

SCHEDULER_KINDS: tuple[str, ...] = ("constant", "linear", "cosine")


def lr_at(stage_step: int, stage_steps: int, warmup_steps: int, kind: str, peak_lr: float,
          min_lr_ratio: float = 0.0) -> float:
    """The learning rate of step ``stage_step`` (1-based) of a stage of ``stage_steps`` steps."""
    if kind not in SCHEDULER_KINDS:
        raise ValueError(f"unknown scheduler {kind!r}; use one of {SCHEDULER_KINDS}")
    if stage_steps < 1:
        raise ValueError(f"a stage has at least one step, got {stage_steps}")
    if not 1 <= stage_step <= stage_steps:
        raise ValueError(f"step {stage_step} is outside the stage's steps 1..{stage_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps >= stage_steps and warmup_steps > 0:
        raise ValueError(f"warmup_steps {warmup_steps} must be fewer than the stage's {stage_steps} steps")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if warmup_steps and stage_step <= warmup_steps:
        return peak_lr * stage_step / warmup_steps
    if kind == "constant":
        return peak_lr
    start = max(warmup_steps, 1)  # the step that runs at the peak
    progress = (stage_step - start) / (stage_steps - start + 1)  # the floor comes one step after the last
    floor = peak_lr * min_lr_ratio
    if kind == "linear":
        return floor + (peak_lr - floor) * (1.0 - progress)
    return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_lrs(stage_steps: Sequence[int], warmup_steps: int, kind: str, peak_lr: float,
              min_lr_ratio: float = 0.0) -> list[list[float]]:
    """Every step's rate, stage by stage (each stage restarts its schedule): for logs and tests."""
    return [[lr_at(s, n, warmup_steps, kind, peak_lr, min_lr_ratio) for s in range(1, n + 1)]
            for n in stage_steps]


def check_warmup(stage_steps: Sequence[int], warmup_steps: int) -> None:
    """Raise ``ValueError`` naming the stage when a warm-up would not end inside it."""
    for stage, n in enumerate(stage_steps):
        if warmup_steps and warmup_steps >= n:
            raise ValueError(
                f"train.warmup_steps={warmup_steps} is not fewer than the {n} optimizer step(s) of training "
                f"stage {stage}: the learning rate would never reach train.lr; lower train.warmup_steps "
                f"(each stage warms up again) or train longer"
            )


def set_lr(optimizer: Any, lr: float) -> None:
    """Write ``lr`` into every parameter group of ``optimizer``.

    DeepSpeed's ZeRO, BF16 and FP16 wrappers forward ``param_groups`` to the optimizer
    that updates the weights, so setting it on ``engine.optimizer`` reaches that one.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr

"""Training stages: where each begins, and how a stage starts like a run of its own (pure).

Why stages restart: Mind's Mirror's official code trains self-evaluation and then CoT
reasoning as two separate trainings (the second with ``--continue_train`` from the first's
weights), so the CoT stage begins with new Adam moments and a full learning-rate schedule
(warm-up + decay) over its own steps. One schedule spanning both stages would start the
CoT stage wherever the self-evaluation stage left the decay, with moments fitted to
another task. So with ``loss.schedule: two_stage`` the loop (``student/loop.py``), at the
first step of every stage after the first:

- empties the optimizer state in place (:func:`reset_optimizer_state`): Adam's moments and
  step counts start from zero, as in a new optimizer, while DeepSpeed's fp32 master weights
  (the weights trained so far) stay;
- restarts the learning-rate schedule (warm-up + decay) over that stage's own steps:
  ``student/schedule.py``'s ``lr_at`` counts steps within the stage, so this needs no state.

A joint run has one stage: nothing restarts and its schedule spans the whole run as before.

Resuming: a checkpoint holds the global ``step``; :func:`stage_of_step` names the stage the
next step belongs to, and the learning rate follows from the step. A checkpoint taken at
the last step of a stage holds the finished stage's optimizer state; the restart above
then empties it, exactly as in a run that never stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["base_optimizer", "reset_optimizer_state", "stage_of_step", "stage_offsets"]


def stage_offsets(stage_steps: Sequence[int]) -> list[int]:
    """Global step count before each stage: stage ``s`` runs steps ``offsets[s]+1 .. offsets[s]+stage_steps[s]``."""
    out, total = [], 0
    for n in stage_steps:
        out.append(total)
        total += int(n)
    return out


def stage_of_step(stage_steps: Sequence[int], step: int) -> int:
    """The stage of the step after global step ``step`` (0 = nothing trained yet).

    After the last step of a stage the next step is the next stage's first; after the
    run's last step it is the last stage (nothing is left to train).
    """
    if not stage_steps:
        raise ValueError("a run has at least one stage")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    for stage, (offset, n) in enumerate(zip(stage_offsets(stage_steps), stage_steps)):
        if step < offset + int(n):
            return stage
    return len(stage_steps) - 1


def base_optimizer(optimizer: Any) -> Any:
    """The innermost optimizer (DeepSpeed's ZeRO and BF16 wrappers hold it as ``.optimizer``)."""
    seen: set[int] = set()
    while getattr(optimizer, "optimizer", None) is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        optimizer = optimizer.optimizer
    return optimizer


def reset_optimizer_state(optimizer: Any) -> int:
    """Empty every per-parameter state (Adam moments, step counts) in place; return how many.

    In place, not a new ``state`` mapping: DeepSpeed's BF16 optimizer links each
    parameter's fragment to its state dict once, so the dicts must stay the same objects.
    Torch's AdamW and DeepSpeed's FusedAdam initialise an empty state at their next step
    exactly as a new optimizer would; FusedAdam's per-group ``step`` is dropped for the
    same reason. Hyper-parameters (betas, eps, weight decay) live in the param groups and
    stay; the learning rate is the new scheduler's.
    """
    opt = base_optimizer(optimizer)
    n = 0
    for state in opt.state.values():
        if state:
            state.clear()
            n += 1
    for group in opt.param_groups:
        group.pop("step", None)
    return n

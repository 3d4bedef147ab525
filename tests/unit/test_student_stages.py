"""Stage bookkeeping and the optimizer restart between stages (pure; torch only, no DeepSpeed).

The learning-rate restart is tested in test_student_schedule.py (the pure function) and through
the metrics log in tests/integration/test_train.py.
"""

from __future__ import annotations

import pytest

from tinyllm_ray.student.schedule import stage_lrs
from tinyllm_ray.student.stages import base_optimizer, reset_optimizer_state, stage_of_step, stage_offsets


def test_offsets_and_the_stage_of_the_next_step():
    steps = [3, 5]
    assert stage_offsets(steps) == [0, 3]
    # global steps done -> stage of the next step; after stage 0's last step comes stage 1's first
    assert [stage_of_step(steps, s) for s in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert stage_of_step([4], 0) == stage_of_step([4], 4) == 0  # joint: one stage throughout
    with pytest.raises(ValueError):
        stage_of_step([], 0)
    with pytest.raises(ValueError):
        stage_of_step([2], -1)


def test_each_stage_gets_a_full_schedule_over_its_own_steps():
    lrs = stage_lrs([3, 7], warmup_steps=2, kind="linear", peak_lr=0.1)
    for r in lrs:  # each stage warms up from 0 to the peak again and decays to 0 at its own last step
        assert r[0] == 0.05 and r[1] == 0.1 and r[-1] == 0.0


class _Wrapper:
    """Shaped like DeepSpeed's ZeRO / BF16 optimizers: the real one is ``.optimizer``."""

    def __init__(self, inner):
        self.optimizer = inner


def _train(params, opt, grads):

    for g in grads:
        for p, gp in zip(params, g):
            p.grad = gp.clone()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in params]


def test_reset_makes_adamw_behave_like_a_new_optimizer():
    import torch

    torch.manual_seed(0)
    grads = [[torch.randn(4, 3), torch.randn(3)] for _ in range(5)]
    a = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    opt_a = torch.optim.AdamW(a, lr=0.01, weight_decay=0.1)
    _train(a, opt_a, grads[:3])  # stage 0
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]  # the same weights, a new optimizer
    opt_b = torch.optim.AdamW(b, lr=0.01, weight_decay=0.1)

    wrapped = _Wrapper(_Wrapper(opt_a))
    assert base_optimizer(wrapped) is opt_a
    old_states = [opt_a.state[p] for p in a]
    assert reset_optimizer_state(wrapped) == 2
    assert all(s == {} for s in opt_a.state.values())
    assert all(opt_a.state[p] is s for p, s in zip(a, old_states))  # emptied in place, not replaced
    assert opt_a.param_groups[0]["weight_decay"] == 0.1  # hyper-parameters stay

    after_a = _train(a, opt_a, grads[3:])  # stage 1
    after_b = _train(b, opt_b, grads[3:])
    for x, y in zip(after_a, after_b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert int(opt_a.state[a[0]]["step"]) == 2


def test_reset_drops_a_group_step_counter():
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    opt.param_groups[0]["step"] = 7  # DeepSpeed's FusedAdam keeps one per group
    assert reset_optimizer_state(opt) == 0
    assert "step" not in opt.param_groups[0]

"""The multi-task distillation loss, packed into one pass, and its separate-pass reference.

Definition (TinyLLM / DSS / Mind's Mirror alike): with tasks ``k`` (answer, one rationale
task per teacher, self-evaluation) and task weights ``w_k``::

    L = sum_k w_k * mean_{target tokens t of task k} CE(t)

i.e. each task's cross-entropy is averaged over ITS OWN tokens (a long rationale task does
not drown the short answer task by token count), then weighted. The original code runs
one forward pass per task; :func:`packed_task_loss` computes the same number from ONE
forward over all rows, with per-row task ids and weights, via two ``index_add`` s
(:func:`target_task_loss` when one row holds several targets: the causal one-pass layout).
:func:`separate_pass_loss` is the M+1-pass reference it is tested against (and the
baseline of the packed-vs-separate benchmark).

Pure torch: no model, no Ray, no DeepSpeed. Logits and labels arrive aligned (causal
models are shifted by the caller); ignored positions carry ``IGNORE_INDEX``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "TaskLoss",
    "packed_task_loss",
    "separate_pass_loss",
    "target_task_loss",
    "token_cross_entropy",
]

IGNORE_INDEX = -100


@dataclass
class TaskLoss:
    """A weighted total to backpropagate plus detached per-task numbers for reporting.

    ``task_sum[k]``/``task_tokens[k]`` are sums over this batch, so callers can aggregate
    exactly across micro-batches and workers (``sum / tokens`` = per-task mean CE).
    """

    total: torch.Tensor
    task_sum: torch.Tensor  # [K] summed CE of task k's tokens (detached, float32)
    task_tokens: torch.Tensor  # [K] number of target tokens of task k

    @property
    def per_task(self) -> torch.Tensor:
        """Mean CE per task (0 for tasks absent from the batch)."""
        return self.task_sum / self.task_tokens.clamp(min=1)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits -> float32; float32/float64 as they are (a float64 check stays exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token CE ``[R, T]`` (0 at ignored positions) and the mask of counted tokens.

    Computed in at least float32 whatever the model dtype, so bf16 training reports comparable
    numbers and the packed/separate comparison is not dominated by rounding (float64 stays
    float64, so the equality tests can be exact to float64 rounding).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} are not aligned")
    r, t, v = logits.shape
    ce = F.cross_entropy(
        _at_least_float32(logits).reshape(r * t, v), labels.reshape(r * t), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(r, t)
    mask = labels != IGNORE_INDEX
    return ce, mask


def packed_task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    row_task: torch.Tensor,
    row_weight: torch.Tensor,
    num_tasks: int,
) -> TaskLoss:
    """Weighted multi-task loss of one packed forward (see module docstring).

    ``row_task[r]`` is the task id of row ``r`` and ``row_weight[r]`` its task's weight.
    Row ``r`` contributes ``w_r * sum_t CE_rt / n_task(r)`` where ``n_k`` counts the
    target tokens of task ``k`` in the batch; with one weight per task this is exactly
    ``sum_k w_k * mean_k``.
    """
    ce, mask = token_cross_entropy(logits, labels)
    return _weighted_task_loss(ce.sum(dim=1), mask.sum(dim=1).to(ce.dtype), row_task, row_weight, num_tasks)


def target_task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_target: torch.Tensor,
    row_task: torch.Tensor,
    row_weight: torch.Tensor,
    num_tasks: int,
) -> TaskLoss:
    """:func:`packed_task_loss` for label tokens gathered from rows that hold several targets.

    Why: the causal one-pass layout puts every target of a question in one row, so a row is
    no longer one task. ``logits`` ``[N, V]`` / ``labels`` ``[N]`` are the N label positions
    of the batch and ``label_target[n]`` the target (task row) each belongs to; targets then
    count exactly as the rows of :func:`packed_task_loss` do.
    """
    if logits.dim() != 2 or labels.shape != label_target.shape or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and label_target "
                         f"{tuple(label_target.shape)} are not [N, V], [N], [N]")
    ce = F.cross_entropy(_at_least_float32(logits), labels, ignore_index=IGNORE_INDEX, reduction="none")
    n = row_task.shape[0]
    row_sum = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, label_target, ce)
    counted = (labels != IGNORE_INDEX).to(ce.dtype)
    row_tok = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, label_target, counted)
    return _weighted_task_loss(row_sum, row_tok, row_task, row_weight, num_tasks)


def _weighted_task_loss(
    row_sum: torch.Tensor, row_tok: torch.Tensor, row_task: torch.Tensor, row_weight: torch.Tensor, num_tasks: int
) -> TaskLoss:
    """Per-row CE sums and token counts -> ``sum_k w_k * mean_k`` (shared by both packings)."""
    task_tokens = torch.zeros(num_tasks, dtype=row_sum.dtype, device=row_sum.device).index_add(0, row_task, row_tok)
    denom = task_tokens.index_select(0, row_task).clamp(min=1.0)
    total = (row_weight.to(row_sum.dtype) * row_sum / denom).sum()
    task_sum = torch.zeros(num_tasks, dtype=row_sum.dtype, device=row_sum.device).index_add(
        0, row_task, row_sum.detach()
    )
    return TaskLoss(total=total, task_sum=task_sum, task_tokens=task_tokens)


def separate_pass_loss(
    forward_rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    row_task: torch.Tensor,
    row_weight: torch.Tensor,
    num_tasks: int,
) -> TaskLoss:
    """Reference: one forward per task over only that task's rows, HF-style mean CE each.

    ``forward_rows(idx)`` runs the model on rows ``idx`` alone (re-encoding their inputs)
    and returns aligned ``(logits, labels)``. Every task's rows must share one weight (the
    textbook ``sum_k w_k L_k``); mixed weights inside a task raise ``ValueError``.
    """
    total: torch.Tensor | None = None
    sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in range(num_tasks):
        idx = (row_task == k).nonzero(as_tuple=False).squeeze(1)
        if idx.numel() == 0:
            continue
        w = row_weight.index_select(0, idx)
        if not torch.all(w == w[0]):
            raise ValueError(f"task {k} has rows with different weights {sorted(set(w.tolist()))}")
        logits, labels = forward_rows(idx)
        v = logits.shape[-1]
        logits = _at_least_float32(logits)
        mean = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        n = (labels != IGNORE_INDEX).sum().to(mean.dtype)
        term = w[0].to(mean.dtype) * mean
        total = term if total is None else total + term
        sums[k] = (mean.detach() * n, n)
    if total is None:
        raise ValueError("separate_pass_loss: the batch has no rows")
    task_sum = torch.zeros(num_tasks, dtype=total.dtype, device=row_task.device)
    task_tokens = torch.zeros(num_tasks, dtype=total.dtype, device=row_task.device)
    for k, (s, n) in sums.items():
        task_sum[k], task_tokens[k] = s, n
    return TaskLoss(total=total, task_sum=task_sum, task_tokens=task_tokens)

"""The student's packed multi-task step: one forward over every task row of a batch.

Why a module of its own: it is the piece the packed-vs-separate benchmark measures and
the unit test pins down. :class:`PackedStudent` wraps a Hugging Face model; DeepSpeed
gets the wrapper (``engine(batch)`` runs the packed step), checkpoints hold its state,
and ``.model`` is what is saved in Hugging Face format.

Seq2seq with the task prefix on the decoder side (``CollateSpec.shares_encoder``): the
encoder runs once per *question* (``input_ids`` has one row per group), its states are
expanded to the task rows with ``index_select(row_group)``, and the decoder runs once
over all task rows. At PubMedQA-like lengths (~300 input tokens, ~80 per rationale) the
encoder dominates, so M+1 tasks cost about one encoder pass instead of M+1.

:meth:`PackedStudent.separate_loss` is the reference: one full forward per task that
re-encodes that task's rows, with HF's per-pass mean CE, weighted and summed.
"""

from __future__ import annotations

from typing import Any

import torch

from tinyllm_ray.student.losses import TaskLoss, packed_task_loss, separate_pass_loss

__all__ = ["PackedStudent", "batch_to_device"]


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _trim(ids: torch.Tensor, mask: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop trailing all-padding columns (a separate pass pads only to its own rows)."""
    width = int(mask.sum(dim=1).max().item()) if mask.numel() else 0
    width = max(width, 1)
    return (ids[:, :width], mask[:, :width], *(m[:, :width] for m in more))


class PackedStudent(torch.nn.Module):
    """HF model + packed multi-task forward. ``forward(batch)`` returns the loss tuple.

    ``forward`` returns ``(total, task_sum, task_tokens)`` (plain tensors, so DeepSpeed's
    ZeRO-3 output hooks see nothing unusual); :meth:`task_loss` wraps them in a
    :class:`TaskLoss`.
    """

    def __init__(self, model: Any, arch: str, num_tasks: int) -> None:
        super().__init__()
        if arch not in ("seq2seq", "causal"):
            raise ValueError(f"arch must be 'seq2seq' or 'causal', got {arch!r}")
        self.model = model
        self.arch = arch
        self.num_tasks = int(num_tasks)

    # ------------------------------------------------------------------ packed
    def logits_and_labels(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned (logits, labels) of all task rows from one forward."""
        if self.arch == "causal":
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
            return out.logits[:, :-1], batch["labels"][:, 1:]
        from transformers.modeling_outputs import BaseModelOutput

        enc_mask = batch["attention_mask"]
        hidden = self.model.get_encoder()(input_ids=batch["input_ids"], attention_mask=enc_mask).last_hidden_state
        row_group = batch.get("row_group")
        n_rows = batch["decoder_input_ids"].shape[0]
        if row_group is not None and not (
            hidden.shape[0] == n_rows and torch.equal(row_group, torch.arange(n_rows, device=row_group.device))
        ):
            hidden = hidden.index_select(0, row_group)
            enc_mask = enc_mask.index_select(0, row_group)
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=enc_mask,
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
            use_cache=False,
        )
        return out.logits, batch["labels"]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, labels = self.logits_and_labels(batch)
        loss = packed_task_loss(logits, labels, batch["row_task"], batch["row_weight"], self.num_tasks)
        return loss.total, loss.task_sum, loss.task_tokens

    @staticmethod
    def task_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> TaskLoss:
        total, task_sum, task_tokens = outputs
        return TaskLoss(total=total, task_sum=task_sum, task_tokens=task_tokens)

    # ------------------------------------------------------------------ reference
    def rows_logits_and_labels(
        self, batch: dict[str, torch.Tensor], idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full forward over rows ``idx`` only, re-encoding their inputs (one 'separate pass')."""
        if self.arch == "causal":
            ids, mask, labels = _trim(batch["input_ids"].index_select(0, idx),
                                      batch["attention_mask"].index_select(0, idx),
                                      batch["labels"].index_select(0, idx))
            out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
            return out.logits[:, :-1], labels[:, 1:]
        row_group = batch.get("row_group")
        enc_idx = row_group.index_select(0, idx) if row_group is not None else idx
        ids, mask = _trim(batch["input_ids"].index_select(0, enc_idx), batch["attention_mask"].index_select(0, enc_idx))
        dec, dmask, labels = _trim(batch["decoder_input_ids"].index_select(0, idx),
                                   batch["decoder_attention_mask"].index_select(0, idx),
                                   batch["labels"].index_select(0, idx))
        out = self.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                         decoder_attention_mask=dmask, use_cache=False)
        return out.logits, labels

    def separate_loss(self, batch: dict[str, torch.Tensor]) -> TaskLoss:
        """The M+1-pass reference loss of the same batch (see :func:`separate_pass_loss`)."""
        return separate_pass_loss(
            lambda idx: self.rows_logits_and_labels(batch, idx),
            batch["row_task"], batch["row_weight"], self.num_tasks,
        )

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

Causal, one pass (``CollateSpec.one_pass``; layout in :mod:`~tinyllm_ray.student.collate`):
one row per question ``[question | target_1 | ... | target_k]`` with a 4-D additive block
mask (:func:`block_attention_mask`) and explicit ``position_ids``, so the question is
computed once instead of once per task and short answer rows are no longer padded to
rationale length. Only label positions go through the LM head (the question's logits are
never used); models whose head does more than a linear layer (logit soft-capping or
scaling) run their full forward instead.

:meth:`PackedStudent.separate_loss` is the reference: one full forward per task that
re-encodes that task's rows, with HF's per-pass mean CE, weighted and summed.
"""

from __future__ import annotations

from typing import Any

import torch

from tinyllm_ray.student.losses import (
    IGNORE_INDEX,
    TaskLoss,
    packed_task_loss,
    separate_pass_loss,
    target_task_loss,
)

__all__ = ["PackedStudent", "batch_to_device", "block_attention_mask"]

#: config fields of models whose logits are not just ``lm_head(hidden)`` (Gemma 2/3, Cohere)
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale")


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _trim(ids: torch.Tensor, mask: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop trailing all-padding columns (a separate pass pads only to its own rows)."""
    width = int(mask.sum(dim=1).max().item()) if mask.numel() else 0
    width = max(width, 1)
    return (ids[:, :width], mask[:, :width], *(m[:, :width] for m in more))


def block_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, L]`` segment ids -> ``[B, 1, L, L]`` additive mask (0 = may attend, -inf = not).

    Query ``i`` sees key ``k <= i`` when ``k`` is in the question (segment 0) or in ``i``'s
    own segment: a target sees the question and itself, never another target. Padding
    (segment -1) sees only padding, so no row of the mask is all -inf (softmax stays finite).
    This is the format HF Llama/Qwen2 take as-is (``masking_utils`` returns a 4-D mask
    unchanged for the eager and sdpa attention).
    """
    seg_q = segment_ids.unsqueeze(2)  # [B, L, 1]
    seg_k = segment_ids.unsqueeze(1)  # [B, 1, L]
    n = segment_ids.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = causal & ((seg_k == seg_q) | ((seg_k == 0) & (seg_q > 0)))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, float("-inf")).unsqueeze(1)


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

    def one_pass_logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal one-pass layout: ``(logits [N, V], labels [N], label_target [N])`` of the N labels."""
        model = self.model
        mask = block_attention_mask(batch["segment_ids"], model.dtype)
        sel = batch["label_target"] >= 0
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": mask,
                  "position_ids": batch["position_ids"], "use_cache": False}
        if any(getattr(model.config, k, None) is not None for k in _HEAD_EXTRAS):
            logits = model(**kwargs).logits[sel]
        else:
            hidden = model.base_model(**kwargs).last_hidden_state
            logits = model.get_output_embeddings()(hidden[sel])
        return logits, batch["labels"][sel], batch["label_target"][sel]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if "segment_ids" in batch:
            logits, labels, target = self.one_pass_logits(batch)
            loss = target_task_loss(logits, labels, target, batch["row_task"], batch["row_weight"], self.num_tasks)
            return loss.total, loss.task_sum, loss.task_tokens
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
        if "segment_ids" in batch:
            return self._unpacked_logits_and_labels(batch, idx)
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

    def _unpacked_logits_and_labels(
        self, batch: dict[str, torch.Tensor], idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One-pass batch, targets ``idx``: plain HF forward over ``question + P Y </s>`` rows.

        Rebuilds each target's own sequence (the question's shared tokens, then that target's
        block, which starts with the question's last token: ``Q P Y </s>``) and runs it with an
        ordinary padding mask and default positions: what a separate pass of this layout computes.
        """
        row_group = batch["row_group"]
        seqs: list[torch.Tensor] = []
        labs: list[torch.Tensor] = []
        for t in idx.tolist():
            r = int(row_group[t])
            local = int((row_group[:t] == r).sum()) + 1  # targets of a row are numbered 1..k in order
            seg, ids, lab = batch["segment_ids"][r], batch["input_ids"][r], batch["labels"][r]
            block = seg == local
            question = ids[seg == 0]
            seqs.append(torch.cat([question, ids[block]]))
            labs.append(torch.cat([torch.full_like(question, IGNORE_INDEX), lab[block]]))
        width = max(len(x) for x in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long, device=row_group.device)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for i, (x, y) in enumerate(zip(seqs, labs)):
            ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = x, y, 1
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.logits, labels  # labels are aligned with the logits already

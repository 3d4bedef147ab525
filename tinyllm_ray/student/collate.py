"""Group rows -> padded tensors for ONE packed forward pass (tokenize, truncate, pad).

Why its own module: what the model sees must be identical in training, in the
separate-pass reference, in the length pre-flight and at evaluation; every one of them
goes through :func:`encode_prompt` / :func:`encode_target` here.

Layouts (``P`` = task prefix tokens, ``S`` = source tokens, ``Y`` = target tokens):

- seq2seq, ``prefix_side="decoder"`` (default; encode once): encoder ``S``, once per
  group; decoder ``P Y </s>``, loss on ``Y </s>`` only. Every task of a question reuses
  one encoder pass (``row_group`` maps decoder rows to encoder rows).
- seq2seq, ``prefix_side="encoder"`` (the papers' layout): encoder ``P S`` per task row;
  decoder ``Y </s>``.
- causal, ``prefix_side="decoder"`` (default; one pass per question): the question
  ``Q = [bos] S <sep>`` once, then every task's ``P Y </s>`` in the same row:
  ``Q[:-1] | Q[-1] P_1 Y_1 </s> | ... | Q[-1] P_k Y_k </s>``. ``segment_ids`` (0 question,
  j target j, -1 padding) give the block mask (a target sees the question and itself),
  ``position_ids`` restart at ``len(Q) - 1`` for every target block, so each target is
  computed exactly as in its own sequence ``Q P_j Y_j </s>``. The last question token is
  repeated at the head of each block because its logits predict that task's first token
  (needed when a prefix is empty). ``labels`` are already aligned with the logits
  (``labels[i]`` is the token predicted at ``i``), ``label_target`` names the target row of
  each label (-1: none). Rows of a separate pass: ``Q P_j Y_j </s>``.
- causal, ``prefix_side="encoder"`` (the layout of students saved before the one-pass
  step): ``[bos] P S <sep> Y </s>`` per task row.
  In both causal layouts the prompt is masked out of the loss (labels -100), so the student
  is not trained to reproduce questions.

Truncation is honoured and COUNTED: a source longer than its budget keeps its first
tokens (``format_source`` puts the context last, so a long abstract loses its tail); a
target longer than ``max_target_length`` keeps its first tokens and loses its ``</s>``
(so the student is not taught to stop mid-sentence). With ``truncation="error"`` the
first over-length row raises :class:`TruncationError` naming task, example, lengths and
the fix. Counts travel with the batch (``num_truncated_inputs`` / ``_targets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tinyllm_ray.config.student import DEFAULT_CAUSAL_SEPARATOR
from tinyllm_ray.errors import TruncationError

__all__ = [
    "CAUSAL_SEPARATOR",
    "IGNORE_INDEX",
    "CollateSpec",
    "PromptEncoder",
    "TaskCollator",
    "TruncationError",
    "batch_to_groups",
    "encode_prompt",
    "encode_target",
    "length_stats",
    "pack_one_pass",
]

IGNORE_INDEX = -100
#: Between a causal prompt and its target: marks where the answer starts for every task.
#: The default of ``student.causal_separator`` (owned by the config); ``CollateSpec`` and
#: the saved ``StudentFormat`` carry the value a student was trained with ('' = plain
#: prompt -> completion, the layout of bootstrapped teachers).
CAUSAL_SEPARATOR = DEFAULT_CAUSAL_SEPARATOR


@dataclass(frozen=True)
class CollateSpec:
    """Everything collation needs besides the tokenizer (picklable, built on the driver)."""

    arch: str  # "seq2seq" | "causal"
    task_names: tuple[str, ...]
    max_input_length: int
    max_target_length: int
    truncation: str = "count"  # "count" | "error"
    prefix_side: str = "decoder"  # "decoder" (question computed once) | "encoder" (prefix before it)
    causal_separator: str = CAUSAL_SEPARATOR  # causal only: between prompt and target

    def __post_init__(self) -> None:
        if self.arch not in ("seq2seq", "causal"):
            raise ValueError(f"arch must be 'seq2seq' or 'causal', got {self.arch!r}")
        if self.prefix_side not in ("encoder", "decoder"):
            raise ValueError(f"prefix_side must be 'encoder' or 'decoder', got {self.prefix_side!r}")
        if self.truncation not in ("count", "error"):
            raise ValueError(f"truncation must be 'count' or 'error', got {self.truncation!r}")

    @property
    def shares_encoder(self) -> bool:
        """True when every task of a group is decoded from one encoder pass."""
        return self.arch == "seq2seq" and self.prefix_side == "decoder"

    @property
    def one_pass(self) -> bool:
        """True for the causal layout that computes each question once for all its targets."""
        return self.arch == "causal" and self.prefix_side == "decoder"

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "task_names": list(self.task_names),
                "max_input_length": self.max_input_length, "max_target_length": self.max_target_length,
                "truncation": self.truncation, "prefix_side": self.prefix_side,
                "causal_separator": self.causal_separator}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollateSpec:
        return cls(arch=d["arch"], task_names=tuple(d["task_names"]),
                   max_input_length=int(d["max_input_length"]), max_target_length=int(d["max_target_length"]),
                   truncation=d.get("truncation", "count"), prefix_side=d.get("prefix_side", "decoder"),
                   causal_separator=d.get("causal_separator", CAUSAL_SEPARATOR))


class PromptEncoder:
    """A tokenizer plus the special tokens its post-processor adds around a text.

    Why: the prefix, the source and the target are tokenized separately (so the source can
    be truncated without cutting the prefix), then joined with the tokenizer's own special
    tokens (``<s>`` before for Llama, ``</s>`` after for T5, nothing for Qwen2), detected
    once from a probe string rather than hard-coded per family.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        probe = "probe text"
        full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
        plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        start = _find_sub(full, plain)
        if start < 0:  # pragma: no cover - exotic post-processors
            self.head, self.tail = [], []
        else:
            self.head, self.tail = full[:start], full[start + len(plain):]
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        if eos is None:
            raise ValueError("the student tokenizer has no eos_token; targets need one to stop generation")
        self.eos_id: int = int(eos)
        self.pad_id: int = int(pad if pad is not None else eos)

    def plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` without special tokens (one batched call)."""
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _find_sub(seq: list[int], sub: list[int]) -> int:
    n, m = len(seq), len(sub)
    for i in range(n - m + 1):
        if seq[i:i + m] == sub:
            return i
    return -1


def _fail(what: str, task: str, example: str, n: int, limit: int, field: str) -> TruncationError:
    return TruncationError(
        f"{what} of task {task!r} (example {example!r}) is {n} tokens, over student.{field}={limit}; "
        f"raise student.{field}, or set student.truncation: count to truncate such rows (counted)"
    )


def encode_prompt(
    enc: PromptEncoder,
    prefix_ids: list[int],
    source_ids: list[int],
    max_len: int,
    *,
    causal: bool,
    sep_ids: list[int] | None = None,
) -> tuple[list[int], int]:
    """Encoder input (seq2seq) or prompt (causal) ids; returns (ids, tokens cut from source).

    Layout ``head P S tail`` (seq2seq) or ``head P S sep`` (causal: no trailing ``</s>``
    before the answer). Only the source is cut (from the right); a prefix that alone does
    not fit is a configuration error.
    """
    fixed = len(enc.head) + len(prefix_ids) + (len(sep_ids or []) if causal else len(enc.tail))
    budget = max_len - fixed
    if budget < 1:
        raise ValueError(
            f"student.max_input_length={max_len} leaves no room for the source after the task prefix "
            f"and special tokens ({fixed} tokens); raise it"
        )
    cut = max(0, len(source_ids) - budget)
    src = source_ids[:budget]
    if causal:
        return enc.head + prefix_ids + src + list(sep_ids or []), cut
    return enc.head + prefix_ids + src + enc.tail, cut


def encode_target(enc: PromptEncoder, target_ids: list[int], max_len: int) -> tuple[list[int], int]:
    """Target ids ending in ``</s>``; when too long: the first ``max_len`` ids, no ``</s>``."""
    if len(target_ids) + 1 <= max_len:
        return target_ids + [enc.eos_id], 0
    return target_ids[:max_len], len(target_ids) + 1 - max_len


def batch_to_groups(batch: Any) -> list[dict[str, Any]]:
    """Ray Data numpy batch (dict of arrays) or a list of group dicts -> list of group dicts."""
    if isinstance(batch, list):
        return batch
    if isinstance(batch, Mapping):
        keys = list(batch.keys())
        n = len(batch[keys[0]]) if keys else 0
        return [{k: batch[k][i] for k in keys} for i in range(n)]
    if hasattr(batch, "to_dict"):  # pandas
        return batch.to_dict("records")
    raise TypeError(f"cannot collate a {type(batch).__name__}")


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(width, 1)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class TaskCollator:
    """Callable collate_fn: group rows -> tensors for one packed step (see module doc).

    Use as ``iterator.iter_torch_batches(collate_fn=TaskCollator(tokenizer, spec))``.
    """

    def __init__(self, tokenizer: Any, spec: CollateSpec, decoder_start_token_id: int | None = None) -> None:
        self.enc = tokenizer if isinstance(tokenizer, PromptEncoder) else PromptEncoder(tokenizer)
        self.spec = spec
        self.task_index = {n: i for i, n in enumerate(spec.task_names)}
        self.decoder_start = int(decoder_start_token_id if decoder_start_token_id is not None else self.enc.pad_id)
        sep = spec.causal_separator
        self.sep_ids = self.enc.plain([sep])[0] if spec.arch == "causal" and sep else []

    # -- shared by training and the length pre-flight
    def encode_groups(self, groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Token-level layout of a batch (python lists) plus truncation counts."""
        spec, enc = self.spec, self.enc
        sources = [str(g["source"]) for g in groups]
        prefixes = sorted({str(p) for g in groups for p in g["prefixes"]})
        targets = [str(t) for g in groups for t in g["targets"]]
        src_ids = dict(zip(sources, enc.plain(sources)))
        pre_ids = dict(zip(prefixes, enc.plain(prefixes)))
        tgt_ids = enc.plain(targets)
        causal = spec.arch == "causal"

        enc_rows: list[list[int]] = []  # seq2seq: encoder rows; causal one-pass: questions Q
        enc_index: dict[tuple[str, str], int] = {}
        dec_rows: list[list[int]] = []  # decoder content / causal target block P? Y </s>; else full row
        label_rows: list[list[int]] = []
        row_group: list[int] = []
        row_task: list[int] = []
        row_weight: list[float] = []
        cut_inputs = cut_targets = 0
        k = 0
        for g in groups:
            source = str(g["source"])
            ex = str(g.get("example_id", g.get("group", "")))
            for task, prefix, weight in zip(g["tasks"], g["prefixes"], g["weights"]):
                task, prefix = str(task), str(prefix)
                if task not in self.task_index:
                    raise KeyError(f"task {task!r} is not one of the planned tasks {list(spec.task_names)}")
                y, ycut = encode_target(enc, tgt_ids[k], spec.max_target_length)
                k += 1
                if ycut:
                    if spec.truncation == "error":
                        raise _fail("target", task, ex, len(y) + ycut, spec.max_target_length,
                                    "max_target_length")
                    cut_targets += 1
                p_ids = pre_ids[prefix]
                enc_prefix = [] if spec.prefix_side == "decoder" else p_ids
                key = (source, prefix if enc_prefix else "")
                if causal and not spec.one_pass:
                    prompt, xcut = encode_prompt(enc, p_ids, src_ids[source], spec.max_input_length,
                                                 causal=True, sep_ids=self.sep_ids)
                    if xcut:
                        if spec.truncation == "error":
                            raise _fail("input", task, ex, len(prompt) + xcut, spec.max_input_length,
                                        "max_input_length")
                        cut_inputs += 1
                    dec_rows.append(prompt + y)
                    label_rows.append([IGNORE_INDEX] * len(prompt) + y)
                else:
                    if key not in enc_index:
                        ids, xcut = encode_prompt(enc, enc_prefix, src_ids[source], spec.max_input_length,
                                                  causal=causal, sep_ids=self.sep_ids)
                        if xcut:
                            if spec.truncation == "error":
                                raise _fail("input", task, ex, len(ids) + xcut, spec.max_input_length,
                                            "max_input_length")
                            cut_inputs += 1
                        enc_index[key] = len(enc_rows)
                        enc_rows.append(ids)
                    row_group.append(enc_index[key])
                    dec_prefix = [] if enc_prefix else p_ids
                    dec_rows.append(dec_prefix + y)
                    label_rows.append([IGNORE_INDEX] * len(dec_prefix) + y)
                row_task.append(self.task_index[task])
                row_weight.append(float(weight))
        return {
            "enc_rows": enc_rows, "dec_rows": dec_rows, "label_rows": label_rows, "row_group": row_group,
            "row_task": row_task, "row_weight": row_weight, "cut_inputs": cut_inputs, "cut_targets": cut_targets,
        }

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        groups = batch_to_groups(batch)
        lay = self.encode_groups(groups)
        out: dict[str, torch.Tensor] = {
            "row_task": torch.tensor(lay["row_task"], dtype=torch.long),
            "row_weight": torch.tensor(lay["row_weight"], dtype=torch.float32),
            "num_truncated_inputs": torch.tensor(lay["cut_inputs"], dtype=torch.long),
            "num_truncated_targets": torch.tensor(lay["cut_targets"], dtype=torch.long),
            "num_groups": torch.tensor(len(groups), dtype=torch.long),
        }
        pad = self.enc.pad_id
        if self.spec.one_pass:
            out.update(pack_one_pass(lay["enc_rows"], lay["dec_rows"], lay["label_rows"], lay["row_group"], pad))
            return out
        if self.spec.arch == "causal":
            ids = _pad(lay["dec_rows"], pad)
            out["input_ids"] = ids
            out["attention_mask"] = (_pad([[1] * len(r) for r in lay["dec_rows"]], 0))
            out["labels"] = _pad(lay["label_rows"], IGNORE_INDEX)
            return out
        out["input_ids"] = _pad(lay["enc_rows"], pad)
        out["attention_mask"] = _pad([[1] * len(r) for r in lay["enc_rows"]], 0)
        # decoder input = [start] + content[:-1]; labels = content with the prefix masked
        dec_in = [[self.decoder_start] + r[:-1] for r in lay["dec_rows"]]
        out["decoder_input_ids"] = _pad(dec_in, pad)
        out["decoder_attention_mask"] = _pad([[1] * len(r) for r in dec_in], 0)
        out["labels"] = _pad(lay["label_rows"], IGNORE_INDEX)
        out["row_group"] = torch.tensor(lay["row_group"], dtype=torch.long)
        return out


def pack_one_pass(
    questions: Sequence[list[int]],
    blocks: Sequence[list[int]],
    block_labels: Sequence[list[int]],
    row_group: Sequence[int],
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Questions + target blocks -> one row per question (causal one-pass layout, module doc).

    ``blocks[t]`` (``P Y </s>``) belongs to question ``row_group[t]``; ``block_labels[t]`` is
    its labels in input order (prefix -100). Returns padded ``input_ids``,
    ``attention_mask`` (1 = real token), ``position_ids``, ``segment_ids``, aligned
    ``labels``, ``label_target`` and ``row_group``.
    """
    per_row: list[list[int]] = [[] for _ in questions]
    for t, r in enumerate(row_group):
        per_row[r].append(t)
    ids_rows, pos_rows, seg_rows, lab_rows, tgt_rows = [], [], [], [], []
    for r, q in enumerate(questions):
        start = len(q) - 1
        ids, pos = list(q[:-1]), list(range(start))
        seg, lab, tgt = [0] * start, [IGNORE_INDEX] * start, [-1] * start
        for j, t in enumerate(per_row[r], start=1):
            block = [q[-1], *blocks[t]]
            aligned = [*block_labels[t], IGNORE_INDEX]  # label at i = the block's token i + 1
            ids += block
            pos += range(start, start + len(block))
            seg += [j] * len(block)
            lab += aligned
            tgt += [t if y != IGNORE_INDEX else -1 for y in aligned]
        ids_rows.append(ids)
        pos_rows.append(pos)
        seg_rows.append(seg)
        lab_rows.append(lab)
        tgt_rows.append(tgt)
    return {
        "input_ids": _pad(ids_rows, pad_id),
        "attention_mask": _pad([[1] * len(r) for r in ids_rows], 0),
        "position_ids": _pad(pos_rows, 0),
        "segment_ids": _pad(seg_rows, -1),
        "labels": _pad(lab_rows, IGNORE_INDEX),
        "label_target": _pad(tgt_rows, -1),
        "row_group": torch.tensor(list(row_group), dtype=torch.long),
    }


def length_stats(groups: Sequence[Mapping[str, Any]], collator: TaskCollator) -> dict[str, int]:
    """Counts for the pre-flight: rows, groups, truncated inputs/targets, longest lengths.

    Runs the exact training layout, so a pre-flight count equals what training will cut.
    With ``truncation == "error"`` it raises on the first over-length row, before any
    training worker starts.
    """
    lay = collator.encode_groups(groups)
    return {
        "groups": len(groups),
        "rows": len(lay["row_task"]),
        "truncated_inputs": int(lay["cut_inputs"]),
        "truncated_targets": int(lay["cut_targets"]),
        "max_input_tokens": max((len(r) for r in (lay["enc_rows"] or lay["dec_rows"])), default=0),
        "max_decoder_tokens": max((len(r) for r in lay["dec_rows"]), default=0),
    }

"""Answer-only generation on a split -> normalised exact-match accuracy.

Why answer-only: TinyLLM and Mind's Mirror use rationales only as training signal; at
test time the student gets the answer prefix and generates the answer text. The input
layout comes from the student's ``tinyllm_student.json`` (written when it was saved), so
a student is evaluated exactly as it was trained; scoring and :class:`EvalResult` are
:mod:`tinyllm_ray.evaluate`'s (shared with teacher evaluation: normalised text, letter
forms accepted).

``eval.mode: rank`` (or ``both``) also scores multiple-choice questions by the most likely
choice (:mod:`tinyllm_ray.student.rank`), reported apart from free generation.

Used in two places: inside training workers (validation accuracy every
``train.eval_every_steps``; each rank scores a slice and the counts are summed), and by
``tinyllm-ray eval --model PATH --split test`` through :func:`evaluate_student`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyllm_ray.evaluate import EvalResult, require_choices, score_generations, select_eval_records
from tinyllm_ray.student.answer_prompt import AnswerPrompt

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.model import StudentFormat

log = logging.getLogger(__name__)

__all__ = ["EvalResult", "evaluate_records", "evaluate_student", "generate_answers", "rank_records"]


def generate_answers(
    model: Any,
    tokenizer: Any,
    records: Sequence[MCQRecord],
    fmt: StudentFormat,
    *,
    max_new_tokens: int,
    batch_size: int,
    num_batches: int | None = None,
    synced_gpus: bool = False,
    device: Any = None,
) -> tuple[list[str], int]:
    """Greedy answer-task generations for ``records`` and the number of truncated inputs.

    ``num_batches`` > needed pads with repeats of the last record (their outputs are
    dropped): under ZeRO-3 every rank must call ``generate`` equally often, since each
    forward gathers parameters collectively (``synced_gpus`` keeps ranks in step inside
    one call).
    """
    import torch

    layout = AnswerPrompt.of(model, tokenizer, fmt)
    penc, causal, dec_prefix, start = layout.penc, layout.causal, layout.dec_prefix, layout.start
    device = device or next(model.parameters()).device

    outs: list[str] = []
    truncated = 0
    n = len(records)
    needed = (n + batch_size - 1) // batch_size
    total_batches = max(needed, num_batches or 0)
    was_training = model.training
    model.eval()
    try:
        for b in range(total_batches):
            chunk = list(records[b * batch_size:(b + 1) * batch_size])
            real = len(chunk)
            if real == 0:  # padding batch for collective lock-step
                chunk = [records[-1]] if n else []
            if not chunk:
                continue
            prompts = []
            for ids, cut in layout.encode(chunk):
                truncated += int(cut > 0) if b < needed else 0
                prompts.append(ids + dec_prefix if causal else ids)
            width = max(len(p) for p in prompts)
            pad = penc.pad_id
            if causal:  # left padding so every prompt ends where generation starts
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            else:
                ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
                mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device), "attention_mask": mask.to(device), "max_new_tokens": max_new_tokens,
                "do_sample": False, "num_beams": 1, "pad_token_id": pad, "eos_token_id": penc.eos_id,
            }
            if synced_gpus:
                kwargs["synced_gpus"] = True
            if not causal:
                dec = torch.tensor([[start] + dec_prefix] * len(chunk))
                kwargs["decoder_input_ids"] = dec.to(device)
            with torch.no_grad():
                gen = model.generate(**kwargs)
            skip = width if causal else 1 + len(dec_prefix)
            texts = tokenizer.batch_decode(gen[:, skip:].cpu(), skip_special_tokens=True)
            outs.extend(t.strip() for t in texts[:real])
    finally:
        model.train(was_training)
    return outs[:n], truncated


def evaluate_records(
    model: Any,
    tokenizer: Any,
    records: Sequence[MCQRecord],
    fmt: StudentFormat,
    *,
    max_new_tokens: int,
    batch_size: int,
    num_batches: int | None = None,
    synced_gpus: bool = False,
    keep_predictions: int = 0,
    partial: bool = False,
) -> EvalResult:
    """Generate and score; ``correct``/``total`` can be summed across ranks.

    ``partial=True``: ``records`` is one rank's slice of a distributed validation (it may
    be empty: the rank still generates in lock-step); otherwise zero records raise
    :class:`~tinyllm_ray.errors.EmptyEvaluationError`.
    """
    t0 = time.perf_counter()
    gens, truncated = generate_answers(model, tokenizer, records, fmt, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, num_batches=num_batches, synced_gpus=synced_gpus)
    return score_generations(records, gens, keep_predictions=keep_predictions, partial=partial,
                             truncated_inputs=truncated, seconds=time.perf_counter() - t0)


def rank_records(
    model: Any,
    tokenizer: Any,
    records: Sequence[MCQRecord],
    fmt: StudentFormat,
    *,
    batch_size: int,
    keep_predictions: int = 0,
) -> EvalResult:
    """Score the most likely choice of each record (:mod:`tinyllm_ray.student.rank`) by the same rules.

    The prediction is a choice's text, so :func:`~tinyllm_ray.evaluate.score_generations`
    reads it as is; kept predictions carry each choice's log-probability under ``scores``.
    """
    from tinyllm_ray.student.rank import rank_choices

    require_choices(records, "eval.mode rank")
    t0 = time.perf_counter()
    chosen, scores, truncated = rank_choices(model, tokenizer, records, fmt, batch_size=batch_size)
    res = score_generations(records, chosen, read=lambda text, _choices: text, keep_predictions=keep_predictions,
                            truncated_inputs=truncated, seconds=time.perf_counter() - t0)
    for p, s in zip(res.predictions, scores):
        p["scores"] = [round(x, 4) for x in s]
    res.mode = "rank"
    return res


def evaluate_student(
    cfg: JobConfig,
    model_path: str,
    split: str | None = None,
    *,
    limit: int | None = None,
    keep_predictions: int = 20,
) -> EvalResult:
    """Evaluate a saved student folder on ``split`` (default ``cfg.eval.split``) in-process.

    The layout comes from the folder's ``tinyllm_student.json``; a plain HF folder (no
    such file) is read with the layout ``cfg.student`` describes. Limits: ``limit`` or
    ``cfg.eval.limit`` rows (first rows of the split, deterministic).
    """
    import torch

    from tinyllm_ray.student.model import (
        StudentFormat,
        detect_arch,
        load_student,
        read_student_format,
        resolve_student_path,
    )

    split = split or cfg.eval.split
    path = model_path
    if model_path == "tiny":
        path = resolve_student_path(cfg.student)
    fmt = read_student_format(path)
    if fmt is None:
        arch = detect_arch(path, cfg.student.arch, cfg.student.trust_remote_code)
        fmt = StudentFormat.from_config(cfg, arch)
        log.info("%s has no tinyllm_student.json; using the layout of cfg.student (%s)", path, arch)
    records = select_eval_records(cfg.data, split, limit or cfg.eval.limit)  # only these rows are read
    mode = cfg.eval.mode
    if mode != "generate":
        require_choices(records, f"split {split!r}")  # before the model is loaded
    model, tok = load_student(path, fmt.arch, trust_remote_code=cfg.student.trust_remote_code)
    if torch.cuda.is_available():
        model = model.cuda()
    ranked = None
    if mode != "generate":
        ranked = rank_records(model, tok, records, fmt, batch_size=cfg.eval.batch_size,
                              keep_predictions=keep_predictions)
        ranked.split, ranked.model = split, str(path)
    if mode == "rank":
        assert ranked is not None
        return ranked
    res = evaluate_records(model, tok, records, fmt, max_new_tokens=cfg.eval.max_new_tokens,
                           batch_size=cfg.eval.batch_size, keep_predictions=keep_predictions)
    res.split, res.model, res.rank = split, str(path), ranked
    return res

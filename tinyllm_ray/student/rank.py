"""Multiple-choice evaluation by likelihood: which choice would the student most likely write?

Why beside free generation (``eval.mode: rank`` or ``both``): a small student often knows
the answer but writes it in a form no reader accepts, or runs on; generation accuracy then
mixes "does not know" with "cannot say it". Ranking asks only the first: the score of a
choice is log p(choice text, then end-of-sequence | the answer prompt), exactly the
sequence the student is trained to emit for its answer task, in the layout it was trained
with (``tinyllm_student.json``: prefix side, separator, lengths). The end token makes it
the probability of writing *this* choice and stopping, so a choice that is a prefix of
another ("Paris" / "Paris, Texas") is not favoured; greedy generation approximates the
argmax of the same quantity, which is why the two numbers are comparable.

Pure torch + tokenizer, no Ray: unit-tested with a tiny local model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyllm_ray.student.answer_prompt import AnswerPrompt
from tinyllm_ray.student.collate import encode_target

if TYPE_CHECKING:
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.model import StudentFormat

__all__ = ["choice_logprobs", "rank_choices"]


def choice_logprobs(
    model: Any, tokenizer: Any, records: Sequence[MCQRecord], fmt: StudentFormat, *, batch_size: int,
    device: Any = None,
) -> tuple[list[list[float]], int]:
    """Per record, the summed log-probability of each choice's target; and the number of truncated inputs.

    (record, choice) pairs are scored ``batch_size`` at a time, right-padded: padding sits
    after every scored token, so a pair's score does not depend on its batch.
    """
    import torch

    layout = AnswerPrompt.of(model, tokenizer, fmt)
    penc, causal, dec_prefix, start = layout.penc, layout.causal, layout.dec_prefix, layout.start
    device = device or next(model.parameters()).device

    encoded = layout.encode(records)
    prompts = [ids for ids, _ in encoded]
    truncated = sum(int(cut > 0) for _, cut in encoded)
    targets = [[encode_target(penc, ids, fmt.max_target_length)[0] for ids in penc.plain(list(r.choices))]
               for r in records]
    pairs = [(i, j) for i, r in enumerate(records) for j in range(len(r.choices))]
    scores: list[list[float]] = [[0.0] * len(r.choices) for r in records]
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b:b + batch_size]
            if causal:
                seqs = [prompts[i] + dec_prefix + targets[i][j] for i, j in chunk]
                first = [len(prompts[i]) + len(dec_prefix) for i, _ in chunk]  # first scored position
                ids, mask = _right_pad(seqs, penc.pad_id, torch)
                with torch.no_grad():
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                # token t is predicted by the logits at t - 1
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                gold = ids[:, 1:].to(logp.device)
                offsets = [f - 1 for f in first]
            else:
                enc, enc_mask = _right_pad([prompts[i] for i, _ in chunk], penc.pad_id, torch)
                labels = [dec_prefix + targets[i][j] for i, j in chunk]
                dec, _ = _right_pad([[start] + lab[:-1] for lab in labels], penc.pad_id, torch)
                with torch.no_grad():
                    logits = model(input_ids=enc.to(device), attention_mask=enc_mask.to(device),
                                   decoder_input_ids=dec.to(device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                gold, _ = _right_pad(labels, penc.pad_id, torch)
                gold = gold.to(logp.device)
                offsets = [len(dec_prefix)] * len(chunk)
            token_logp = logp.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
            for k, (i, j) in enumerate(chunk):
                n = len(targets[i][j])
                scores[i][j] = float(token_logp[k, offsets[k]:offsets[k] + n].sum())
    finally:
        model.train(was_training)
    return scores, truncated


def rank_choices(
    model: Any, tokenizer: Any, records: Sequence[MCQRecord], fmt: StudentFormat, *, batch_size: int,
) -> tuple[list[str], list[list[float]], int]:
    """(the most likely choice's text per record, the scores, truncated inputs); ties go to the first choice."""
    scores, truncated = choice_logprobs(model, tokenizer, records, fmt, batch_size=batch_size)
    chosen = [r.choices[max(range(len(s)), key=s.__getitem__)] for r, s in zip(records, scores, strict=True)]
    return chosen, scores, truncated


def _right_pad(seqs: list[list[int]], pad: int, torch: Any) -> tuple[Any, Any]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask

"""The answer task's input at inference, laid out exactly as the student was trained.

Why one owner: free generation (:mod:`evaluate_model`) and choice ranking (:mod:`rank`)
must feed the student the same tokens its answer task saw in training — the prefix before
the question (``encoder`` side) or after it (``decoder`` side: in the decoder's start for
seq2seq, after ``question <sep>`` for causal), the same truncation and separator — or the
two accuracies would not be comparable with each other or with training. The layout comes
from the student's ``tinyllm_student.json`` (:class:`~tinyllm_ray.student.model.StudentFormat`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinyllm_ray.student.collate import PromptEncoder, encode_prompt
from tinyllm_ray.student.tasks import format_source

if TYPE_CHECKING:
    from tinyllm_ray.data.schema import MCQRecord
    from tinyllm_ray.student.model import StudentFormat


@dataclass(frozen=True)
class AnswerPrompt:
    """Token pieces of the answer prompt; :meth:`encode` builds each record's input ids."""

    penc: PromptEncoder
    causal: bool
    enc_prefix: list[int]  # before the question (prefix_side "encoder"), else []
    dec_prefix: list[int]  # after the question / in the decoder (prefix_side "decoder"), else []
    sep_ids: list[int]  # causal: between question and prefix
    start: int  # seq2seq: the decoder's start token
    max_input_length: int

    @classmethod
    def of(cls, model: Any, tokenizer: Any, fmt: StudentFormat) -> AnswerPrompt:
        penc = PromptEncoder(tokenizer)
        causal = fmt.arch == "causal"
        prefix_ids = penc.plain([fmt.answer_prefix])[0]
        sep_ids = penc.plain([fmt.causal_separator])[0] if causal and fmt.causal_separator else []
        enc_prefix = prefix_ids if fmt.prefix_side == "encoder" else []
        start = getattr(model.config, "decoder_start_token_id", None)
        return cls(penc=penc, causal=causal, enc_prefix=enc_prefix, dec_prefix=[] if enc_prefix else prefix_ids,
                   sep_ids=sep_ids, start=penc.pad_id if start is None else int(start),
                   max_input_length=fmt.max_input_length)

    def encode(self, records: Sequence[MCQRecord]) -> list[tuple[list[int], int]]:
        """Per record: (input ids without the decoder-side prefix, tokens cut by truncation)."""
        sources = self.penc.plain([format_source(r.question, r.choices, r.context) for r in records])
        return [encode_prompt(self.penc, self.enc_prefix, s, self.max_input_length, causal=self.causal,
                              sep_ids=self.sep_ids) for s in sources]

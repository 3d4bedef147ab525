"""Teacher prompts and the parsers that read teacher text back (pure functions).

Why one package for both directions: the parsers only work because the prompts fix the
shape of the text the teachers continue ("(a) text" options, a ``Q:`` block per example,
"Thus, the answer is (x) text." as the last sentence, "Verdict: ..." as the last line of a
self-evaluation). Keeping the format and its readers side by side keeps them in step:

* :mod:`~tinyllm_ray.prompts.templates`: the layout, the defaults it implies (CoT
  trigger, stop sequences, verdict words) and seeded in-context example sampling;
* :mod:`~tinyllm_ray.prompts.cleaning`: where useful teacher text ends (stops, echoes);
* :mod:`~tinyllm_ray.prompts.answers`: the final answer stated in a text;
* :mod:`~tinyllm_ray.prompts.verdicts`: a self-evaluation's verdict and critique.

Nothing here imports Ray, vLLM or torch, so every rule is unit-tested in milliseconds and
the same functions run inside teacher actors, in the filter, in evaluation and in
``benchmarks/parser_coverage.py`` (which measures them on real teacher outputs).
Import from this front door; the submodules are an implementation detail.
"""

from __future__ import annotations

from tinyllm_ray.prompts.answers import ParsedAnswer, normalize_number, parse_answer
from tinyllm_ray.prompts.cleaning import clean_rationale, cut_at_stop, is_degenerate, runon_index
from tinyllm_ray.prompts.templates import (
    DEFAULT_COT_TRIGGER,
    DEFAULT_STOPS,
    DEFAULT_VERDICTS,
    LETTERS,
    TEMPLATE_VERSION,
    answer_statement,
    cot_prompt,
    example_block,
    format_choices,
    letter,
    prompt_hash,
    question_block,
    sample_icl_examples,
    self_eval_prompt,
    teacher_forcing_prompt,
)
from tinyllm_ray.prompts.verdicts import ParsedVerdict, parse_verdict

__all__ = [
    "DEFAULT_COT_TRIGGER",
    "DEFAULT_STOPS",
    "DEFAULT_VERDICTS",
    "LETTERS",
    "TEMPLATE_VERSION",
    "ParsedAnswer",
    "ParsedVerdict",
    "answer_statement",
    "clean_rationale",
    "cot_prompt",
    "cut_at_stop",
    "example_block",
    "format_choices",
    "is_degenerate",
    "letter",
    "normalize_number",
    "parse_answer",
    "parse_verdict",
    "prompt_hash",
    "question_block",
    "runon_index",
    "sample_icl_examples",
    "self_eval_prompt",
    "teacher_forcing_prompt",
]

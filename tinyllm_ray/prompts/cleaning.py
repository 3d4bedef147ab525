"""Cutting and cleaning teacher text: where a useful rationale ends, and what is prompt echo.

Why separate from the answer parser: cleaning decides what is *stored* (the student's
target), parsing decides whether it is *kept*; they change for different reasons
(a new run-on pattern seen in real teacher text vs a new way of stating an answer).
The run-on markers come from ``benchmarks/parser_coverage.py`` on real teacher outputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tinyllm_ray.prompts.templates import DEFAULT_COT_TRIGGER, DEFAULT_STOPS

# Echoes and run-ons seen in real teacher text (benchmarks/parser_coverage.py): a new
# question block, the prompt's option list, markdown headings starting a new exercise,
# and the concatenation marker of the TinyLLM files ("llama rationale:").
_RUNON_RE = re.compile(
    r"""
      \n[ \t]*Q:                                             # next "Q:" block
    | (?im:^[ \t]*(?:\#+[ \t]*)?(?:question|options)[ \t]*:)  # "Question:", "### Question:", "Options:"
    | (?<=[.!?])[ \t]*(?:Question|Options)[ \t]*:            # "...step by step.Question:"
    | Answer[ \t]Choices:                                   # echoed option list
    | (?i:\b(?:llama|flan|t5|gpt|qwen|mistral|teacher)[\w.-]*[ \t]+rationale:)
    | (?m:^[ \t]*\#{1,6}[ \t])                               # markdown heading: a new exercise
    | (?m:^[ \t]*(?:Q\.?[ \t]?\d*[.:]|Comment:|Exercise:))     # "Q.36.", "Q15." forum/exercise dumps
    | \\(?:begin|end)\{(?:code|blockquote)\}                   # StackExchange markup (LLaMA-2 run-ons)
    """,
    re.VERBOSE,
)


def runon_index(text: str, stops: Sequence[str] = DEFAULT_STOPS) -> int | None:
    """Where the useful text ends: earliest stop sequence or echo/run-on marker, or None."""
    cuts = [i for s in stops if s and (i := text.find(s)) >= 0]
    m = _RUNON_RE.search(text)
    if m:
        cuts.append(m.start())
    return min(cuts) if cuts else None


def cut_at_stop(text: str, stops: Sequence[str] = DEFAULT_STOPS) -> str:
    """Cut at the earliest stop sequence or echoed-prompt marker, trim whitespace.

    vLLM already applies ``stops``; doing it again here is what makes the stored text
    independent of the engine (outputs generated without stops, or another backend) and
    also removes echoes the stop list does not cover (``Answer Choices:``, ``Options:``).
    """
    i = runon_index(text, stops)
    return (text if i is None else text[:i]).strip()


_LEADING_LABEL_RE = re.compile(r"^(?:A|Answer|Rationale|Explanation)\s*:\s*", re.IGNORECASE)


def clean_rationale(
    text: str, stops: Sequence[str] = DEFAULT_STOPS, cot_trigger: str = DEFAULT_COT_TRIGGER
) -> str:
    """A rationale fit to be a student target.

    Cuts run-ons (``cut_at_stop``), drops an echoed label ("Rationale:") or CoT trigger at
    the start (it is prompt text, not reasoning), removes immediately repeated lines (the
    degenerate loops LLaMA-2 falls into) and normalises blank lines. The answer sentence
    is kept: it is what ties the rationale to its label.
    """
    out = cut_at_stop(text, stops)
    for _ in range(2):  # "Rationale: Let's think step by step." -> both removed
        out = _LEADING_LABEL_RE.sub("", out, count=1)
        if cot_trigger and out.lower().startswith(cot_trigger.lower()):
            out = out[len(cot_trigger):].lstrip()
    out = cut_at_stop(out, stops)  # "step.Question: ..." -> a marker now at line start
    lines: list[str] = []
    for line in (ln.rstrip() for ln in out.splitlines()):
        if line and lines and line.strip() == lines[-1].strip():
            continue
        if not line and (not lines or not lines[-1]):
            continue
        lines.append(line)
    return "\n".join(lines).strip()


def is_degenerate(text: str) -> bool:
    """Whether a teacher output carries no reasoning at all: empty, or one thing repeated.

    Why a health check and not a filter: random or broken teachers write runs of one
    character (``"........"``) or one token (``"ll ll ll ll"``) until ``max_tokens``; the
    store keeps them unless a filter drops them, so the report must *say* so (issue: a run
    reported "kept 256, dropped 0" for 256 runs of dots). Counted per teacher in
    :class:`tinyllm_ray.store.stats.KindStats`; never used to drop a row.
    """
    body = "".join(text.split())
    if not body:
        return True
    if _REPEATED_UNIT_RE.match(body):  # "....", "llll", "abababab"
        return True
    words = text.split()
    return len(words) >= 4 and len(set(words)) == 1


#: A unit of 1-4 characters repeated at least four times, and nothing else.
_REPEATED_UNIT_RE = re.compile(r"^(.{1,4}?)\1{3,}$", re.DOTALL)

"""How the student sees a question: source text, self-evaluation input, group keys.

Why a module of its own: the same layout is used when training (``build.py``) and when
evaluating a saved student (``student/evaluate_model.py``), so a change to it must happen
in exactly one place. Pure: strings in, strings out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["format_source", "group_key", "self_eval_source"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _question_and_choices(question: str, choices: Sequence[str] | None) -> list[str]:
    from tinyllm_ray.prompts import format_choices  # pure module; same option layout as teachers

    parts = [f"Q: {_one_line(question)}"]
    if choices is not None and len(choices) > 0:
        parts.append(format_choices(list(choices)))
    return parts


def format_source(question: str, choices: Sequence[str] | None, context: str | None = None) -> str:
    """The student's view of a question (without task prefix), also used at evaluation.

    Layout: ``Q: ...`` then lettered options ``(a) ...`` (so letter answers are meaningful),
    then ``Context: ...`` LAST. Why last: inputs are truncated from the right when longer
    than ``student.max_input_length``; a long PubMedQA abstract should lose its tail, not
    the question or the options.
    """
    parts = _question_and_choices(question, choices)
    if context:
        parts.append(f"Context: {_one_line(context)}")
    return "\n".join(parts)


def self_eval_source(question: str, choices: Sequence[str] | None, context: str | None, rationale: str) -> str:
    """Mind's Mirror self-evaluation input: the question and the CoT to be judged.

    The reasoning goes before the context so that truncation cuts the context first.
    """
    parts = _question_and_choices(question, choices)
    parts.append(f"Proposed reasoning: {_one_line(rationale)}")
    if context:
        parts.append(f"Context: {_one_line(context)}")
    return "\n".join(parts)


def group_key(stage: int, source: str) -> str:
    """Rows sharing (stage, source) are decoded from one encoder pass."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]
    return f"{stage}:{digest}"

"""Benchmarks whose options carry labels and whose answer names one (``answerKey``, ``label``).

OpenBookQA, ARC, RiddleSense and CommonsenseQA share one layout (``choices{text,label}``
plus ``answerKey``); PIQA is the two-option variant with an integer label. Why grouped:
they differ only in where the question text sits, so the choice/answer reading is one
function (:func:`_lettered`) and a fix to label handling (ARC's mixed ``A``/``1`` keys)
reaches all of them.

========================  ===============================================================
``obqa``                  ``allenai/openbookqa``: id, question_stem, choices{text,label},
                          answerKey; ``fact1`` (config ``additional``) becomes context
``arc``                   ``allenai/ai2_arc``: id, question, choices{text,label}, answerKey
                          (labels ``A``-``E`` or ``1``-``4``)
``piqa``                  ``ybisk/piqa``: goal, sol1, sol2, label (0/1; -1 = hidden)
``riddlesense``           ``INK-USC/riddle_sense``: question, choices{label,text}, answerKey
``commonsense_qa``        ``tau/commonsense_qa``: id, question, question_concept,
                          choices{label,text}, answerKey
========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinyllm_ray.data.adapters.fields import (
    Canonical,
    answer_by_key,
    canonical,
    first_present,
    index_answer,
    labelled_choices,
    require,
    row_id,
    text_field,
)


def _lettered(row: Mapping[str, Any], fallback_id: str, question: str, context: str | None = None) -> Canonical:
    """Choices from ``choices{text,label}``, the answer from ``answerKey`` (checked in that order)."""
    texts, labels = labelled_choices(require(row, "choices"))
    answer = answer_by_key(texts, labels, first_present(row, "answerKey"))
    return canonical(row_id(row, fallback_id, "id"), question, texts, answer, context)


def _nested_question(row: Mapping[str, Any], *names: str) -> str:
    """The question text; the original JSONL files nest it as ``{"stem", "choices"}``."""
    question = first_present(row, *names)
    if isinstance(question, Mapping):
        question = question.get("stem", "")
    return "" if question is None else str(question)


def adapt_obqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """OpenBookQA: ``question_stem`` + lettered choices; ``fact1`` (the open-book fact) as context."""
    context = first_present(row, "fact1")
    return _lettered(row, fallback_id, _nested_question(row, "question_stem", "question"),
                     None if context is None else str(context))


def adapt_arc(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """ARC Easy/Challenge: lettered or numbered choices, ``answerKey``."""
    return _lettered(row, fallback_id, text_field(row, "question"))


def adapt_riddlesense(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """RiddleSense (CommonsenseQA layout, no id column on the hub)."""
    return _lettered(row, fallback_id, text_field(row, "question"))


def adapt_commonsense_qa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """CommonsenseQA: five lettered choices; the test split has an empty ``answerKey``."""
    return _lettered(row, fallback_id, _nested_question(row, "question"))


def adapt_piqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """PIQA: a goal and two solutions; ``label`` is the index of the right one."""
    options = [text_field(row, "sol1"), text_field(row, "sol2")]
    answer = index_answer(options, first_present(row, "label"))
    return canonical(row_id(row, fallback_id, "id"), text_field(row, "goal"), options, answer, None)

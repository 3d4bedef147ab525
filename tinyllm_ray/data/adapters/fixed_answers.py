"""Tasks whose rows carry no options: the answer comes from a fixed word set or is a number.

PubMedQA (yes/no/maybe), BioASQ (yes/no) and ANLI (entailment/neutral/contradiction)
get their choices from the constants below, so every record of a task offers the same
options in the same order; SVAMP is free-form (``choices == ()``) with a normalised number
as the answer. Why together: none of them reads a ``choices`` column.

========================  ===============================================================
``pubmedqa``              ``qiaojin/PubMedQA`` pqa_labeled: pubid, question,
                          context{contexts}, final_decision -> choices yes/no/maybe
``bioasq``                yes/no questions: id, body|question, exact_answer|answer,
                          snippets[{text}]|context
``svamp``                 ``ChilleD/SVAMP``: ID, Body, Question, Equation, Answer (free-form)
``anli``                  ``facebook/anli``: uid, premise, hypothesis, label 0/1/2
========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinyllm_ray.data.adapters.fields import (
    Canonical,
    answer_field,
    canonical,
    first_present,
    index_answer,
    join_context,
    numeric_answer,
    row_id,
    text_field,
    yes_no,
)
from tinyllm_ray.data.schema import REASON_EMPTY_QUESTION, REASON_NOT_YESNO, RowError

YES_NO_MAYBE: tuple[str, ...] = ("yes", "no", "maybe")
YES_NO: tuple[str, ...] = ("yes", "no")
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")


def adapt_pubmedqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """PubMedQA pqa_labeled: the abstract's passages become the context, choices yes/no/maybe."""
    answer = yes_no(answer_field(row, "final_decision", "answer"), YES_NO_MAYBE, "final_decision")
    context = join_context(first_present(row, "context", "contexts"))
    return canonical(row_id(row, fallback_id, "pubid", "id"), text_field(row, "question"),
                      YES_NO_MAYBE, answer, context)


def adapt_bioasq(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """BioASQ yes/no: ``body`` (or ``question``), ``exact_answer`` (or ``answer``), snippets as context.

    Rows of another BioASQ type (factoid, list, summary) are rejected as ``not_yesno``.
    """
    qtype = first_present(row, "type")
    if qtype is not None and str(qtype).strip().lower() not in ("yesno", "yes_no", "yes/no"):
        raise RowError(REASON_NOT_YESNO, f"question type is {qtype!r}, only yes/no questions are used")
    answer = yes_no(answer_field(row, "exact_answer", "answer"), YES_NO, "exact_answer")
    context = join_context(first_present(row, "snippets", "context"))
    return canonical(row_id(row, fallback_id, "id"), text_field(row, "body", "question"), YES_NO, answer, context)


def adapt_svamp(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """SVAMP: free-form arithmetic; the story (``Body``) and ``Question`` form one question."""
    body = first_present(row, "Body", "body")
    question = text_field(row, "Question", "question").strip()
    if body is not None:
        body_text = str(body).strip()
        question = f"{body_text} {question}" if body_text else question
    answer = numeric_answer(answer_field(row, "Answer", "answer"), "Answer")
    return canonical(row_id(row, fallback_id, "ID", "id"), question, (), answer, None)


_NLI_ALIASES = {"e": 0, "n": 1, "c": 2, "entailment": 0, "neutral": 1, "contradiction": 2}


def adapt_anli(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """ANLI: premise + hypothesis folded into one question; label 0/1/2 (or e/n/c) -> word.

    Why fold the premise into the question rather than ``context``: the pair *is* the
    question, and a prompt that drops or truncates context must not lose half of it.
    """
    premise, hypothesis = text_field(row, "premise", "context").strip(), text_field(row, "hypothesis").strip()
    if not premise or not hypothesis:
        raise RowError(REASON_EMPTY_QUESTION, "premise or hypothesis is empty")
    label = first_present(row, "label")
    if isinstance(label, str) and label.strip().lower() in _NLI_ALIASES:
        label = _NLI_ALIASES[label.strip().lower()]
    answer = index_answer(NLI_LABELS, label)
    question = (
        f"Premise: {premise}\nHypothesis: {hypothesis}\n"
        "Does the premise entail the hypothesis, contradict it, or neither (neutral)?"
    )
    return canonical(row_id(row, fallback_id, "uid", "id"), question, NLI_LABELS, answer, None)

"""Adapters for files in a layout rather than a public schema: TinyLLM's processed splits
and any file whose columns ``data.columns`` names (``data.name: generic``).

Why separate from the public schemas: these read whatever a user or a paper's release
wrote, so they accept more spellings of the same thing (choices as lists, structs or CSV
strings; answers as text, letter, label or index) and leave the final judgement
(``answer_not_in_choices``) to the record check.

========================  ===============================================================
``tinyllm``               TinyLLM's processed files: id, question, choices[text], answer
``generic``               any file, columns named by ``data.columns`` (:class:`ColumnMap`)
========================  ===============================================================
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tinyllm_ray.data.adapters.fields import (
    AdapterFn,
    Canonical,
    answer_field,
    as_text_list,
    canonical,
    first_present,
    join_context,
    labelled_choices,
    numeric_answer,
    require,
    row_id,
    text_field,
)
from tinyllm_ray.data.schema import REASON_BAD_LABEL, REASON_NO_ANSWER, RowError

if TYPE_CHECKING:
    from tinyllm_ray.config import ColumnMap


def adapt_tinyllm(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """TinyLLM's processed splits: choices are texts, ``answer`` is the right text."""
    choices = as_text_list(require(row, "choices"))
    context = first_present(row, "context")
    return canonical(row_id(row, fallback_id, "id"), text_field(row, "question"), choices,
                      str(answer_field(row, "answer")), None if context is None else str(context))


def _generic_answer(choices: list[str], labels: list[str] | None, raw: Any) -> str:
    """Answer text from a text, a letter (``B``/``b``), a label, or a 0-based int index.

    Text wins when it is literally one of the choices (so a choice ``"A"`` is not read as
    a letter); only real integers are indices (a string ``"2"`` is a text or a label).
    """
    if isinstance(raw, bool):
        raw = str(raw)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if hasattr(raw, "item") and not isinstance(raw, str):  # numpy scalar
        raw = raw.item()
    if isinstance(raw, int):
        if not 0 <= raw < len(choices):
            raise RowError(REASON_BAD_LABEL, f"answer index {raw} is outside 0..{len(choices) - 1}")
        return choices[raw]
    text = str(raw).strip()
    if text in (c.strip() for c in choices):
        return text
    if labels is not None and text in labels:
        return choices[labels.index(text)]
    if len(text) == 1 and text.upper() in string.ascii_uppercase:
        pos = string.ascii_uppercase.index(text.upper())
        if pos < len(choices):
            return choices[pos]
    return text  # left as is: the record check reports answer_not_in_choices with the texts


def make_generic_adapter(columns: ColumnMap) -> AdapterFn:
    """Adapter for any local file whose columns are named by ``data.columns``.

    ``columns.choices = None`` makes a free-form numeric task (:func:`numeric_answer`: a
    number, or a worked solution ending in ``#### <number>``).
    """

    def adapt_generic(row: Mapping[str, Any], fallback_id: str) -> Canonical:
        ident = fallback_id if columns.id is None else row_id(row, fallback_id, columns.id)
        question = text_field(row, columns.question)
        raw_answer = first_present(row, columns.answer)
        if raw_answer is None:
            raise RowError(REASON_NO_ANSWER, f"answer column {columns.answer!r} is empty")
        context = None
        if columns.context is not None:
            value = first_present(row, columns.context)
            context = None if value is None else join_context(value)
        if columns.choices is None:
            return canonical(ident, question, (), numeric_answer(raw_answer, f"answer column {columns.answer!r}"),
                             context)
        raw_choices = require(row, columns.choices)
        labels: list[str] | None = None
        if isinstance(raw_choices, Mapping):
            choices, labels = labelled_choices(raw_choices)
        else:
            choices = as_text_list(raw_choices)
        return canonical(ident, question, choices, _generic_answer(choices, labels, raw_answer), context)

    return adapt_generic

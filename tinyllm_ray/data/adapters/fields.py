"""Reading fields out of raw rows: the vocabulary every adapter is written in.

Why shared helpers: nine schemas spell "missing" (None, NaN from CSV, blank), "choices"
(HF ``{text, label}`` structs, lists of dicts, CSV strings) and "answer" (letters, 1-based
digits, integer labels, yes/no words) in overlapping ways; each rule is written once here
and every adapter reports a bad row with the same :class:`RowError` reasons.
"""

from __future__ import annotations

import ast
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tinyllm_ray.data.schema import (
    REASON_BAD_CHOICES,
    REASON_BAD_LABEL,
    REASON_MISSING_FIELD,
    REASON_NO_ANSWER,
    REASON_NOT_A_NUMBER,
    RowError,
)
from tinyllm_ray.prompts.answers import format_number, normalize_number

Canonical = dict[str, Any]
AdapterFn = Callable[[Mapping[str, Any], str], Canonical]


def is_missing(value: Any) -> bool:
    """None, NaN (pandas/CSV empty cells) or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def first_present(row: Mapping[str, Any], *names: str) -> Any:
    """First present, non-missing value among ``names`` (schemas vary in spelling)."""
    for name in names:
        if name in row and not is_missing(row[name]):
            return row[name]
    return None


def require(row: Mapping[str, Any], *names: str) -> Any:
    """Like :func:`first_present`, but a structural field that is absent makes the row malformed."""
    value = first_present(row, *names)
    if value is None:
        alts = " or ".join(repr(n) for n in names)
        raise RowError(REASON_MISSING_FIELD, f"field {alts} is missing or empty")
    return value


def text_field(row: Mapping[str, Any], *names: str) -> str:
    """A text field, ``""`` when absent: the record check then names the real problem
    (``empty_question``, ``empty_choice``) instead of a generic missing field."""
    value = first_present(row, *names)
    return "" if value is None else str(value)


def answer_field(row: Mapping[str, Any], *names: str) -> Any:
    """The gold-answer field; absent or empty means the row has no answer (e.g. a hidden test label)."""
    value = first_present(row, *names)
    if value is None:
        raise RowError(REASON_NO_ANSWER, f"answer field {' or '.join(repr(n) for n in names)} is missing or empty")
    return value


def row_id(row: Mapping[str, Any], fallback_id: str, *names: str) -> str:
    """The row's own id, else the loader's ``<split>-<n>`` (PIQA and RiddleSense have none)."""
    value = first_present(row, *names)
    return fallback_id if value is None else str(value).strip()


def _cell_list(value: Any, what: str) -> list[Any]:
    """A list inside a choices struct (numpy arrays too); anything else is a ``bad_choices`` row."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise RowError(REASON_BAD_CHOICES, f"{what} must be a list, got {type(value).__name__}")
    return list(value)


def labelled_choices(raw: Any) -> tuple[list[str], list[str]]:
    """``{"text": [...], "label": [...]}`` (HF layout) or a list of ``{"text", "label"}``
    dicts (the original OpenBookQA/CSQA JSONL layout) -> (texts, labels)."""
    if isinstance(raw, Mapping):
        texts, labels = raw.get("text"), raw.get("label")
        if texts is None:
            raise RowError(REASON_BAD_CHOICES, f"choices has no 'text' list (keys: {sorted(raw)})")
        texts = [str(t) for t in _cell_list(texts, "choices.text")]
        labels = ([str(lab) for lab in _cell_list(labels, "choices.label")] if labels is not None
                  else list(string.ascii_uppercase[: len(texts)]))
    elif isinstance(raw, Sequence) and not isinstance(raw, str) and all(isinstance(c, Mapping) for c in raw):
        texts = [str(c.get("text", "")) for c in raw]
        labels = [str(c.get("label", string.ascii_uppercase[i])) for i, c in enumerate(raw)]
    else:
        raise RowError(REASON_BAD_CHOICES, f"expected choices {{text: [...], label: [...]}}, got {type(raw).__name__}")
    if len(labels) != len(texts):
        raise RowError(REASON_BAD_CHOICES, f"{len(texts)} choice texts but {len(labels)} labels")
    return texts, labels


def answer_by_key(texts: list[str], labels: list[str], key: Any) -> str:
    """Text of the choice whose label is ``key``.

    ARC mixes label styles (``A``-``E`` and ``1``-``4``); a key in the other style than its
    labels (``'B'`` with labels ``1..4``) is mapped by position rather than rejected.
    """
    if is_missing(key):
        raise RowError(REASON_NO_ANSWER, "answerKey is empty (unlabelled test row?)")
    k = str(key).strip()
    if k in labels:
        return texts[labels.index(k)]
    upper = k.upper()
    if upper in labels:
        return texts[labels.index(upper)]
    pos: int | None = None
    if len(upper) == 1 and upper in string.ascii_uppercase:
        pos = string.ascii_uppercase.index(upper)
    elif k.isdecimal():  # not isdigit: "²" is a digit that int() refuses
        pos = int(k) - 1
    if pos is not None and 0 <= pos < len(texts) and all(lab.isdigit() != k.isdigit() for lab in labels):
        return texts[pos]
    raise RowError(REASON_BAD_LABEL, f"answerKey {k!r} is not one of the labels {labels}")


def index_answer(options: Sequence[str], label: Any, what: str = "label") -> str:
    """Choice text for an integer label (``-1`` or empty = hidden test label)."""
    if is_missing(label):
        raise RowError(REASON_NO_ANSWER, f"{what} is empty (unlabelled test row?)")
    try:
        idx = int(label)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        raise RowError(REASON_BAD_LABEL, f"{what} {label!r} is not an integer index") from None
    if idx == -1:
        raise RowError(REASON_NO_ANSWER, f"{what} is -1 (hidden test label)")
    if not 0 <= idx < len(options):
        raise RowError(REASON_BAD_LABEL, f"{what} {idx} is outside 0..{len(options) - 1}")
    return str(options[idx])


def join_context(raw: Any) -> str | None:
    """Passages (list of str, list of ``{"text"}`` dicts, or one string) -> one string."""
    if is_missing(raw):
        return None
    if isinstance(raw, str):
        return raw.strip() or None
    if isinstance(raw, Mapping):
        for key in ("contexts", "text", "passages"):
            if key in raw:
                return join_context(raw[key])
        return None
    if isinstance(raw, bytes) or not isinstance(raw, Iterable):  # a number or a flag: its text
        return str(raw).strip() or None
    parts: list[str] = []
    for item in raw:
        text = item.get("text") if isinstance(item, Mapping) else item
        if not is_missing(text):
            parts.append(str(text).strip())
    return "\n".join(parts) or None


def normalise_number(value: Any) -> str:
    """Numeric answer -> canonical text: ``12.0 -> '12'``, ``'2.50' -> '2.5'``, ``'1,000' -> '1000'``.

    Why: SVAMP stores answers as floats, models write ``12``; comparing canonical strings
    makes exact match fair. Non-numeric text is returned stripped, unchanged.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    text = str(value).strip().replace(",", "")
    try:
        x = float(text)
    except ValueError:
        return str(value).strip()
    if math.isnan(x) or math.isinf(x):
        return str(value).strip()
    return format_number(x)


#: GSM8K ends each worked solution with ``#### <number>``: the number after it is the answer.
FINAL_ANSWER_MARK = "####"
_NUMBER_CELL_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def numeric_answer(value: Any, what: str = "answer") -> str:
    """The gold answer of a free-form task as the canonical number text, or a ``not_a_number`` row.

    Why strict: free-form predictions are parsed as numbers (``prompts.parse_answer``), so a
    gold ``"twelve"`` or ``"12 apples"`` could never be matched and would silently count
    every prediction wrong. Accepted: a number (``12``, ``12.0``, ``-3.5``, ``$1,200``) or a
    worked solution ending in ``#### 72`` (GSM8K's layout: the number after the last mark).
    """
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar (Parquet)
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return format_number(value)
    text = "" if isinstance(value, bool) else str(value).strip()
    if FINAL_ANSWER_MARK in text:
        text = text.rsplit(FINAL_ANSWER_MARK, 1)[1].strip()
    number = normalize_number(text) if _NUMBER_CELL_RE.fullmatch(text) else None
    if number is None:
        shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."
        raise RowError(REASON_NOT_A_NUMBER, f"{what} {shown!r} is not a number, and a free-form task compares "
                       "numbers (write 12, not twelve; a worked solution must end in '#### 12')")
    return number


def yes_no(value: Any, allowed: tuple[str, ...], what: str) -> str:
    """A yes/no(/maybe) answer, lower-cased; a one-item list (BioASQ's ``exact_answer``) is unwrapped."""
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise RowError(REASON_BAD_LABEL, f"{what} {value!r} is not a single yes/no answer")
        value = value[0]
    text = str(value).strip().lower()
    if text not in allowed:
        raise RowError(REASON_BAD_LABEL, f"{what} {value!r} is not one of {list(allowed)}")
    return text


def canonical(ident: str, question: str, choices: Sequence[str], answer: str, context: str | None) -> Canonical:
    """The one dict shape every adapter returns (``MCQRecord.from_dict`` reads it)."""
    return {"id": ident, "question": question, "choices": list(choices), "answer": answer, "context": context}


def as_text_list(raw: Any) -> list[str]:
    """A choices cell -> list of texts.

    Accepts a list (JSON, Parquet), an HF ``{text, label}`` struct, or a string holding a
    JSON list or a Python list literal (what ``pandas.to_csv`` writes for a list cell) —
    CSV has no list type, so this is how choices survive a CSV round trip.
    """
    if isinstance(raw, Mapping) or (
        isinstance(raw, Sequence) and not isinstance(raw, str) and raw and all(isinstance(c, Mapping) for c in raw)
    ):
        return labelled_choices(raw)[0]
    if isinstance(raw, str):
        text = raw.strip()
        parsed: Any = None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deeply
                try:
                    parsed = ast.literal_eval(text)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    parsed = None
        if not isinstance(parsed, list):
            raise RowError(
                REASON_BAD_CHOICES,
                f"choices cell {raw[:80]!r} is not a list; in CSV write it as a JSON list like '[\"a\", \"b\"]'",
            )
        raw = parsed
    if hasattr(raw, "tolist"):  # numpy arrays from pandas/pyarrow
        raw = raw.tolist()
    if not isinstance(raw, Sequence):
        raise RowError(REASON_BAD_CHOICES, f"choices must be a list, got {type(raw).__name__}")
    return ["" if is_missing(c) else str(c) for c in raw]

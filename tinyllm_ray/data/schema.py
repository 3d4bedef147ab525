"""The one canonical example every stage sees: :class:`MCQRecord`.

Why one record type: nine public datasets spell the same thing nine ways (``answerKey``
letters, integer labels, yes/no decisions, numeric answers). Adapters translate each
spelling once, here it is checked once, and prompts, teachers, the rationale store and
the student never look at a raw row again.

A record is valid by construction (``__post_init__`` checks it), so code that receives an
``MCQRecord`` never re-validates. Problems are reported as :class:`RowError` with a short
machine-readable ``reason`` (counted when ``data.on_malformed: skip``); the loader adds the
file and row and re-raises :class:`MalformedRowError`.

Pure on purpose: no ray, no datasets, so it imports in microseconds inside any worker.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.errors import MalformedRowError  # noqa: F401 (re-exported)

# Reasons a row is rejected. Stable strings: they are keys of ``LoadedData.skipped`` and
# show up in logs and benchmark reports.
REASON_MISSING_FIELD = "missing_field"
REASON_EMPTY_QUESTION = "empty_question"
REASON_NO_ANSWER = "no_answer"
REASON_ANSWER_NOT_IN_CHOICES = "answer_not_in_choices"
REASON_TOO_FEW_CHOICES = "too_few_choices"
REASON_EMPTY_CHOICE = "empty_choice"
REASON_BAD_CHOICES = "bad_choices"
REASON_BAD_LABEL = "bad_label"
REASON_NOT_YESNO = "not_yesno"
REASON_INVALID_JSON = "invalid_json"
REASON_DUPLICATE_ID = "duplicate_id"
REASON_NOT_A_NUMBER = "not_a_number"
REASON_INVALID_TEXT = "invalid_text"

REASONS: tuple[str, ...] = (
    REASON_MISSING_FIELD,
    REASON_EMPTY_QUESTION,
    REASON_NO_ANSWER,
    REASON_ANSWER_NOT_IN_CHOICES,
    REASON_TOO_FEW_CHOICES,
    REASON_EMPTY_CHOICE,
    REASON_BAD_CHOICES,
    REASON_BAD_LABEL,
    REASON_NOT_YESNO,
    REASON_INVALID_JSON,
    REASON_DUPLICATE_ID,
    REASON_NOT_A_NUMBER,
    REASON_INVALID_TEXT,
)


class RowError(ValueError):
    """One row cannot become a record; ``reason`` is one of :data:`REASONS`.

    Raised by adapters and by :class:`MCQRecord` itself; it knows nothing about files
    (the loader adds where the row came from).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def choice_letters(n: int, lowercase: bool = False) -> tuple[str, ...]:
    """Letters labelling ``n`` choices: ``('A', 'B', ...)`` (TinyLLM prompts use ``(a)``)."""
    if not 0 <= n <= 26:
        raise ValueError(f"can label 0..26 choices with letters, got {n}")
    alphabet = string.ascii_lowercase if lowercase else string.ascii_uppercase
    return tuple(alphabet[:n])


def _text(value: Any) -> str:
    """Canonical text: ``str`` with surrounding whitespace removed.

    Why strip: real files carry trailing spaces (PIQA ``"... bobby pin "``) on both the
    choice and the answer; comparing stripped texts keeps them equal while parsers that
    strip model output can still match the gold answer.
    """
    return "" if value is None else str(value).strip()


def record_problem(
    question: str, choices: Sequence[str], answer: str
) -> tuple[str, str] | None:
    """Why a (normalised) question/choices/answer triple is not a valid record, or None.

    ``choices == ()`` means a free-form task (SVAMP); one choice is never valid. Duplicate
    choice texts are allowed (a few real OpenBookQA rows have them); ``answer_index`` then
    points at the first occurrence.
    """
    if not question:
        return REASON_EMPTY_QUESTION, "question is empty"
    if not answer:
        return REASON_NO_ANSWER, "answer is empty"
    if len(choices) == 1:
        return REASON_TOO_FEW_CHOICES, f"a multiple-choice row needs >= 2 choices, got 1 ({choices[0]!r})"
    if any(not c for c in choices):
        return REASON_EMPTY_CHOICE, f"choice {next(i for i, c in enumerate(choices) if not c)} is empty"
    if choices and answer not in choices:
        return REASON_ANSWER_NOT_IN_CHOICES, f"answer {answer!r} is not one of the choices {list(choices)!r}"
    return None


def _unencodable(*texts: str) -> tuple[str, str] | None:
    """Why a text cannot be stored (a lone surrogate: invalid UTF-8 bytes, or a ``"\\ud800"`` escape).

    Why here: Parquet, tokenizers and JSON output all need UTF-8; a record that cannot be
    encoded would fail later, far from its file and line, inside a store writer.
    """
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])  # surrogateescape keeps an invalid byte b as U+DC00 + b
            shown = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
            return REASON_INVALID_TEXT, f"text is not valid UTF-8 ({shown} at character {exc.start})"
    return None


@dataclass(frozen=True, slots=True)
class MCQRecord:
    """One example: a question, its choices (``()`` when free-form) and the gold answer *text*.

    Fields are normalised on construction (ids become ``str``, texts are stripped, choices
    a tuple), then checked; an invalid record raises :class:`RowError`.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    context: str | None = None

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__ (once, at construction).
        ident = _text(self.id)
        if not ident:
            raise RowError(REASON_MISSING_FIELD, "id is empty")
        choices = self.choices
        if isinstance(choices, str | bytes) or not isinstance(choices, Iterable):
            raise RowError(REASON_BAD_CHOICES, f"choices must be a list of texts, got {type(choices).__name__}")
        norm_choices = tuple(_text(c) for c in choices)
        question, answer = _text(self.question), _text(self.answer)
        context = _text(self.context) or None
        object.__setattr__(self, "id", ident)
        object.__setattr__(self, "question", question)
        object.__setattr__(self, "choices", norm_choices)
        object.__setattr__(self, "answer", answer)
        object.__setattr__(self, "context", context)
        problem = record_problem(question, norm_choices, answer) or _unencodable(
            ident, question, *norm_choices, answer, context or "")
        if problem is not None:
            raise RowError(*problem)

    @property
    def is_free_form(self) -> bool:
        """True for tasks whose answer is a string to generate, not a choice (SVAMP)."""
        return not self.choices

    @property
    def answer_index(self) -> int | None:
        """Position of the answer among the choices (first match); None when free-form."""
        if not self.choices:
            return None
        return self.choices.index(self.answer)

    @property
    def answer_letter(self) -> str | None:
        """``'A'``-style letter of the answer; None when free-form."""
        idx = self.answer_index
        return None if idx is None else choice_letters(len(self.choices))[idx]

    def to_dict(self) -> dict[str, Any]:
        """A plain row for Ray Data / JSON / Parquet (``choices`` as a list)."""
        return {
            "id": self.id,
            "question": self.question,
            "choices": list(self.choices),
            "answer": self.answer,
            "context": self.context,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MCQRecord:
        """Inverse of :meth:`to_dict`; extra keys are ignored so store rows work too.

        ``choices`` may be any iterable (Ray Data hands numpy arrays), ``context`` may be
        absent; a missing required key raises :class:`RowError` naming it.
        """
        missing = [k for k in ("id", "question", "choices", "answer") if k not in d]
        if missing:
            raise RowError(REASON_MISSING_FIELD, f"missing key(s) {missing}; have {sorted(d)}")
        choices = d["choices"]
        return cls(
            id=d["id"],
            question=d["question"],
            choices=() if choices is None else tuple(choices),
            answer=d["answer"],
            context=d.get("context"),
        )


def records_to_dicts(records: Iterable[MCQRecord]) -> list[dict[str, Any]]:
    """Rows for ``ray.data.from_items``."""
    return [r.to_dict() for r in records]


def records_from_dicts(rows: Iterable[Mapping[str, Any]]) -> list[MCQRecord]:
    """Records back from rows (e.g. ``ray.data.Dataset.take_all()``)."""
    return [MCQRecord.from_dict(r) for r in rows]

"""Answer-only evaluation: read the student's answer, score normalised exact match.

The student is trained to emit the gold answer *text* after the answer prefix
(``student.answer_prefix``, ``predict:``), and is evaluated the same way (TinyLLM
inference uses only the answer task). The original TinyLLM code compared raw strings;
here both sides are normalised (SQuAD-style) and letter forms are accepted, so a
correct "(b)" or "Marsh." is not scored wrong for formatting.

What ``extract_prediction`` accepts, in this order (first hit wins):

1. the exact text of a choice (case and surrounding whitespace ignored);
2. a letter: ``b``, ``B``, ``(b)``, ``b)``, ``b.``, ``(b) <text of b>``;
3. an explicit 1-based index with a keyword: ``option 2``, ``choice 2`` (-> the 2nd
   choice). A **bare number is never an index**: choices are often numbers themselves
   ("4", "10 cm"), and the student is trained on text, so "2" means the text "2";
4. the normalised text of a choice (``normalize_answer``: case, punctuation, articles);
5. anything ``prompts.parse_answer`` finds ("the answer is (b)", "Answer: a marsh").

Free-form records (``choices == ()``, e.g. SVAMP) are scored on numbers: the prediction
is the last number of the generation (or of its answer statement), normalised, so
"12", "12.0" and "$12" all equal the gold "12".

This module is the one owner of *scoring* for students and teachers alike:
:func:`score_generations` (prediction extraction + exact match + kept predictions) and
its :class:`EvalResult`, :func:`select_eval_records` (which rows are scored) and
:func:`require_records` (the one place an empty evaluation becomes
:class:`~tinyllm_ray.errors.EmptyEvaluationError`). Only pure functions live here; the
generations come from the student (``student/evaluate_model.py``, torch) or a teacher
(``teachers/evaluate_teacher.py``, vLLM).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyllm_ray.errors import DataError, EmptyEvaluationError
from tinyllm_ray.prompts import LETTERS, normalize_number, parse_answer

if TYPE_CHECKING:
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.loader import LoadedData
    from tinyllm_ray.data.schema import MCQRecord

__all__ = [
    "EvalResult",
    "accuracy",
    "exact_match",
    "extract_prediction",
    "format_predictions",
    "normalize_answer",
    "require_choices",
    "require_records",
    "score_generations",
    "select_eval_records",
]

_PUNCT = set(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_NUMERIC_RE = re.compile(r"^\s*-?\$?\d[\d,]*(?:\.\d+)?\s*$")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, squeeze spaces.

    Exception: a string that is just a number is normalised as a number ('1,200.50' ->
    '1200.5'), because deleting its punctuation would turn '12.5' into '125'.
    """
    if _NUMERIC_RE.match(s):
        num = normalize_number(s)
        if num is not None:
            return num
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


_LETTER_FORM_RE = re.compile(r"^\(?([a-zA-Z])(?:\)|\.|:)?(?:\s+(.*))?$", re.DOTALL)
_INDEX_FORM_RE = re.compile(r"^(?:option|choice)\s*#?\s*(\d+)\.?$", re.IGNORECASE)


def _letter_form(text: str, choices: Sequence[str]) -> str | None:
    """'b', '(b)', 'b)', 'b.', '(b) <text of b>' -> text of choice b (else None).

    A letter followed by other text only counts when that text is the letter's own
    choice: "a marsh" must stay the text "a marsh", not the letter a.
    """
    m = _LETTER_FORM_RE.match(text)
    if not m:
        return None
    idx = LETTERS.index(m.group(1).lower())
    if idx >= len(choices):
        return None
    rest = m.group(2)
    if rest is None or normalize_answer(rest) == normalize_answer(choices[idx]):
        # a bare "a"/"A" with nothing after it is still the letter a
        return choices[idx]
    return None


def extract_prediction(generated: str, choices: Sequence[str]) -> str | None:
    """The choice text the student's generation names, or None (see module docstring).

    For free-form records (no choices) returns the normalised number, else the
    normalised text, else None for an empty generation.
    """
    text = (generated or "").strip()
    if not text:
        return None
    if not choices:
        parsed = parse_answer(text, ())
        return parsed.text if parsed else normalize_answer(text) or None
    low = text.lower()
    for c in choices:
        if low == c.strip().lower():
            return c
    by_letter = _letter_form(text, choices)
    if by_letter is not None:
        return by_letter
    m = _INDEX_FORM_RE.match(text)
    if m:
        i = int(m.group(1)) - 1
        return choices[i] if 0 <= i < len(choices) else None
    norm = normalize_answer(text)
    for c in choices:
        if norm and norm == normalize_answer(c):
            return c
    parsed = parse_answer(text, choices)
    return parsed.text if parsed else None


def exact_match(pred: str | None, record: MCQRecord) -> bool:
    """Normalised equality of a prediction (``extract_prediction``'s output) and gold.

    ``None`` (nothing recognisable) is wrong. Free-form golds compare as numbers when
    both sides hold one.
    """
    if pred is None:
        return False
    if not record.choices:
        gold_num = normalize_number(record.answer) if _NUMERIC_RE.match(record.answer) else None
        if gold_num is not None:
            return normalize_number(pred) == gold_num if _NUMERIC_RE.match(pred) else False
    return normalize_answer(pred) == normalize_answer(record.answer)


def require_records(records: Sequence[MCQRecord], what: str) -> None:
    """Raise :class:`EmptyEvaluationError` when ``records`` is empty: the one such check.

    Why one function: an accuracy over zero rows is not 0.0 (that would read as "the
    model is useless") nor NaN; students, teachers and ``accuracy`` all refuse it with
    the same message. ``what`` names the evaluation (e.g. ``"split 'test'"``).
    """
    if not records:
        raise EmptyEvaluationError(
            f"{what}: nothing to evaluate (zero records); check eval.limit and that the split has rows"
        )


def accuracy(preds: Sequence[str | None], records: Sequence[MCQRecord]) -> float:
    """Fraction of ``exact_match`` hits; lengths must agree (a silent zip would hide a
    dropped batch), and an empty evaluation is an error rather than 0.0 or NaN."""
    if len(preds) != len(records):
        raise ValueError(f"{len(preds)} predictions for {len(records)} records")
    require_records(records, "accuracy")
    return sum(exact_match(p, r) for p, r in zip(preds, records)) / len(records)


@dataclass
class EvalResult:
    """Accuracy on ``total`` records plus the raw generations (for error analysis).

    The same row shape for students and teachers, so a results table compares them
    directly. ``correct``/``total`` can be summed across ranks.
    """

    accuracy: float
    correct: int
    total: int
    split: str = ""
    model: str = ""
    truncated_inputs: int = 0
    seconds: float = 0.0
    predictions: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "generate"  # how predictions were made: generate, or rank (the most likely choice)
    rank: EvalResult | None = None  # eval.mode both: the ranked result, reported apart

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        d = {"accuracy": self.accuracy, "correct": self.correct, "total": self.total, "split": self.split,
             "model": self.model, "truncated_inputs": self.truncated_inputs, "seconds": round(self.seconds, 3)}
        if self.mode != "generate":
            d["mode"] = self.mode
        if self.rank is not None:
            d["rank"] = {k: v for k, v in self.rank.to_dict().items() if k not in ("split", "model")}
        if with_predictions:
            d["predictions"] = self.predictions
        return d


def score_generations(
    records: Sequence[MCQRecord],
    generations: Sequence[str | None],
    *,
    read: Callable[[str, Sequence[str]], str | None] = extract_prediction,
    keep_predictions: int | None = 20,
    partial: bool = False,
    split: str = "",
    model: str = "",
    seconds: float = 0.0,
    truncated_inputs: int = 0,
) -> EvalResult:
    """Score one generation per record: ``read`` (the prediction) then :func:`exact_match`.

    ``read`` is how a generation names its answer (students: :func:`extract_prediction`;
    teachers: their first-line reader). The first ``keep_predictions`` (None: all) rows
    of ``{"id", "generated", "prediction", "answer", "correct"}`` are kept.
    ``partial=True`` marks one rank's slice of a larger evaluation whose counts are
    summed: an empty slice is then fine (accuracy 0.0 of 0); otherwise zero records
    raise :class:`EmptyEvaluationError` (:func:`require_records`).
    """
    if len(generations) != len(records):
        raise ValueError(f"{len(generations)} generations for {len(records)} records")
    if not partial:
        require_records(records, f"split {split!r}" if split else "evaluation")
    correct = 0
    preds: list[dict[str, Any]] = []
    for rec, gen in zip(records, generations):
        pred = read(gen or "", rec.choices)
        ok = exact_match(pred, rec)
        correct += int(ok)
        if keep_predictions is None or len(preds) < keep_predictions:
            preds.append({"id": rec.id, "generated": gen or "", "prediction": pred, "answer": rec.answer,
                          "correct": ok})
    total = len(records)
    return EvalResult(accuracy=correct / total if total else 0.0, correct=correct, total=total, split=split,
                      model=model, truncated_inputs=truncated_inputs, seconds=seconds, predictions=preds)


def require_choices(records: Sequence[MCQRecord], what: str) -> None:
    """Ranking needs choices: a free-form record (SVAMP, GSM8K) is a :class:`DataError` naming the fix."""
    free = sum(1 for r in records if not r.choices)
    if free:
        raise DataError(f"{what}: eval.mode rank/both ranks the choices of multiple-choice questions, but {free} of "
                        f"{len(records)} records are free-form (no choices); set eval.mode=generate")


def select_eval_records(data: LoadedData | DataConfig, split: str, limit: int | None) -> list[MCQRecord]:
    """The first ``limit`` rows of ``split`` (all when None): what student and teacher evals score.

    One function for both, so a teacher row and a student row of a results table are
    always computed on the same examples. ``data``: loaded splits, or a dataset's config,
    whose ``split`` is then read through ``data.loader.iter_split`` and only its first
    ``limit`` rows are held (a student's evaluation at the end of ``run`` must not load the
    train split it never scores). A missing split is the loader's
    :class:`~tinyllm_ray.errors.DataLoadError` (a ``DataError`` naming the splits it has);
    an empty selection is :class:`EmptyEvaluationError`.
    """
    import itertools

    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.loader import iter_split

    rows = iter_split(data, split) if isinstance(data, DataConfig) else iter(data.require(split))
    records = list(itertools.islice(rows, limit or None))
    require_records(records, f"split {split!r}")
    return records


def format_predictions(predictions: Sequence[dict[str, Any]], width: int = 60) -> str:
    """``eval --show N``: kept predictions beside their gold answers, one row each.

    Columns: ok (``+`` right, ``-`` wrong), id, gold answer, what the reader took as the
    prediction, and the start of the raw generation (newlines shown as ``⏎``), so a
    reader that misreads good text is told apart from a model that writes the wrong thing.
    """
    def cut(text: Any, n: int) -> str:
        t = "" if text is None else str(text).replace("\n", "⏎")
        return t if len(t) <= n else t[: n - 1] + "…"

    rows = [("ok", "id", "gold", "prediction", "generated")]
    rows += [("+" if p.get("correct") else "-", cut(p.get("id"), 24), cut(p.get("answer"), 16),
              cut(p.get("prediction") if p.get("prediction") is not None else "(none)", 16),
              cut(p.get("generated"), width)) for p in predictions]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(x) for x in lines))
    return "\n".join(lines)

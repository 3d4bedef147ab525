"""Adapters: one pure function per public dataset schema, raw row -> canonical dict.

Why pure functions over rows (not over files or ``datasets.Dataset`` objects): the same
row arrives from the hub, from a local JSON Lines/Parquet/CSV copy, or from a test, and
the translation must be identical in each case; a function of one ``Mapping`` is trivial
to test with a literal row copied from the dataset card.

Every adapter has the signature ``(row, fallback_id) -> {"id", "question", "choices",
"answer", "context"}`` where ``choices`` is a list of texts (``[]`` for free-form tasks)
and ``answer`` the *text* of the right choice. ``fallback_id`` is used when the schema has
no id column (PIQA, RiddleSense); the loader passes ``"<split>-<n>"`` so ids stay unique
across splits. An adapter raises :class:`~tinyllm_ray.data.schema.RowError` when a row
cannot be translated (label -1, unknown answerKey); record-level checks (empty question,
answer not among choices) happen when the loader builds the :class:`MCQRecord`.

Schemas (field names as in the public Hugging Face datasets):

========================  ===============================================================
``obqa``                  ``allenai/openbookqa``: id, question_stem, choices{text,label},
                          answerKey; ``fact1`` (config ``additional``) becomes context
``arc``                   ``allenai/ai2_arc``: id, question, choices{text,label}, answerKey
                          (labels ``A``-``E`` or ``1``-``4``)
``piqa``                  ``ybisk/piqa``: goal, sol1, sol2, label (0/1; -1 = hidden)
``riddlesense``           ``INK-USC/riddle_sense``: question, choices{label,text}, answerKey
``pubmedqa``              ``qiaojin/PubMedQA`` pqa_labeled: pubid, question,
                          context{contexts}, final_decision -> choices yes/no/maybe
``bioasq``                yes/no questions: id, body|question, exact_answer|answer,
                          snippets[{text}]|context
``commonsense_qa``        ``tau/commonsense_qa``: id, question, question_concept,
                          choices{label,text}, answerKey
``svamp``                 ``ChilleD/SVAMP``: ID, Body, Question, Equation, Answer (free-form)
``anli``                  ``facebook/anli``: uid, premise, hypothesis, label 0/1/2
``tinyllm``               TinyLLM's processed files: id, question, choices[text], answer
``generic``               any file, columns named by ``data.columns`` (:class:`ColumnMap`)
========================  ===============================================================
"""

from __future__ import annotations

import ast
import json
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.config import ColumnMap
from tinyllm_ray.data.schema import (
    REASON_BAD_CHOICES,
    REASON_BAD_LABEL,
    REASON_EMPTY_QUESTION,
    REASON_MISSING_FIELD,
    REASON_NO_ANSWER,
    REASON_NOT_YESNO,
    RowError,
)

Canonical = dict[str, Any]
AdapterFn = Callable[[Mapping[str, Any], str], Canonical]

YES_NO_MAYBE: tuple[str, ...] = ("yes", "no", "maybe")
YES_NO: tuple[str, ...] = ("yes", "no")
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")


# --------------------------------------------------------------------------- helpers


def is_missing(value: Any) -> bool:
    """None, NaN (pandas/CSV empty cells) or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _get(row: Mapping[str, Any], *names: str) -> Any:
    """First present, non-missing value among ``names`` (schemas vary in spelling)."""
    for name in names:
        if name in row and not is_missing(row[name]):
            return row[name]
    return None


def _require(row: Mapping[str, Any], *names: str) -> Any:
    value = _get(row, *names)
    if value is None:
        alts = " or ".join(repr(n) for n in names)
        raise RowError(REASON_MISSING_FIELD, f"field {alts} is missing or empty")
    return value


def _str(row: Mapping[str, Any], *names: str) -> str:
    """A text field, ``""`` when absent: the record check then names the real problem
    (``empty_question``, ``empty_choice``) instead of a generic missing field."""
    value = _get(row, *names)
    return "" if value is None else str(value)


def _answer_field(row: Mapping[str, Any], *names: str) -> Any:
    """The gold-answer field; absent or empty means the row has no answer (e.g. a hidden test label)."""
    value = _get(row, *names)
    if value is None:
        raise RowError(REASON_NO_ANSWER, f"answer field {' or '.join(repr(n) for n in names)} is missing or empty")
    return value


def _id(row: Mapping[str, Any], fallback_id: str, *names: str) -> str:
    value = _get(row, *names)
    return fallback_id if value is None else str(value).strip()


def _labelled_choices(raw: Any) -> tuple[list[str], list[str]]:
    """``{"text": [...], "label": [...]}`` (HF layout) or a list of ``{"text", "label"}``
    dicts (the original OpenBookQA/CSQA JSONL layout) -> (texts, labels)."""
    if isinstance(raw, Mapping):
        texts, labels = raw.get("text"), raw.get("label")
        if texts is None:
            raise RowError(REASON_BAD_CHOICES, f"choices has no 'text' list (keys: {sorted(raw)})")
        texts = [str(t) for t in texts]
        labels = [str(lab) for lab in labels] if labels is not None else list(string.ascii_uppercase[: len(texts)])
    elif isinstance(raw, Sequence) and not isinstance(raw, str) and all(isinstance(c, Mapping) for c in raw):
        texts = [str(c.get("text", "")) for c in raw]
        labels = [str(c.get("label", string.ascii_uppercase[i])) for i, c in enumerate(raw)]
    else:
        raise RowError(REASON_BAD_CHOICES, f"expected choices {{text: [...], label: [...]}}, got {type(raw).__name__}")
    if len(labels) != len(texts):
        raise RowError(REASON_BAD_CHOICES, f"{len(texts)} choice texts but {len(labels)} labels")
    return texts, labels


def _answer_by_key(texts: list[str], labels: list[str], key: Any) -> str:
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
    elif k.isdigit():
        pos = int(k) - 1
    if pos is not None and 0 <= pos < len(texts) and all(lab.isdigit() != k.isdigit() for lab in labels):
        return texts[pos]
    raise RowError(REASON_BAD_LABEL, f"answerKey {k!r} is not one of the labels {labels}")


def _index_answer(options: Sequence[str], label: Any, what: str = "label") -> str:
    """Choice text for an integer label (``-1`` or empty = hidden test label)."""
    if is_missing(label):
        raise RowError(REASON_NO_ANSWER, f"{what} is empty (unlabelled test row?)")
    try:
        idx = int(label)
    except (TypeError, ValueError):
        raise RowError(REASON_BAD_LABEL, f"{what} {label!r} is not an integer index") from None
    if idx == -1:
        raise RowError(REASON_NO_ANSWER, f"{what} is -1 (hidden test label)")
    if not 0 <= idx < len(options):
        raise RowError(REASON_BAD_LABEL, f"{what} {idx} is outside 0..{len(options) - 1}")
    return str(options[idx])


def _join_context(raw: Any) -> str | None:
    """Passages (list of str, list of ``{"text"}`` dicts, or one string) -> one string."""
    if is_missing(raw):
        return None
    if isinstance(raw, str):
        return raw.strip() or None
    if isinstance(raw, Mapping):
        for key in ("contexts", "text", "passages"):
            if key in raw:
                return _join_context(raw[key])
        return None
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
    if x.is_integer():
        return str(int(x))
    return f"{round(x, 6):.6f}".rstrip("0").rstrip(".")


def _yes_no(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise RowError(REASON_BAD_LABEL, f"{what} {value!r} is not a single yes/no answer")
        value = value[0]
    text = str(value).strip().lower()
    if text not in allowed:
        raise RowError(REASON_BAD_LABEL, f"{what} {value!r} is not one of {list(allowed)}")
    return text


def _canonical(ident: str, question: str, choices: Sequence[str], answer: str, context: str | None) -> Canonical:
    return {"id": ident, "question": question, "choices": list(choices), "answer": answer, "context": context}


# --------------------------------------------------------------------------- adapters


def adapt_obqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """OpenBookQA: ``question_stem`` + lettered choices; ``fact1`` (the open-book fact) as context."""
    texts, labels = _labelled_choices(_require(row, "choices"))
    question = _get(row, "question_stem", "question")
    if isinstance(question, Mapping):  # original JSONL nests {"stem", "choices"} under "question"
        question = question.get("stem", "")
    answer = _answer_by_key(texts, labels, _get(row, "answerKey"))
    context = _get(row, "fact1")
    return _canonical(_id(row, fallback_id, "id"), "" if question is None else str(question), texts, answer,
                      None if context is None else str(context))


def adapt_arc(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """ARC Easy/Challenge: lettered or numbered choices, ``answerKey``."""
    texts, labels = _labelled_choices(_require(row, "choices"))
    answer = _answer_by_key(texts, labels, _get(row, "answerKey"))
    return _canonical(_id(row, fallback_id, "id"), _str(row, "question"), texts, answer, None)


def adapt_piqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """PIQA: a goal and two solutions; ``label`` is the index of the right one."""
    options = [_str(row, "sol1"), _str(row, "sol2")]
    answer = _index_answer(options, _get(row, "label"))
    return _canonical(_id(row, fallback_id, "id"), _str(row, "goal"), options, answer, None)


def adapt_riddlesense(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """RiddleSense (CommonsenseQA layout, no id column on the hub)."""
    texts, labels = _labelled_choices(_require(row, "choices"))
    answer = _answer_by_key(texts, labels, _get(row, "answerKey"))
    return _canonical(_id(row, fallback_id, "id"), _str(row, "question"), texts, answer, None)


def adapt_commonsense_qa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """CommonsenseQA: five lettered choices; the test split has an empty ``answerKey``."""
    texts, labels = _labelled_choices(_require(row, "choices"))
    question = _get(row, "question")
    if isinstance(question, Mapping):  # original JSONL: {"question": {"stem", "choices"}}
        question = question.get("stem", "")
    answer = _answer_by_key(texts, labels, _get(row, "answerKey"))
    return _canonical(_id(row, fallback_id, "id"), "" if question is None else str(question), texts, answer, None)


def adapt_pubmedqa(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """PubMedQA pqa_labeled: the abstract's passages become the context, choices yes/no/maybe."""
    answer = _yes_no(_answer_field(row, "final_decision", "answer"), YES_NO_MAYBE, "final_decision")
    context = _join_context(_get(row, "context", "contexts"))
    return _canonical(_id(row, fallback_id, "pubid", "id"), _str(row, "question"),
                      YES_NO_MAYBE, answer, context)


def adapt_bioasq(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """BioASQ yes/no: ``body`` (or ``question``), ``exact_answer`` (or ``answer``), snippets as context.

    Rows of another BioASQ type (factoid, list, summary) are rejected as ``not_yesno``.
    """
    qtype = _get(row, "type")
    if qtype is not None and str(qtype).strip().lower() not in ("yesno", "yes_no", "yes/no"):
        raise RowError(REASON_NOT_YESNO, f"question type is {qtype!r}, only yes/no questions are used")
    answer = _yes_no(_answer_field(row, "exact_answer", "answer"), YES_NO, "exact_answer")
    context = _join_context(_get(row, "snippets", "context"))
    return _canonical(_id(row, fallback_id, "id"), _str(row, "body", "question"), YES_NO, answer, context)


def adapt_svamp(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """SVAMP: free-form arithmetic; the story (``Body``) and ``Question`` form one question."""
    body = _get(row, "Body", "body")
    question = _str(row, "Question", "question").strip()
    if body is not None:
        body_text = str(body).strip()
        question = f"{body_text} {question}" if body_text else question
    answer = normalise_number(_answer_field(row, "Answer", "answer"))
    return _canonical(_id(row, fallback_id, "ID", "id"), question, (), answer, None)


_NLI_ALIASES = {"e": 0, "n": 1, "c": 2, "entailment": 0, "neutral": 1, "contradiction": 2}


def adapt_anli(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """ANLI: premise + hypothesis folded into one question; label 0/1/2 (or e/n/c) -> word.

    Why fold the premise into the question rather than ``context``: the pair *is* the
    question, and a prompt that drops or truncates context must not lose half of it.
    """
    premise, hypothesis = _str(row, "premise", "context").strip(), _str(row, "hypothesis").strip()
    if not premise or not hypothesis:
        raise RowError(REASON_EMPTY_QUESTION, "premise or hypothesis is empty")
    label = _get(row, "label")
    if isinstance(label, str) and label.strip().lower() in _NLI_ALIASES:
        label = _NLI_ALIASES[label.strip().lower()]
    answer = _index_answer(NLI_LABELS, label)
    question = (
        f"Premise: {premise}\nHypothesis: {hypothesis}\n"
        "Does the premise entail the hypothesis, contradict it, or neither (neutral)?"
    )
    return _canonical(_id(row, fallback_id, "uid", "id"), question, NLI_LABELS, answer, None)


def adapt_tinyllm(row: Mapping[str, Any], fallback_id: str) -> Canonical:
    """TinyLLM's processed splits: choices are texts, ``answer`` is the right text."""
    choices = _as_text_list(_require(row, "choices"))
    context = _get(row, "context")
    return _canonical(_id(row, fallback_id, "id"), _str(row, "question"), choices,
                      str(_answer_field(row, "answer")), None if context is None else str(context))


def _as_text_list(raw: Any) -> list[str]:
    """A choices cell -> list of texts.

    Accepts a list (JSON, Parquet), an HF ``{text, label}`` struct, or a string holding a
    JSON list or a Python list literal (what ``pandas.to_csv`` writes for a list cell) —
    CSV has no list type, so this is how choices survive a CSV round trip.
    """
    if isinstance(raw, Mapping) or (
        isinstance(raw, Sequence) and not isinstance(raw, str) and raw and all(isinstance(c, Mapping) for c in raw)
    ):
        return _labelled_choices(raw)[0]
    if isinstance(raw, str):
        text = raw.strip()
        parsed: Any = None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                try:
                    parsed = ast.literal_eval(text)
                except (ValueError, SyntaxError):
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

    ``columns.choices = None`` makes a free-form task (answer text kept, numbers normalised).
    """

    def adapt_generic(row: Mapping[str, Any], fallback_id: str) -> Canonical:
        ident = fallback_id if columns.id is None else _id(row, fallback_id, columns.id)
        question = _str(row, columns.question)
        raw_answer = _get(row, columns.answer)
        if raw_answer is None:
            raise RowError(REASON_NO_ANSWER, f"answer column {columns.answer!r} is empty")
        context = None
        if columns.context is not None:
            value = _get(row, columns.context)
            context = None if value is None else _join_context(value)
        if columns.choices is None:
            return _canonical(ident, question, (), normalise_number(raw_answer), context)
        raw_choices = _require(row, columns.choices)
        labels: list[str] | None = None
        if isinstance(raw_choices, Mapping):
            choices, labels = _labelled_choices(raw_choices)
        else:
            choices = _as_text_list(raw_choices)
        return _canonical(ident, question, choices, _generic_answer(choices, labels, raw_answer), context)

    return adapt_generic


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetAdapter:
    """A named adapter plus what the loader needs to know about its schema.

    ``required`` lists column groups (any one name of a group must be present) so a file
    in the wrong layout fails once, up front, with its column names — not on every row.
    """

    name: str
    fn: AdapterFn
    required: tuple[tuple[str, ...], ...]
    free_form: bool = False
    hub: str | None = None  # usual hub name (for error messages and docs; data.path decides)
    hub_config: str | None = None
    default_split_names: dict[str, str] = field(default_factory=dict)

    def __call__(self, row: Mapping[str, Any], fallback_id: str) -> Canonical:
        return self.fn(row, fallback_id)

    def missing_columns(self, columns: Sequence[str]) -> list[str]:
        """Required groups not present in ``columns``, as ``'a|b'`` strings."""
        have = set(columns)
        return ["|".join(g) for g in self.required if not have.intersection(g)]


TINYLLM = DatasetAdapter("tinyllm", adapt_tinyllm, (("question",), ("choices",), ("answer",)))

ADAPTERS: dict[str, DatasetAdapter] = {
    a.name: a
    for a in (
        DatasetAdapter("obqa", adapt_obqa, (("question_stem", "question"), ("choices",), ("answerKey",)),
                       hub="allenai/openbookqa", hub_config="main"),
        DatasetAdapter("arc", adapt_arc, (("question",), ("choices",), ("answerKey",)),
                       hub="allenai/ai2_arc", hub_config="ARC-Challenge"),
        DatasetAdapter("piqa", adapt_piqa, (("goal",), ("sol1",), ("sol2",)), hub="ybisk/piqa"),
        DatasetAdapter("riddlesense", adapt_riddlesense, (("question",), ("choices",), ("answerKey",)),
                       hub="INK-USC/riddle_sense"),
        DatasetAdapter("pubmedqa", adapt_pubmedqa, (("question",), ("final_decision", "answer")),
                       hub="qiaojin/PubMedQA", hub_config="pqa_labeled"),
        DatasetAdapter("bioasq", adapt_bioasq, (("body", "question"), ("exact_answer", "answer"))),
        DatasetAdapter("commonsense_qa", adapt_commonsense_qa, (("question",), ("choices",), ("answerKey",)),
                       hub="tau/commonsense_qa"),
        DatasetAdapter("svamp", adapt_svamp, (("Question", "question"), ("Answer", "answer")),
                       free_form=True, hub="ChilleD/SVAMP"),
        DatasetAdapter("anli", adapt_anli, (("premise", "context"), ("hypothesis",), ("label",)),
                       hub="facebook/anli",
                       default_split_names={"train": "train_r1", "validation": "dev_r1", "test": "test_r1"}),
        TINYLLM,
    )
}


def get_adapter(name: str, columns: ColumnMap | None = None) -> DatasetAdapter:
    """The adapter for ``data.name``; ``generic`` is built from ``data.columns``."""
    if name == "generic":
        if columns is None:
            raise ValueError("data.name 'generic' needs data.columns (question/choices/answer column names)")
        required = tuple(
            (c,) for c in (columns.question, columns.choices, columns.answer) if c is not None
        )
        return DatasetAdapter("generic", make_generic_adapter(columns), required,
                              free_form=columns.choices is None)
    if name not in ADAPTERS:
        raise ValueError(f"no adapter for dataset {name!r}; known: {sorted([*ADAPTERS, 'generic', 'synthetic'])}")
    return ADAPTERS[name]

"""Reading the final answer out of model text (teachers, and the student at evaluation).

Why a rule list with names rather than one regex: teachers state answers in many ways
("Thus, the answer is (c) ...", "Answer: C", "(b) is correct", a bare "B"); each rule is
trusted differently and ``ParsedAnswer.how`` records which one fired, so coverage is
measured per rule on real teacher text (``benchmarks/parser_coverage.py``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from tinyllm_ray.prompts.templates import LETTERS, letter


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer read from model text.

    ``index``/``letter`` are None for free-form answers; ``text`` is the choice text (or
    the normalised number); ``how`` says which rule fired, so coverage can be reported by
    rule and a filter may trust some rules more than others.
    """

    index: int | None
    letter: str | None
    text: str
    how: str


# "the answer is", "correct option would be", "Answer:", "final answer =" ...
# "option"/"choice"/"statement" need a qualifier: "this option is out of the question" and
# "the first statement is true" are walks through the options, not answers.
_STATEMENT_RE = re.compile(
    r"""(?:\b(?:the\s+)?(?:(?:correct|right|final|best|most\s+likely|true)\s+)?answer(?:\s+key)?
         |\b(?:correct|right|final|best|most\s+likely|true|only)\s+(?:option|choice|statement))\s*
        (?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:)\s*:?""",
    re.IGNORECASE | re.VERBOSE,
)
# "(b) is correct", "option b is the right answer", "Option (d) is true."
_REVERSE_RE = re.compile(
    r"""(?:\b(?:option|choice|answer)\s+)?\(?\b([a-z])\)?\s+is\s+(?:the\s+)?(?:correct|right|best|true)\b""",
    re.IGNORECASE,
)
# "<text of a choice> is the correct answer."
_REVERSE_TEXT_RE = re.compile(
    r"""\s+is\s+(?:the\s+)?(?:correct|right|best)\s+(?:answer|option|choice)\b""", re.IGNORECASE
)
_CONCLUSION_RE = re.compile(
    r"(?:^|[.!?\n]\s*)(?:thus|therefore|so|hence|in conclusion|in summary|consequently)\b[^.!?\n]*",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})


_ARTICLES = frozenset({"a", "an", "the"})


def _norm(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, single spaces (SQuAD-like).

    Articles go so that "the answer is the marsh" still names the choice "a marsh".
    """
    return " ".join(w for w in text.lower().translate(_PUNCT_TABLE).split() if w not in _ARTICLES)


def normalize_number(text: str) -> str | None:
    """'$1,200.50' -> '1200.5', '12.0' -> '12'; None when ``text`` holds no number."""
    m = _NUMBER_RE.search(text)
    if not m:
        return None
    raw = m.group(0).replace("$", "").replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value):  # 400 digits overflow to inf: no number anyone can compare
        return None
    return format_number(value)


def format_number(value: float) -> str:
    """The one canonical text of a number: ``12.0 -> '12'``, ``2.50 -> '2.5'``, 6 decimals at most.

    Gold answers (dataset adapters) and predictions (parsers, evaluation) both go through
    it, so ``3.14159265`` written by a model equals a gold stored as ``3.141593``.
    """
    if abs(value) < 1e15 and value == int(value):  # this order: int() of inf or NaN raises
        return str(int(value))
    return f"{round(value, 6):.6f}".rstrip("0").rstrip(".")


def _choice_text_prefix(tail: str, choices: Sequence[str]) -> int | None:
    """Index of the longest choice whose text starts ``tail`` (word-bounded), if any."""
    t = _norm(tail)
    best: tuple[int, int] | None = None
    for i, c in enumerate(choices):
        nc = _norm(c)
        if nc and (t == nc or t.startswith(nc + " ")) and (best is None or len(nc) > best[1]):
            best = (i, len(nc))
    return None if best is None else best[0]


def _choice_text_suffix(head: str, choices: Sequence[str]) -> int | None:
    """Index of the longest choice whose text ends ``head`` (word-bounded), if any."""
    t = _norm(head)
    best: tuple[int, int] | None = None
    for i, c in enumerate(choices):
        nc = _norm(c)
        if nc and (t == nc or t.endswith(" " + nc)) and (best is None or len(nc) > best[1]):
            best = (i, len(nc))
    return None if best is None else best[0]


# "(b)", "b)", and "(b" at the very end (a generation cut by max_tokens)
_PAREN_LETTER_RE = re.compile(r"""^\(([a-z])(?:\)|\s*$)|^([a-z])\)""", re.IGNORECASE)
_QUOTED_LETTER_RE = re.compile(r"""^["'\[*]+([a-z])\.?["'\]*]+(?![a-z])""", re.IGNORECASE)
_BARE_LETTER_RE = re.compile(r"""^([a-z])(?=\s*$|[.,;:!?"')\]*]|\s+\S)""", re.IGNORECASE)
_OPTION_MARK_RE = re.compile(r"(?:^|\s)\(?([a-z])\)", re.IGNORECASE)
_TAIL_FILLER_RE = re.compile(r"""^(?:\s|\*|:|option\b|choice\b|letter\b)+""", re.IGNORECASE)


def _answer_from_tail(tail: str, choices: Sequence[str], next_line: bool = False) -> tuple[int, str] | None:
    """Read the answer that follows an answer statement: letter first, then text.

    Letter forms: "(c)", "c)", "'c'", "**C**", or a bare "c" not followed by a word
    (a bare "a" followed by a word is the article, as in "the answer is a marsh").
    ``next_line`` lets "Answer:\n(c)" through; it is off for "The third option is:\n(c)"
    because that is a model listing the options, not choosing one.
    """
    tail = tail.lstrip(" \t")
    if next_line:
        tail = tail.removeprefix("\n")
    tail = _TAIL_FILLER_RE.sub("", tail.split("\n", 1)[0])[:300]
    n = len(choices)
    for rx in (_PAREN_LETTER_RE, _QUOTED_LETTER_RE):
        m = rx.match(tail)
        if m:
            idx = LETTERS.index(next(g for g in m.groups() if g).lower())
            return (idx, "letter") if idx < n else None
    idx = _choice_text_prefix(tail, choices)
    if idx is not None:
        return idx, "text"
    m = _BARE_LETTER_RE.match(tail)
    if m:
        ch = m.group(1).lower()
        rest = tail[1:]
        if ch == "a" and re.match(r"\s+[A-Za-z]", rest):
            return None
        idx = LETTERS.index(ch)
        return (idx, "letter") if idx < n else None
    return None


_HYPOTHETICAL_RE = re.compile(r"\b(?:if|whether|unless|suppose|assume|assuming)\s*$", re.IGNORECASE)
_NEGATED_RE = re.compile(r"^\s*(?:not|never|neither|unclear|unknown)\b", re.IGNORECASE)


def _names_something(tail: str) -> bool:
    """A statement tail that asserts an answer we could not map (vs. empty/negated)."""
    first = tail.lstrip(" \t").split("\n", 1)[0]
    return bool(_norm(first)) and not _NEGATED_RE.match(first)


def _whole_text_answer(text: str, choices: Sequence[str]) -> tuple[int, str] | None:
    """The whole text is one answer: "(b)", "B", "b.", "(b) text" or exactly a choice."""
    t = text.strip().strip("*").strip()
    m = _PAREN_LETTER_RE.match(t)
    if m:
        idx = LETTERS.index((m.group(1) or m.group(2)).lower())
        rest = _norm(t[m.end():])
        if idx < len(choices) and (not rest or rest == _norm(choices[idx])):
            return idx, "letter_only"
        return None
    if re.fullmatch(r"[A-Za-z][.:]?", t):
        idx = LETTERS.index(t[0].lower())
        return (idx, "letter_only") if idx < len(choices) else None
    nt = _norm(t)
    for i, c in enumerate(choices):
        if nt and nt == _norm(c):
            return i, "text_only"
    return None


def _leading_letter(text: str, choices: Sequence[str]) -> tuple[int, str] | None:
    """FLAN-T5 style "(c) <choice text>. <reasoning>": letter and its own text agree.

    Not when another option is introduced later ("(a) ...\n(b) ..."): that is a walk
    through the options (LLaMA-2's habit), where the first one is not a choice.
    """
    t = text.strip()
    m = _PAREN_LETTER_RE.match(t)
    if not m:
        return None
    idx = LETTERS.index((m.group(1) or m.group(2)).lower())
    if idx >= len(choices) or _choice_text_prefix(t[m.end():], [choices[idx]]) != 0:
        return None
    others = {x.lower() for x in _OPTION_MARK_RE.findall(t[m.end():])} - {letter(idx)}
    return None if others else (idx, "leading_letter")


def _conclusion_text(text: str, choices: Sequence[str]) -> tuple[int, str] | None:
    """Last "Thus/So/Therefore ..." sentence naming exactly one choice's text.

    Short choices (yes/no/maybe, single letters) are excluded here: "no" or "yes" inside a
    sentence is not an answer, so they only count after an explicit answer statement.
    """
    for m in reversed(list(_CONCLUSION_RE.finditer(text))):
        sent = f" {_norm(m.group(0))} "
        hits = [i for i, c in enumerate(choices) if len(_norm(c)) >= 4 and f" {_norm(c)} " in sent]
        # a choice contained in a longer matched choice is not a separate hit
        hits = [i for i in hits if not any(j != i and _norm(choices[i]) in _norm(choices[j]) for j in hits)]
        if len(hits) == 1:
            return hits[0], "conclusion_text"
        if hits:
            return None  # the last conclusion is ambiguous: do not look further back
    return None


def _make(idx: int, choices: Sequence[str], how: str) -> ParsedAnswer:
    return ParsedAnswer(index=idx, letter=letter(idx), text=choices[idx], how=how)


#: Characters read after an answer statement (its tail is one line, capped at 300 after
#: filler) and before a reverse statement (its sentence): enough for any real answer, and it
#: keeps a megabyte of repeated statements linear instead of one slice of the text each.
_TAIL_WINDOW = 4000


def parse_answer(text: str, choices: Sequence[str]) -> ParsedAnswer | None:
    """The final answer stated in ``text``, or None.

    Rules, in order of trust (``how`` names the one that fired):

    1. ``statement_letter`` / ``statement_text``: the LAST explicit statement ("Thus, the
       answer is (c) ...", "Answer: C", "the correct option is b", "(b) is correct")
       whose answer is a valid letter or a choice's text. Last, because teachers often
       mention options (or restate an earlier guess) before concluding.
    2. ``letter_only`` / ``text_only``: the whole text is one answer ("(b)", "B",
       "(b) text", "a marsh"): what an answer-only student emits.
    3. ``leading_letter``: the text starts "(c) <text of c>" (FLAN-T5 habit).
    4. ``conclusion_text``: the last "Thus/So/Therefore ..." sentence names exactly one
       choice's text (choices of >= 4 characters only).

    Free-form tasks (``choices`` empty): the number in the last answer statement
    (``statement_number``), else the last number in the text (``last_number``),
    normalised by :func:`normalize_number`.
    """
    if not text or not text.strip():
        return None
    if not choices:
        return _parse_number(text)
    if len(choices) > len(LETTERS):
        raise ValueError(f"{len(choices)} choices cannot be lettered (max {len(LETTERS)})")

    # (position, index or None, how): index None = a final statement naming no choice
    candidates: list[tuple[int, int | None, str]] = []
    for m in _STATEMENT_RE.finditer(text):
        if _HYPOTHETICAL_RE.search(text[max(0, m.start() - 24): m.start()]):
            continue  # "If the answer is popliteus, then ..."
        tail = text[m.end(): m.end() + _TAIL_WINDOW]  # bounded: a slice per statement made long texts O(n^2)
        got = _answer_from_tail(tail, choices, next_line="answer" in m.group(0).lower())
        if got:
            candidates.append((m.start(), got[0], f"statement_{got[1]}"))
        elif _names_something(tail):
            candidates.append((m.start(), None, "unmapped"))
    for m in _REVERSE_RE.finditer(text):
        idx = LETTERS.index(m.group(1).lower())
        if idx < len(choices):
            candidates.append((m.start(), idx, "statement_letter"))
    for m in _REVERSE_TEXT_RE.finditer(text):
        sentence = re.split(r"[.!?\n]", text[max(0, m.start() - _TAIL_WINDOW): m.start()])[-1]
        idx = _choice_text_suffix(sentence, choices)
        if idx is not None:
            candidates.append((m.start(), idx, "statement_text"))
    if candidates:
        _, idx, how = max(candidates, key=lambda c: c[0])
        # The last statement decides: if it names something that is no choice ("the answer
        # is pH5 range"), an earlier statement is not a safe substitute.
        return None if idx is None else _make(idx, choices, how)
    for rule in (_whole_text_answer, _leading_letter, _conclusion_text):
        got = rule(text, choices)
        if got:
            return _make(got[0], choices, got[1])
    return None


def _parse_number(text: str) -> ParsedAnswer | None:
    """Free-form: number after the last answer statement, else the last number."""
    for m in reversed(list(_STATEMENT_RE.finditer(text))):
        num = normalize_number(text[m.end(): m.end() + 80].split("\n", 1)[0])
        if num is not None:
            return ParsedAnswer(index=None, letter=None, text=num, how="statement_number")
    nums = _NUMBER_RE.findall(text)
    if nums:
        num = normalize_number(nums[-1])
        if num is not None:
            return ParsedAnswer(index=None, letter=None, text=num, how="last_number")
    return None

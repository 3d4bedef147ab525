"""Teacher prompts and the parsers that read teacher text back (pure functions).

Why one module for both directions: the parsers only work because the prompts fix the
shape of the text the teachers continue ("(a) text" options, a ``Q:`` block per example,
"Thus, the answer is (x) text." as the last sentence, "Verdict: ..." as the last line of a
self-evaluation). Keeping the format and its reader side by side keeps them in step.

Nothing here imports Ray, vLLM or torch, so every rule is unit-tested in milliseconds and
the same functions run inside teacher actors, in the filter, in evaluation and in
``benchmarks/parser_coverage.py`` (which measures them on real teacher outputs).

Prompt layout (TinyLLM teacher forcing, one block per example, blank line between)::

    <instruction line>

    Q: <question>
    [Context: <abstract>]
    Answer Choices:
    (a) ...
    (b) ...
    Answer: (b) ...                      <- every in-context example shows its gold answer

    Q: <the question>
    [Context: ...]
    Answer Choices:
    ...
    Answer: (b) ...                      <- teacher forcing only; cot_prompt leaves it out
    Rationale: Let's think step by step.  <- the teacher continues from here

Every new block starts with ``"\\n\\nQ:"``, which is the first default stop sequence
(``SamplingConfig.stop``), so a teacher that starts inventing the next example is cut by
vLLM itself; ``cut_at_stop`` repeats that cut (and catches echoes such as
``Question:``/``Options:``/``Answer Choices:``) for text produced without stop sequences.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: keeps this module importable without the data package
    from tinyllm_ray.data.schema import MCQRecord

__all__ = [
    "DEFAULT_COT_TRIGGER",
    "DEFAULT_STOPS",
    "DEFAULT_VERDICTS",
    "LETTERS",
    "ParsedAnswer",
    "ParsedVerdict",
    "answer_statement",
    "clean_rationale",
    "cot_prompt",
    "cut_at_stop",
    "format_choices",
    "letter",
    "normalize_number",
    "parse_answer",
    "parse_verdict",
    "prompt_hash",
    "runon_index",
    "sample_icl_examples",
    "self_eval_prompt",
    "teacher_forcing_prompt",
]

DEFAULT_COT_TRIGGER = "Let's think step by step."
DEFAULT_STOPS: tuple[str, ...] = ("\n\nQ:", "\nQuestion:", "\n\n\n")  # = SamplingConfig.stop
DEFAULT_VERDICTS: tuple[str, ...] = ("correct", "wrong", "uncertain")
LETTERS = string.ascii_lowercase

# --------------------------------------------------------------------------- ICL sampling


def _rng_for(seed: int, question_id: str) -> random.Random:
    """An RNG keyed by (seed, question id) only.

    Why hash-based: Ray Data sends prompts to actors in any order and reruns resume half
    way, so the examples of a question must not depend on how many draws happened before.
    ``random.Random(str)`` would also work but is salted differently across Python
    versions for str seeds; sha256 bytes are stable everywhere.
    """
    digest = hashlib.sha256(f"{seed}\x00{question_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_icl_examples(
    pool: Sequence[MCQRecord], k: int, seed: int, exclude_id: str
) -> list[MCQRecord]:
    """``k`` distinct in-context examples for question ``exclude_id``, drawn from ``pool``.

    ``pool`` MUST be the training split: drawing from validation or test would put
    evaluation questions (with their gold answers) into teacher prompts, i.e. leak the
    labels the student is later scored on. Callers (the teacher pipeline) guarantee it.

    Deterministic per ``(seed, exclude_id)`` for a given pool order, independent of call
    order. The question itself is never returned (also when it appears in the pool), and
    no id is returned twice. When fewer than ``k`` other examples exist, all of them are
    returned (a tiny demo pool should not crash generation).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = len(pool)
    if k == 0 or n == 0:
        return []
    rng = _rng_for(seed, exclude_id)
    chosen: list[MCQRecord] = []
    seen_ids: set[str] = {exclude_id}
    tried: set[int] = set()
    # Rejection sampling keeps a draw O(k) for big pools (5k-question train splits x 5k
    # prompts); it stops early on pools where most indices are excluded or duplicated.
    max_tries = 8 * (k + 1)
    while len(chosen) < k and len(tried) < n and max_tries > 0:
        max_tries -= 1
        i = rng.randrange(n)
        if i in tried:
            continue
        tried.add(i)
        rec = pool[i]
        if rec.id in seen_ids:
            continue
        seen_ids.add(rec.id)
        chosen.append(rec)
    if len(chosen) < k:  # small/degenerate pool: fall back to a full seeded shuffle
        rest = [i for i in range(n) if i not in tried]
        rng.shuffle(rest)
        for i in rest:
            if len(chosen) == k:
                break
            rec = pool[i]
            if rec.id in seen_ids:
                continue
            seen_ids.add(rec.id)
            chosen.append(rec)
    return chosen


# --------------------------------------------------------------------------- rendering


def letter(index: int) -> str:
    """Option letter of a 0-based choice index: 0 -> 'a' (TinyLLM uses lowercase)."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"choice index {index} has no letter (at most {len(LETTERS)} choices)")
    return LETTERS[index]


def _one_line(text: str) -> str:
    """Collapse newlines inside a field so one field never looks like a new block."""
    return " ".join(text.split())


def format_choices(choices: Sequence[str]) -> str:
    """``Answer Choices:`` followed by one ``(a) text`` line per choice (TinyLLM layout)."""
    lines = ["Answer Choices:"]
    lines += [f"({letter(i)}) {_one_line(c)}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def answer_statement(record: MCQRecord) -> str:
    """The gold answer as "(b) text" (or the bare answer for free-form tasks)."""
    idx = record.answer_index
    if record.choices and idx is not None:
        return f"({letter(idx)}) {_one_line(record.choices[idx])}"
    return _one_line(record.answer)


def _question_block(record: MCQRecord) -> str:
    """Question, optional context and lettered options, without any answer.

    Why the context comes *after* the ``Q:`` line: every block must start with ``Q:`` so
    the stop sequence ``"\\n\\nQ:"`` catches a teacher that starts writing a new example.
    """
    parts = [f"Q: {_one_line(record.question)}"]
    if record.context:
        parts.append(f"Context: {_one_line(record.context)}")
    if record.choices:
        parts.append(format_choices(record.choices))
    return "\n".join(parts)


def _example_block(record: MCQRecord) -> str:
    return f"{_question_block(record)}\nAnswer: {answer_statement(record)}"


def _closing_hint(record: MCQRecord) -> str:
    return '"Thus, the answer is (x) <answer text>."' if record.choices else '"Thus, the answer is <number>."'


def _join_blocks(header: str, examples: Sequence[MCQRecord], final_block: str) -> str:
    blocks = [header, *(_example_block(e) for e in examples), final_block]
    return "\n\n".join(blocks)


def teacher_forcing_prompt(record: MCQRecord, examples: Sequence[MCQRecord], cot_trigger: str) -> str:
    """TinyLLM teacher forcing: the teacher sees the GOLD answer and explains it.

    In-context examples show question, options and gold answer (we have no gold
    rationales); the instruction fixes how the rationale must end so that
    ``parse_answer`` can check it and the student learns a consistent closing sentence.
    """
    header = (
        "Each question below is followed by its correct answer. For the last question, "
        "explain step by step why the given answer is correct, in a few sentences, and end "
        f"with {_closing_hint(record)}"
    )
    final = f"{_question_block(record)}\nAnswer: {answer_statement(record)}\nRationale: {cot_trigger}"
    return _join_blocks(header, examples, final)


def cot_prompt(record: MCQRecord, examples: Sequence[MCQRecord], cot_trigger: str) -> str:
    """Plain CoT (Mind's Mirror sampling): same layout, the question's answer withheld.

    The examples still show their own gold answers (they come from the train split); only
    the answer of the question being reasoned about is absent, so several sampled CoTs can
    disagree and the filter/self-evaluation has something to judge.
    """
    header = (
        "Answer the last question. Reason step by step in a few sentences, then end with "
        f"{_closing_hint(record)}"
    )
    final = f"{_question_block(record)}\nRationale: {cot_trigger}"
    return _join_blocks(header, examples, final)


def self_eval_prompt(record: MCQRecord, cot: str, verdicts: Sequence[str] = DEFAULT_VERDICTS) -> str:
    """Mind's Mirror self-evaluation: critique one CoT, then a single verdict line.

    The gold answer is NOT shown: the teacher must judge the reasoning itself, which is
    the signal the student later learns to reproduce without any label.
    """
    if len(verdicts) < 2:
        raise ValueError("self-evaluation needs at least two verdicts")
    options = ", ".join(f'"Verdict: {v}"' for v in verdicts)
    return (
        f"{_question_block(record)}\n"
        f"Proposed reasoning: {_one_line(cot)}\n\n"
        "Check the proposed reasoning step by step: are its facts true, does each step "
        "follow, and does its final answer answer the question? Write a short critique, "
        f"then end with exactly one line out of {options}.\n"
        "Critique:"
    )


def prompt_hash(text: str) -> str:
    """First 16 hex digits of sha256: identifies the exact prompt in the rationale store."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- cutting / cleaning

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


# --------------------------------------------------------------------------- answer parsing


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
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value).rstrip("0").rstrip(".")


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
        tail = text[m.end():]
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
        sentence = re.split(r"[.!?\n]", text[: m.start()])[-1]
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
        tail = text[m.end():].split("\n", 1)[0]
        num = normalize_number(tail[:80])
        if num is not None:
            return ParsedAnswer(index=None, letter=None, text=num, how="statement_number")
    nums = _NUMBER_RE.findall(text)
    if nums:
        num = normalize_number(nums[-1])
        if num is not None:
            return ParsedAnswer(index=None, letter=None, text=num, how="last_number")
    return None


# --------------------------------------------------------------------------- verdict parsing


@dataclass(frozen=True)
class ParsedVerdict:
    """A self-evaluation: the verdict (one of the configured words) and the critique."""

    verdict: str
    critique: str


# Common paraphrases, used only when their canonical verdict is in the configured set.
_VERDICT_SYNONYMS: dict[str, str] = {
    "incorrect": "wrong",
    "false": "wrong",
    "invalid": "wrong",
    "right": "correct",
    "true": "correct",
    "valid": "correct",
    "unsure": "uncertain",
    "unclear": "uncertain",
    "unknown": "uncertain",
}
_VERDICT_LINE_RE = re.compile(r"""(?im)^[ \t*#>-]*verdict[ \t*]*[:=-][ \t*"']*([a-z]+)""")
_VERDICT_INLINE_RE = re.compile(r"""(?i)\bverdict[ \t*]*(?:is)?[ \t*]*[:=-]?[ \t*"']*([a-z]+)""")


def _canonical_verdict(word: str, verdicts: Sequence[str]) -> str | None:
    allowed = {v.lower(): v for v in verdicts}
    w = word.lower()
    if w in allowed:
        return allowed[w]
    syn = _VERDICT_SYNONYMS.get(w)
    return allowed.get(syn) if syn else None


def parse_verdict(text: str, verdicts: Sequence[str] = DEFAULT_VERDICTS) -> ParsedVerdict | None:
    """The LAST "Verdict: <word>" in ``text`` (a line first, then anywhere), or None.

    The critique is the text before that verdict (stripped), so a model that writes
    "Verdict: wrong" first and then keeps going does not smuggle the run-on into the
    critique. Whole words only: "incorrect" never reads as "correct" (it maps to "wrong"
    through a small synonym table, used only when "wrong" is a configured verdict).
    """
    if not text:
        return None
    for rx in (_VERDICT_LINE_RE, _VERDICT_INLINE_RE):
        for m in reversed(list(rx.finditer(text))):
            v = _canonical_verdict(m.group(1), verdicts)
            if v is not None:
                head = text[: m.start()]
                if rx is _VERDICT_INLINE_RE:  # "... My verdict is wrong.": drop "My"
                    cut = max(head.rfind(c) for c in ".!?\n")
                    head = head[: cut + 1]
                critique = head.strip()
                critique = re.sub(r"(?i)^critique\s*:\s*", "", critique)
                return ParsedVerdict(verdict=v, critique=critique)
    return None

"""Prompt templates: the text layout every teacher continues, and the defaults it implies.

Why the layout and its constants live together: the stop sequences (``DEFAULT_STOPS``),
the CoT trigger and the verdict words only work because the templates below put
``"\\n\\nQ:"`` in front of every block, end with ``Rationale: <trigger>`` and ask for one
``Verdict:`` line. ``tinyllm_ray.config`` takes its defaults from here (never a copy), so
changing the layout and its defaults is one edit.

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

Every new block starts with ``"\\n\\nQ:"``, which is the first default stop sequence,
so a teacher that starts inventing the next example is cut by vLLM itself.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: keeps this module importable without the data package
    from tinyllm_ray.data.schema import MCQRecord

#: The sentence a rationale starts from (TinyLLM, Mind's Mirror); ``PromptConfig.cot_trigger``.
#: Version of the teacher prompt layout the templates below render (teacher forcing, CoT
#: and self-evaluation, with in-context examples). Stored in every record's key and
#: provenance columns (``store.keys``): bump it when a template changes what it renders
#: for the same inputs, so rows from the old and new layouts are told apart.
TEMPLATE_VERSION = "1"

DEFAULT_COT_TRIGGER = "Let's think step by step."
#: vLLM stop sequences; the first one is the start of the next prompt block. ``SamplingConfig.stop``.
DEFAULT_STOPS: tuple[str, ...] = ("\n\nQ:", "\nQuestion:", "\n\n\n")
#: Self-evaluation verdict words, in the order the prompt lists them. ``SelfEvalConfig.verdicts``.
DEFAULT_VERDICTS: tuple[str, ...] = ("correct", "wrong", "uncertain")
#: Option letters: TinyLLM uses lowercase ``(a)``.
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


def question_block(record: MCQRecord) -> str:
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


def example_block(record: MCQRecord) -> str:
    """An in-context example: the question block followed by its gold answer line."""
    return f"{question_block(record)}\nAnswer: {answer_statement(record)}"


def _closing_hint(record: MCQRecord) -> str:
    return '"Thus, the answer is (x) <answer text>."' if record.choices else '"Thus, the answer is <number>."'


def _join_blocks(header: str, examples: Sequence[MCQRecord], final_block: str) -> str:
    blocks = [header, *(example_block(e) for e in examples), final_block]
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
    final = f"{question_block(record)}\nAnswer: {answer_statement(record)}\nRationale: {cot_trigger}"
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
    final = f"{question_block(record)}\nRationale: {cot_trigger}"
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
        f"{question_block(record)}\n"
        f"Proposed reasoning: {_one_line(cot)}\n\n"
        "Check the proposed reasoning step by step: are its facts true, does each step "
        "follow, and does its final answer answer the question? Write a short critique, "
        f"then end with exactly one line out of {options}.\n"
        "Critique:"
    )


def prompt_hash(text: str) -> str:
    """First 16 hex digits of sha256: identifies the exact prompt in the rationale store."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

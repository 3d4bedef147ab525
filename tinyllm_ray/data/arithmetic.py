"""A built-in reasoning task where the reasoning matters: multi-step arithmetic word problems.

Why this task (issue 9, "proof that distillation works"): the synthetic fact task of the
demo is recall — a rationale cannot help a student that must simply memorise facts. Here
the answer is the end of a short computation ("Tom has 3 coins. Tom gets 5 more. Tom
doubles them. How many coins does Tom have now?"), so a student that learns the steps
can solve unseen problems, and one trained on answers alone must guess. A plain-torch
feasibility check on 2 CPU cores (2-layer, 128-wide Llama, character tokenizer, 4 minutes
on 20,000 templated 1-3-step problems) solved 81/100 test problems when trained on the
step-by-step solutions and 9/100 when trained on answers alone: room for rationales to
matter, and teachers for it are cheap to train.

Each problem has a **difficulty** (its number of operations, 1..``max_steps``), a gold
**step-by-step solution** (one ``a op b = c`` line per operation, checkable by
:func:`check_solution` without ever calling ``eval``), and two forms:

- ``mcq``: four numeric choices (the answer and three near misses a wrong step would
  produce), the default;
- ``free``: no choices, a numeric answer (the SVAMP shape).

Splits are seeded and disjoint by question text; ids carry the difficulty
(``arith-test-d3-00012``) so per-difficulty accuracy needs nothing but the id.
Sizes, depth and form come from ``data.arithmetic`` (their defaults live there only);
``data.name: arithmetic`` loads the task through ``load_splits``, and
:func:`tinyllm_ray.data.loader.arithmetic_problems` gives the same problems with their
gold solutions. Pure: no Ray, no torch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.config import ArithmeticForm as Form
from tinyllm_ray.data.schema import MCQRecord

N_CHOICES = 4
_NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Ben", "Eva", "Kai", "Lia")
_THINGS = ("coins", "apples", "marbles", "stickers", "books", "shells", "cards", "pencils", "stamps", "eggs")
_QUESTIONS = (
    "How many {thing} does {name} have now?",
    "How many {thing} now?",
    "What is the number of {thing} {name} has at the end?",
)
_STARTS = ("{name} has {n} {thing}.", "{name} starts with {n} {thing}.", "There are {n} {thing} in {name}'s bag.")
_MAX_VALUE = 200
_ID_RE = re.compile(r"^arith-[a-z]+-d(\d+)-\d+$")
_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")


@dataclass(frozen=True)
class Operation:
    """One kind of step: its phrasings, the symbol in the solution, and when it applies."""

    symbol: str
    phrasings: tuple[str, ...]
    operand: tuple[int, int] | None  # range of the operand drawn; None: fixed by the phrasing

    def apply(self, value: int, k: int) -> int | None:
        """The new value, or None when the step does not apply (negative, non-integer, too big)."""
        if self.symbol == "+":
            out = value + k
        elif self.symbol == "-":
            out = value - k
        elif self.symbol == "*":
            out = value * k
        else:
            if k == 0 or value % k:
                return None
            out = value // k
        return out if 0 <= out <= _MAX_VALUE else None


_OPS: tuple[tuple[Operation, int | None], ...] = (
    (Operation("+", ("{name} gets {k} more.", "{name} finds {k} more.", "{name} buys {k} more."), (1, 9)), None),
    (Operation("-", ("{name} gives away {k}.", "{name} loses {k}.", "{name} uses {k} of them."), (1, 9)), None),
    (Operation("*", ("{name} doubles them.", "The number of {thing} doubles."), None), 2),
    (Operation("*", ("{name} triples them.", "The number of {thing} triples."), None), 3),
    (Operation("/", ("{name} gives away half of them.", "{name} keeps half of them."), None), 2),
)


@dataclass(frozen=True)
class ArithmeticProblem:
    """One word problem with its gold solution; :meth:`to_record` gives the canonical example."""

    id: str
    question: str
    steps: tuple[str, ...]
    answer: int
    difficulty: int
    choices: tuple[str, ...] = ()

    @property
    def solution(self) -> str:
        """The gold step-by-step solution, ending in the answer statement the parsers read."""
        return " ".join(self.steps) + f" The answer is {self.answer}."

    def to_record(self) -> MCQRecord:
        return MCQRecord(id=self.id, question=self.question, choices=self.choices, answer=str(self.answer))


def difficulty_of(record_id: str) -> int | None:
    """The number of operations of a problem, read from its id (None for other ids)."""
    m = _ID_RE.match(record_id)
    return int(m.group(1)) if m else None


def check_solution(steps: Sequence[str], start: int, answer: int) -> bool:
    """Whether the equation lines of ``steps`` chain from ``start`` to ``answer``.

    Prose lines (no ``=``) are skipped; each ``a op b = c`` line must start from the value
    so far and compute exactly. Parsed with a regex, never ``eval``.
    """
    value = start
    for line in steps:
        if "=" not in line:
            continue
        m = _STEP_RE.match(line)
        if m is None:
            return False
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[op]
        if a != value or exact is None or exact != c:
            return False
        value = c
    return value == answer


def _distractors(answer: int, values: Sequence[int], rng: random.Random) -> list[int]:
    """Three wrong numbers a careless solver would produce: intermediate values, off-by-one, doubled."""
    pool = [v for v in (*values[:-1], answer + 1, answer - 1, answer + 2, answer * 2, answer - 2, answer + 10)
            if v != answer and 0 <= v]
    out: list[int] = []
    for v in rng.sample(pool, len(pool)):
        if v not in out:
            out.append(v)
        if len(out) == N_CHOICES - 1:
            return out
    while len(out) < N_CHOICES - 1:  # tiny answers: fall back to small distinct numbers
        v = rng.randint(0, answer + 12)
        if v != answer and v not in out:
            out.append(v)
    return out


def make_problem(problem_id: str, difficulty: int, rng: random.Random, form: Form) -> ArithmeticProblem:
    """One random problem with exactly ``difficulty`` operations (seeded by ``rng``)."""
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    while True:
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        start = rng.randint(1, 9)
        value, values = start, [start]
        sentences = [rng.choice(_STARTS).format(name=name, n=start, thing=thing)]
        steps = [f"{name} starts with {start} {thing}."]
        for _ in range(difficulty):
            for _attempt in range(20):
                op, fixed = rng.choice(_OPS)
                k = fixed if fixed is not None else rng.randint(*op.operand)  # type: ignore[misc]
                new = op.apply(value, k)
                if new is not None:
                    break
            else:
                break
            sentences.append(rng.choice(op.phrasings).format(name=name, k=k, thing=thing))
            steps.append(f"{value} {op.symbol} {k} = {new}.")
            value = new
            values.append(new)
        if len(steps) - 1 == difficulty:
            break
    sentences.append(rng.choice(_QUESTIONS).format(name=name, thing=thing))
    # Choices come from their own generator, drawn in both forms: the mcq and free forms of
    # one config then ask the same questions, so the two are comparable problem for problem.
    choice_rng = random.Random(rng.getrandbits(64))
    choices: tuple[str, ...] = ()
    if form == "mcq":
        nums = [value, *_distractors(value, values, choice_rng)]
        choice_rng.shuffle(nums)
        choices = tuple(str(n) for n in nums)
    return ArithmeticProblem(id=problem_id, question=" ".join(sentences), steps=tuple(steps), answer=value,
                             difficulty=difficulty, choices=choices)


def make_arithmetic_splits(
    sizes: Mapping[str, int], *, max_steps: int, seed: int, form: Form
) -> dict[str, list[ArithmeticProblem]]:
    """Seeded splits of problems cycling through difficulties 1..``max_steps``.

    Splits are disjoint by question text (a later split redraws any question an earlier
    one holds), so a student cannot score by memorising train rows.
    """
    seen: set[str] = set()
    return {split: list(_iter_split(split, sizes.get(split, 0), max_steps, seed, form, seen, seen.add))
            for split in SPLIT_ORDER}


def iter_arithmetic_split(
    sizes: Mapping[str, int], split: str, *, max_steps: int, seed: int, form: Form
) -> Iterator[ArithmeticProblem]:
    """The problems of ``split`` one at a time: ``make_arithmetic_splits(...)[split]``, in order, not as a list.

    The questions already drawn (the earlier splits' and this split's so far, which a new
    problem must not repeat) are kept in a :class:`~tinyllm_ray.key_index.KeyIndex` on local
    disk, not a set: memory stays flat in the split size. The earlier splits are drawn
    first (not yielded), as the whole-split path does.
    """
    from tinyllm_ray.key_index import KeyIndex

    seen = KeyIndex()
    try:
        for earlier in SPLIT_ORDER[:SPLIT_ORDER.index(split)]:
            for _ in _iter_split(earlier, sizes.get(earlier, 0), max_steps, seed, form, seen, seen.put_new):
                pass
        yield from _iter_split(split, sizes.get(split, 0), max_steps, seed, form, seen, seen.put_new)
    finally:
        seen.close()


#: The order splits are drawn in: a later split redraws any question an earlier one holds.
SPLIT_ORDER = ("train", "validation", "test")


def _iter_split(split: str, n: int, max_steps: int, seed: int, form: Form, seen: Container[str],
                remember: Callable[[str], Any]) -> Iterator[ArithmeticProblem]:
    """``n`` seeded problems of ``split``, each question not in ``seen``; ``remember(question)`` adds it."""
    rng = random.Random(f"tinyllm-arithmetic:{seed}:{split}")
    for i in range(n):
        d = 1 + i % max_steps
        pid = f"arith-{split}-d{d}-{i:05d}"
        p = make_problem(pid, d, rng, form)
        for _ in range(64):
            if p.question not in seen:
                break
            p = make_problem(pid, d, rng, form)
        remember(p.question)
        yield p

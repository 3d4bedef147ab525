"""What a bootstrapped teacher learns to write: gold CoT completions and corrupted ones (pure).

Why its own module: the targets (how a completion ends, how a wrong CoT is made and what
its critique says) change for different reasons than the training job around them
(``teachers/bootstrap.py``), and are unit-tested without Ray or torch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tinyllm_ray.data.arithmetic import ArithmeticProblem
from tinyllm_ray.data.schema import MCQRecord

__all__ = ["ALL_RIGHT", "Corruption", "corrupt_solution", "gold_completion"]

#: Critique of a CoT whose every step is right.
ALL_RIGHT = "Every step is right."
_EQ_RE = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)\.$")


# --------------------------------------------------------------------------- pure: targets


def _conclusion(value: str, record: MCQRecord) -> str:
    """``Thus, the answer is 42.``: the number itself, also for multiple choice.

    Why not the prompt's "(x) <answer text>" for mcq: measured, tiny teachers trained to
    write the option letter computed the right value in 73% of CoTs but wrote one constant
    letter, and ``parse_answer`` trusts the letter, so they scored at chance. The number
    alone is matched to its option by text (``parse_answer`` ``statement_text``), which is
    exactly the answer the student is trained and scored on. ``record`` is unused (kept so
    a future template can depend on the record).
    """
    del record
    return f"Thus, the answer is {value}."


def gold_completion(problem: ArithmeticProblem) -> str:
    """The gold solution as a CoT completion: its steps, then the closing sentence the prompt asks for.

    ``ArithmeticProblem.solution`` ends "The answer is N."; the teacher learns to end with
    "Thus, the answer is <number>." in both forms (see :func:`_conclusion` for why not the
    option letter).
    Starts with a space: it continues "Rationale: Let's think step by step."
    """
    return " " + " ".join(problem.steps) + " " + _conclusion(str(problem.answer), problem.to_record())


@dataclass(frozen=True)
class Corruption:
    """A wrong CoT (no leading space) and the critique that names what is wrong."""

    cot: str
    critique: str
    kind: str  # step | final


def corrupt_solution(problem: ArithmeticProblem, rng: random.Random) -> Corruption:
    """A plausible wrong CoT: one step's result off by a little (later steps follow it), or a wrong final answer.

    The critique names the first wrong step ("Step 2 is wrong: 8 * 2 = 16, not 18.") or,
    when every step is right, the final answer ("Every step is right, but the answer is
    16, not 18."). The wrong value is always different from the right one.
    """
    record = problem.to_record()
    eqs = [i for i, s in enumerate(problem.steps) if _EQ_RE.match(s)]
    if rng.random() < 0.75:
        for pos in rng.sample(eqs, len(eqs)):
            for delta in rng.sample([1, -1, 2, -2, 10, 3], 6):
                steps = _propagate(problem.steps, pos, delta)
                if steps is not None:
                    a, op, b, right = _EQ_RE.match(problem.steps[pos]).groups()  # type: ignore[union-attr]
                    wrong = _EQ_RE.match(steps[pos]).group(4)  # type: ignore[union-attr]
                    final = _EQ_RE.match(steps[eqs[-1]]).group(4)  # type: ignore[union-attr]
                    cot = " ".join(steps) + " " + _conclusion(final, record)
                    k = eqs.index(pos) + 1
                    return Corruption(cot, f"Step {k} is wrong: {a} {op} {b} = {right}, not {wrong}.", "step")
    right = str(problem.answer)
    others = [c for c in record.choices if c != right] or [str(problem.answer + d) for d in (1, 2, 10)]
    wrong = rng.choice(others)
    cot = " ".join(problem.steps) + " " + _conclusion(wrong, record)
    return Corruption(cot, f"Every step is right, but the answer is {right}, not {wrong}.", "final")


def _propagate(steps: Sequence[str], pos: int, delta: int) -> list[str] | None:
    """``steps`` with step ``pos``'s result moved by ``delta`` and every later step recomputed from it.

    None when the wrong value is negative or a later step no longer divides exactly.
    """
    out = list(steps)
    a, op, b, c = _EQ_RE.match(steps[pos]).groups()  # type: ignore[union-attr]
    value = int(c) + delta
    if value < 0:
        return None
    out[pos] = f"{a} {op} {b} = {value}."
    for i in range(pos + 1, len(steps)):
        m = _EQ_RE.match(steps[i])
        if m is None:
            continue
        _, op, b, _ = m.groups()
        k = int(b)
        if op == "+":
            new = value + k
        elif op == "-":
            new = value - k
        elif op == "*":
            new = value * k
        else:
            if value % k:
                return None
            new = value // k
        if new < 0:
            return None
        out[i] = f"{value} {op} {b} = {new}."
        value = new
    return out

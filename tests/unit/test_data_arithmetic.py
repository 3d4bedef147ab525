"""The built-in arithmetic reasoning task: deterministic, checkable, disjoint splits."""

from __future__ import annotations

import random
import re

import pytest

from tinyllm_ray.data.arithmetic import (
    N_CHOICES,
    check_solution,
    difficulty_of,
    make_arithmetic_splits,
    make_problem,
)

SIZES = {"train": 300, "validation": 60, "test": 60}


def _start(p) -> int:
    return int(re.search(r"(\d+)", p.steps[0]).group(1))


def test_same_seed_same_problems_other_seed_differs():
    a = make_arithmetic_splits(SIZES, seed=1)
    b = make_arithmetic_splits(SIZES, seed=1)
    c = make_arithmetic_splits(SIZES, seed=2)
    assert a == b
    assert [p.question for p in a["train"]] != [p.question for p in c["train"]]


@pytest.mark.parametrize("form", ["mcq", "free"])
def test_every_solution_checks_and_difficulty_is_the_number_of_steps(form):
    splits = make_arithmetic_splits(SIZES, max_steps=4, seed=0, form=form)
    for problems in splits.values():
        for p in problems:
            equations = [s for s in p.steps if "=" in s]
            assert len(equations) == p.difficulty == difficulty_of(p.id)
            assert check_solution(p.steps, _start(p), p.answer)
            assert p.solution.endswith(f"The answer is {p.answer}.")
            rec = p.to_record()
            assert rec.answer == str(p.answer)
            if form == "mcq":
                assert len(rec.choices) == N_CHOICES and len(set(rec.choices)) == N_CHOICES
                assert str(p.answer) in rec.choices
            else:
                assert rec.choices == ()
    assert {p.difficulty for p in splits["test"]} == {1, 2, 3, 4}


def test_splits_are_disjoint_by_question():
    s = make_arithmetic_splits({"train": 2000, "validation": 200, "test": 200}, seed=0)
    train = {p.question for p in s["train"]}
    assert not train & {p.question for p in s["test"]}
    assert not train & {p.question for p in s["validation"]}


def test_check_solution_rejects_wrong_or_broken_steps():
    p = make_problem("arith-x-d2-00000", 2, random.Random(0))
    start = _start(p)
    assert check_solution(p.steps, start, p.answer)
    assert not check_solution(p.steps, start, p.answer + 1)
    bad = list(p.steps)
    bad[-1] = bad[-1].replace("=", "= 1")  # wrong result
    assert not check_solution(bad, start, p.answer)
    assert not check_solution([*p.steps[:-1], "__import__('os') = 1"], start, p.answer)


def test_difficulty_of_other_ids_is_none():
    assert difficulty_of("syn-train-00001") is None
    with pytest.raises(ValueError):
        make_problem("x", 0, random.Random(0))

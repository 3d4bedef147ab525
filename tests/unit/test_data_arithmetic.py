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
    a = make_arithmetic_splits(SIZES, max_steps=3, seed=1, form="mcq")
    b = make_arithmetic_splits(SIZES, max_steps=3, seed=1, form="mcq")
    c = make_arithmetic_splits(SIZES, max_steps=3, seed=2, form="mcq")
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
    s = make_arithmetic_splits({"train": 2000, "validation": 200, "test": 200}, max_steps=3, seed=0, form="mcq")
    train = {p.question for p in s["train"]}
    assert not train & {p.question for p in s["test"]}
    assert not train & {p.question for p in s["validation"]}


def test_check_solution_rejects_wrong_or_broken_steps():
    p = make_problem("arith-x-d2-00000", 2, random.Random(0), "mcq")
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
        make_problem("x", 0, random.Random(0), "mcq")


# --------------------------------------------------------------------------- as a dataset (data.name: arithmetic)


def _data(*overrides: str):
    from tinyllm_ray.config import load_config

    return load_config("demo_cpu", ["data.name=arithmetic", "data.arithmetic.train=60",
                                    "data.arithmetic.validation=12", "data.arithmetic.test=30", *overrides]).data


def test_arithmetic_loads_as_mcq_by_default_with_the_configured_sizes():
    from tinyllm_ray.data import load_splits

    loaded = load_splits(_data())
    assert loaded.sizes() == {"train": 60, "validation": 12, "test": 30}
    assert loaded.total_skipped() == 0 and set(loaded.sources) == {"train", "validation", "test"}
    for records in loaded.splits.values():
        for r in records:
            assert len(r.choices) == N_CHOICES and r.answer in r.choices and r.answer_index is not None


def test_free_form_is_one_override_away_and_asks_the_same_questions_without_choices():
    from tinyllm_ray.data import load_splits

    mcq, free = load_splits(_data()), load_splits(_data("data.arithmetic.form=free"))
    for split, records in free.splits.items():
        assert all(r.choices == () and r.answer_index is None for r in records)
        same = [(r.id, r.question, r.answer) for r in mcq.splits[split]]
        assert [(r.id, r.question, r.answer) for r in records] == same


def test_arithmetic_is_deterministic_and_seeded_by_data_seed():
    from tinyllm_ray.data import load_splits

    assert load_splits(_data()).splits == load_splits(_data()).splits
    other = load_splits(_data("data.seed=7")).splits
    assert [r.question for r in other["train"]] != [r.question for r in load_splits(_data()).splits["train"]]


def test_ids_carry_every_difficulty_up_to_max_steps():
    from tinyllm_ray.data import load_splits

    loaded = load_splits(_data("data.arithmetic.max_steps=5"))
    for split, records in loaded.splits.items():
        assert all(r.id.startswith(f"arith-{split}-d") for r in records)
        assert {difficulty_of(r.id) for r in records} == {1, 2, 3, 4, 5}


def test_gold_solutions_are_the_solutions_of_the_loaded_records_limits_included():
    from tinyllm_ray.data import arithmetic_problems, load_splits

    cfg = _data("data.limit.train=7")
    problems, loaded = arithmetic_problems(cfg), load_splits(cfg)
    assert len(problems["train"]) == 7
    for split, records in loaded.splits.items():
        assert [p.to_record() for p in problems[split]] == records
        assert all(p.solution.endswith(f"The answer is {p.answer}.") for p in problems[split])


def test_gold_solutions_of_another_dataset_are_a_user_error():
    from tinyllm_ray.config import load_config
    from tinyllm_ray.data import arithmetic_problems
    from tinyllm_ray.errors import UserError

    with pytest.raises(UserError, match="data.name: arithmetic"):
        arithmetic_problems(load_config("demo_cpu").data)


@pytest.mark.parametrize("override", ["data.arithmetic.form=essay", "data.arithmetic.max_steps=0",
                                      "data.arithmetic.train=1"])
def test_bad_arithmetic_settings_are_config_errors(override):
    from tinyllm_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="data.arithmetic"):
        _data(override)

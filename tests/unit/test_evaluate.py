"""Answer-only evaluation: normalisation, reading the student's answer, exact match."""

from __future__ import annotations

import pytest

from tinyllm_ray.data.loader import LoadedData
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import DataError, EmptyEvaluationError
from tinyllm_ray.evaluate import (
    EvalResult,
    accuracy,
    exact_match,
    extract_prediction,
    normalize_answer,
    score_generations,
    select_eval_records,
)

FOG = ("a marsh", "a tundra", "the plains", "a desert")
MARSH = MCQRecord(id="1", question="Fog?", choices=FOG, answer="a marsh")
PLAINS = MCQRecord(id="2", question="Flat?", choices=FOG, answer="the plains")
SVAMP = MCQRecord(id="3", question="3 + 4?", choices=(), answer="7")
HALF = MCQRecord(id="4", question="25 / 2?", choices=(), answer="12.5")
NUMS = ("1", "2", "3", "4")


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("The Marsh.", "marsh"),
        ("  a   Desert!! ", "desert"),
        ("An apple, the pie", "apple pie"),
        ("rock-and-roll", "rockandroll"),  # SQuAD drops punctuation without a space
        ("theory", "theory"),  # articles only as whole words
        ("12.50", "12.5"),  # numbers keep their decimal point
        ("$1,200", "1200"),
        ("12.0", "12"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize(
    "generated, expected",
    [
        ("a marsh", "a marsh"),
        ("A Marsh", "a marsh"),
        ("Marsh.", "a marsh"),
        ("b", "a tundra"),
        ("B", "a tundra"),
        ("(b)", "a tundra"),
        ("b)", "a tundra"),
        ("b.", "a tundra"),
        ("(c) the plains", "the plains"),
        ("option 4", "a desert"),
        ("Choice #2", "a tundra"),
        ("the answer is (d)", "a desert"),
        ("Answer: the plains", "the plains"),
        ("  (a)  ", "a marsh"),
        ("a", "a marsh"),  # a lone letter is a letter
        ("2", None),  # a bare number is never an index
        ("option 9", None),
        ("(e)", None),
        ("(b) a desert", None),  # letter and text disagree: refuse to guess
        ("something else entirely", None),
        ("", None),
    ],
)
def test_extract_prediction_multiple_choice(generated, expected):
    assert extract_prediction(generated, FOG) == expected


def test_numeric_choices_are_text_not_indices():
    assert extract_prediction("2", NUMS) == "2"
    assert extract_prediction("option 2", NUMS) == "2"
    assert extract_prediction("(d)", NUMS) == "4"


def test_extract_prediction_free_form():
    assert extract_prediction("7", ()) == "7"
    assert extract_prediction("He has 7 apples.", ()) == "7"
    assert extract_prediction("$1,200.50", ()) == "1200.5"
    assert extract_prediction("seven", ()) == "seven"
    assert extract_prediction("   ", ()) is None


def test_exact_match():
    assert exact_match("a marsh", MARSH)
    assert exact_match("Marsh", MARSH)
    assert not exact_match("a tundra", MARSH)
    assert not exact_match(None, MARSH)
    assert exact_match("7", SVAMP) and exact_match("7.0", SVAMP)
    assert not exact_match("77", SVAMP) and not exact_match("seven", SVAMP)
    assert exact_match("12.50", HALF) and not exact_match("125", HALF)


def test_accuracy_end_to_end_from_generations():
    records = [MARSH, PLAINS, SVAMP, HALF]
    generations = ["(a)", "a desert", "The answer is 7.", "12.5"]
    preds = [extract_prediction(g, r.choices) for g, r in zip(generations, records)]
    assert preds == ["a marsh", "a desert", "7", "12.5"]
    assert accuracy(preds, records) == pytest.approx(0.75)


def test_accuracy_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="2 predictions for 1 records"):
        accuracy(["a", "b"], [MARSH])
    with pytest.raises(EmptyEvaluationError, match="zero records"):
        accuracy([], [])


def test_score_generations_is_the_one_scoring_loop():
    records = [MARSH, PLAINS, SVAMP, HALF]
    res = score_generations(records, ["(a)", "a desert", "The answer is 7.", "12.5"], split="test", model="m",
                            seconds=2.0, truncated_inputs=1, keep_predictions=2)
    assert isinstance(res, EvalResult) and (res.correct, res.total, res.accuracy) == (3, 4, 0.75)
    assert res.predictions == [
        {"id": "1", "generated": "(a)", "prediction": "a marsh", "answer": "a marsh", "correct": True},
        {"id": "2", "generated": "a desert", "prediction": "a desert", "answer": "the plains", "correct": False},
    ]
    assert res.to_dict() == {"accuracy": 0.75, "correct": 3, "total": 4, "split": "test", "model": "m",
                             "truncated_inputs": 1, "seconds": 2.0}
    assert len(score_generations(records, ["x"] * 4, keep_predictions=None).predictions) == 4
    assert score_generations(records, ["x"] * 4, keep_predictions=0).predictions == []
    # a custom reader (teachers read their first line) with the same exact-match rule
    first_word = score_generations([MARSH], ["b"], read=lambda g, c: c[0])
    assert first_word.correct == 1


def test_empty_or_missing_evaluation_sets_are_one_clear_error():
    data = LoadedData(splits={"train": [MARSH], "test": [PLAINS, SVAMP, HALF], "validation": []})
    assert [r.id for r in select_eval_records(data, "test", 2)] == ["2", "3"]
    assert len(select_eval_records(data, "test", None)) == 3
    with pytest.raises(EmptyEvaluationError, match="split 'validation': nothing to evaluate"):
        select_eval_records(data, "validation", None)
    with pytest.raises(EmptyEvaluationError, match="nothing to evaluate"):
        score_generations([], [])
    assert score_generations([], [], partial=True).total == 0  # a rank's empty slice
    with pytest.raises(DataError, match=r"no 'dev' split \(loaded: train \(1\), test \(3\), validation \(0\)\)"):
        select_eval_records(data, "dev", None)


def test_format_predictions_shows_gold_beside_prediction():
    from tinyllm_ray.evaluate import format_predictions

    preds = [{"id": "q1", "generated": "it is (b)\nwhale", "prediction": "whale", "answer": "whale", "correct": True},
             {"id": "q2", "generated": "x" * 200, "prediction": None, "answer": "7", "correct": False}]
    lines = format_predictions(preds).splitlines()
    assert lines[0].split() == ["ok", "id", "gold", "prediction", "generated"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split()[:4] == ["+", "q1", "whale", "whale"] and "⏎" in lines[2]
    assert lines[3].split()[:4] == ["-", "q2", "7", "(none)"] and lines[3].endswith("…") and len(lines[3]) < 120


def test_eval_records_from_a_config_are_the_loaded_ones_without_loading_other_splits():
    """``run``'s closing evaluation reads the first rows of one split, never the whole dataset."""
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.loader import load_splits

    cfg = DataConfig.model_validate({"name": "arithmetic", "arithmetic": {"train": 50, "validation": 10,
                                                                          "test": 20}})
    loaded = load_splits(cfg)
    assert select_eval_records(cfg, "test", 5) == loaded.require("test")[:5]
    assert select_eval_records(cfg, "validation", None) == loaded.require("validation")
    with pytest.raises(DataError, match="no 'dev' split"):
        select_eval_records(cfg, "dev", None)

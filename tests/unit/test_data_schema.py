"""MCQRecord: normalisation, validity by construction, and the dict round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinyllm_ray.data.schema import (
    MalformedRowError,
    MCQRecord,
    RowError,
    choice_letters,
    records_from_dicts,
    records_to_dicts,
)


def test_answer_index_and_letter() -> None:
    r = MCQRecord(id="q1", question="Which is a fruit?", choices=("rock", "apple", "car"), answer="apple")
    assert r.answer_index == 1
    assert r.answer_letter == "B"
    assert not r.is_free_form
    assert r.context is None


def test_free_form_record_has_no_index() -> None:
    r = MCQRecord(id="chal-1", question="What is 76 - 25?", choices=(), answer="51")
    assert r.is_free_form
    assert r.answer_index is None
    assert r.answer_letter is None


def test_normalisation_strips_and_coerces() -> None:
    # PIQA-style trailing spaces on both sides, an int id, a list of choices.
    r = MCQRecord(id=7, question=" dresser ", choices=["replace drawer ", "finish with pin "],  # type: ignore[arg-type]
                  answer="finish with pin ", context="  ")
    assert r.id == "7"
    assert r.question == "dresser"
    assert r.choices == ("replace drawer", "finish with pin")
    assert r.answer == "finish with pin"
    assert r.answer_index == 1
    assert r.context is None  # blank context is no context


def test_record_is_frozen_and_hashable() -> None:
    r = MCQRecord(id="a", question="q?", choices=("x", "y"), answer="y")
    with pytest.raises(AttributeError):
        r.answer = "x"  # type: ignore[misc]
    assert len({r, MCQRecord(id="a", question="q?", choices=("x", "y"), answer="y")}) == 1


def test_duplicate_choice_texts_are_allowed_first_index_wins() -> None:
    # Three real OpenBookQA train rows repeat a distractor; they must still load.
    r = MCQRecord(id="12-408", question="The tree trunk holds up the", choices=("sky", "roots", "sky", "leaves"),
                  answer="leaves")
    assert r.answer_index == 3
    r2 = MCQRecord(id="x", question="q", choices=("a", "b", "a"), answer="a")
    assert r2.answer_index == 0


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"question": "  ", "choices": ("a", "b"), "answer": "a"}, "empty_question"),
        ({"question": "q", "choices": ("a", "b"), "answer": ""}, "no_answer"),
        ({"question": "q", "choices": ("a", "b"), "answer": "c"}, "answer_not_in_choices"),
        ({"question": "q", "choices": ("a",), "answer": "a"}, "too_few_choices"),
        ({"question": "q", "choices": ("a", " "), "answer": "a"}, "empty_choice"),
        ({"question": "q", "choices": "ab", "answer": "a"}, "bad_choices"),
    ],
)
def test_invalid_records_raise_with_reason(kwargs: dict, reason: str) -> None:
    with pytest.raises(RowError) as info:
        MCQRecord(id="r1", **kwargs)
    assert info.value.reason == reason


def test_empty_id_is_rejected() -> None:
    with pytest.raises(RowError, match="id is empty"):
        MCQRecord(id=" ", question="q", choices=("a", "b"), answer="a")


def test_dict_round_trip_and_extra_keys() -> None:
    r = MCQRecord(id="1", question="q?", choices=("a", "b", "c"), answer="c", context="ctx")
    d = r.to_dict()
    assert d == {"id": "1", "question": "q?", "choices": ["a", "b", "c"], "answer": "c", "context": "ctx"}
    assert isinstance(d["choices"], list)
    assert MCQRecord.from_dict(d) == r
    # Store rows carry more columns; numpy arrays come out of Ray Data batches.
    np = pytest.importorskip("numpy")
    row = {**d, "choices": np.array(["a", "b", "c"]), "teacher": "t5", "sample_idx": 0}
    assert MCQRecord.from_dict(row) == r
    assert records_from_dicts(records_to_dicts([r, r])) == [r, r]


def test_from_dict_names_missing_keys() -> None:
    with pytest.raises(RowError, match=r"missing key\(s\) \['answer'\]"):
        MCQRecord.from_dict({"id": "1", "question": "q", "choices": ["a", "b"]})


def test_from_dict_without_context_key() -> None:
    r = MCQRecord.from_dict({"id": "1", "question": "q", "choices": None, "answer": "12"})
    assert r.choices == () and r.context is None


def test_choice_letters() -> None:
    assert choice_letters(4) == ("A", "B", "C", "D")
    assert choice_letters(2, lowercase=True) == ("a", "b")
    with pytest.raises(ValueError):
        choice_letters(27)


def test_malformed_row_error_message_names_source_row_reason_and_fix() -> None:
    err = MalformedRowError("/data/train.jsonl", 3, "no_answer", "answer is empty")
    msg = str(err)
    assert msg.startswith("/data/train.jsonl: row 3: no_answer: answer is empty")
    assert "data.on_malformed: skip" in msg
    assert (err.source, err.row, err.reason) == ("/data/train.jsonl", 3, "no_answer")


def test_schema_imports_neither_ray_nor_datasets() -> None:
    code = (
        "import sys; import tinyllm_ray.data.schema, tinyllm_ray.data; "
        "bad = [m for m in ('ray', 'datasets', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

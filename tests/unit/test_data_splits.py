"""Which rows end up in which split, and the data problems that must never pass silently.

Splits: a single file is train whatever its name; validation and (when asked) test are
carved from it with a seed, keeping rows of one question together; a missing evaluation
split is refused before anything runs. Silent problems made loud: examples shared between
splits, ``data.columns`` on a named adapter, made-up column names, non-numeric free-form
answers, a broken JSON line reported at another position than its line.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from tests.unit.data_rows import mc_row as _mc
from tests.unit.data_rows import write_jsonl as _jsonl
from tinyllm_ray.config import ConfigError, DataConfig, load_config
from tinyllm_ray.data import DataLoadError, MalformedRowError, MCQRecord, load_splits
from tinyllm_ray.data.splits import (
    StreamedOverlap,
    apply_overlap_policy,
    carve,
    overlap_compared_splits,
    split_overlap,
)
from tinyllm_ray.errors import SplitOverlapError, UsageError
from tinyllm_ray.jobs.checks import check_eval, check_runnable
from tinyllm_ray.paths import RunPaths


def _ids(records: list[MCQRecord]) -> set[str]:
    return {r.id for r in records}


# --------------------------------------------------------------------------- which file is which split


def test_a_single_file_is_train_whatever_its_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = _jsonl(tmp_path / "dev.jsonl", [_mc(i) for i in range(20)])
    with caplog.at_level(logging.INFO):
        loaded = load_splits(DataConfig(name="tinyllm", path=str(f)))
    assert set(loaded.splits) == {"train", "validation"} and loaded.sources["train"] == str(f)
    assert "dev.jsonl is the train split although its name says validation" in caplog.text
    assert "set data.files.validation" in caplog.text
    # Named explicitly, the same file is what the user says it is.
    assert set(load_splits(DataConfig(name="tinyllm", files={"validation": str(f)})).splits) == {"validation"}


def test_a_folder_is_split_by_the_hub_keywords(tmp_path: Path) -> None:
    _jsonl(tmp_path / "training.jsonl", [_mc(i) for i in range(6)])
    _jsonl(tmp_path / "dev.jsonl", [_mc(i) for i in range(10, 12)])
    _jsonl(tmp_path / "eval.jsonl", [_mc(i) for i in range(20, 23)])
    assert load_splits(DataConfig(name="tinyllm", path=str(tmp_path))).sizes() == {
        "train": 6, "validation": 2, "test": 3}


# --------------------------------------------------------------------------- carving


def test_one_file_carved_into_train_validation_test(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = _jsonl(tmp_path / "all.jsonl", [_mc(i) for i in range(100)])
    cfg = DataConfig(name="tinyllm", path=str(f), test_fraction=0.2, seed=3)
    with caplog.at_level(logging.INFO):
        loaded = load_splits(cfg)
    assert loaded.sizes() == {"train": 70, "validation": 10, "test": 20}
    parts = [_ids(loaded.splits[s]) for s in ("train", "validation", "test")]
    assert set.union(*parts) == {f"r{i}" for i in range(100)} and sum(map(len, parts)) == 100
    assert loaded.sources["test"].startswith("0.2 of train carved with seed 3")
    assert "carved validation 10, test 20 out of 100 train rows (data.seed 3" in caplog.text
    assert load_splits(cfg).splits == loaded.splits  # seeded
    # Adding a test carve leaves validation as it was; test_size is an exact count.
    assert load_splits(cfg.model_copy(update={"test_fraction": None})).splits["validation"] == \
        loaded.splits["validation"]
    sized = load_splits(cfg.model_copy(update={"test_fraction": None, "test_size": 7}))
    assert sized.sizes() == {"train": 83, "validation": 10, "test": 7}


def test_a_test_carve_beside_a_test_file_is_an_error(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [_mc(i) for i in range(10)])
    _jsonl(tmp_path / "test.jsonl", [_mc(i) for i in range(50, 53)])
    with pytest.raises(DataLoadError, match=r"data\.test_fraction carves a test split.*already has one"):
        load_splits(DataConfig(name="tinyllm", path=str(tmp_path), test_fraction=0.1))
    with pytest.raises(ValueError, match="test_size and data.test_fraction both set"):
        DataConfig(name="tinyllm", path=str(tmp_path), test_fraction=0.1, test_size=2)
    with pytest.raises(ValueError, match=r"data\.test_fraction re-cuts loaded datasets"):
        DataConfig(name="arithmetic", test_fraction=0.1)


def test_carving_keeps_rows_of_one_question_together() -> None:
    # Question k appears at rows 2k and 2k+1 (as CommonsenseQA's train file repeats one question).
    rows = [MCQRecord(id=f"r{i}", question=f"Where is thing {i // 2}?", choices=("a", "b"), answer="a")
            for i in range(200)]
    kept, parts = carve(rows, {"validation": 21, "test": 21}, seed=0)
    assert len(kept) + sum(map(len, parts.values())) == 200
    assert all(len(p) in (21, 22) for p in parts.values())  # a question's twin may come along
    splits = {"train": kept, **parts}
    assert all(o["shared_questions"] == 0 for o in split_overlap(splits))
    # Without repeated questions, validation is exactly the seeded positions carving always took.
    plain = [MCQRecord(id=f"r{i}", question=f"q{i}?", choices=("a", "b"), answer="a") for i in range(50)]
    order = list(range(50))
    random.Random(0).shuffle(order)
    assert [r.id for r in carve(plain, {"validation": 5}, seed=0)[1]["validation"]] == [f"r{i}" for i in sorted(order[:5])]


def test_shared_csqa_file_carves_without_a_question_in_two_splits(shared_data: Path) -> None:
    train = shared_data / "hub_layout" / "commonsense_qa" / "train.jsonl"
    loaded = load_splits(DataConfig(name="commonsense_qa", path=str(train), test_fraction=0.1))
    assert loaded.sizes() == {"train": 7793, "validation": 974, "test": 974}
    assert [o["shared_questions"] for o in loaded.overlap] == [0, 0, 0]  # the file repeats one question


# --------------------------------------------------------------------------- a missing evaluation split


def test_missing_eval_split_is_refused_by_run_and_eval_before_ray(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "test.jsonl", [_mc(i) for i in range(20)])  # the name does not make it test
    base = ["data.name=tinyllm", f"data.path={f}", f"runtime.storage_path={tmp_path}/runs"]
    cfg = load_config("demo_cpu", [*base, "eval.split=test"])
    with pytest.raises(UsageError, match=r"`run` reports eval.split=test: the dataset has no 'test' split "
                                         r"\(available: train, validation\); use eval.split=validation, or "
                                         r"data.files.test: <file>, or data.test_fraction: 0.1"):
        check_runnable(cfg)
    with pytest.raises(UsageError, match=r"no 'test' split .*use --split validation, or .*data\.test_fraction"):
        check_eval(cfg, RunPaths.of(cfg), model=str(tmp_path), split="test", teacher=None)
    check_runnable(load_config("demo_cpu", [*base, "eval.split=test", "data.test_fraction=0.1"]))


def test_hidden_label_test_split_is_named_as_the_reason(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "hub_layout" / "commonsense_qa"
    cfg = load_config("demo_cpu", ["data.name=commonsense_qa", f"data.path={folder}", "eval.split=test",
                                   f"runtime.storage_path={tmp_path}"])
    with pytest.raises(UsageError, match=r"available: train, validation; the test rows read \(1140\) have no gold "
                                         r"answers\); use eval.split=validation"):
        check_runnable(cfg)


# --------------------------------------------------------------------------- overlap between splits


def test_the_same_file_as_train_and_test_is_an_error_unless_allowed(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "data.jsonl", [_mc(i) for i in range(10)])
    cfg = DataConfig(name="tinyllm", files={"train": str(f), "validation": str(f), "test": str(f)})
    with pytest.raises(SplitOverlapError) as info:
        load_splits(cfg)
    msg = str(info.value)
    assert "train ~ test: 10 (e.g. r0 = r0, r1 = r1, r2 = r2), both read from" in msg
    assert "data.split_overlap: drop" in msg and "data.split_overlap: allow" in msg
    allowed = load_splits(cfg.model_copy(update={"split_overlap": "allow"}))
    assert allowed.sizes() == {"train": 10, "validation": 10, "test": 10}
    dropped = load_splits(cfg.model_copy(update={"split_overlap": "drop"}))
    assert dropped.sizes() == {"train": 0, "validation": 0, "test": 10}  # test keeps its rows
    assert dropped.skipped["train"] == {"split_overlap": 10} and dropped.skipped["validation"] == {"split_overlap": 10}


def test_same_question_with_other_choices_is_reported_not_refused(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [_mc(i) for i in range(5)])
    test = _jsonl(tmp_path / "test.jsonl", [_mc(1, id="t1", choices=["x", "beta"]),
                                            _mc(2, id="t2", question="QUESTION 2", choices=["gamma", "beta", "alpha"])])
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(train), "validation": str(train),
                                                           "test": str(test)}, split_overlap="allow"))
    tt = next(o for o in loaded.overlap if o["splits"] == ["train", "test"])
    # Same text after normalising, choices in another order: the same example; other choices: a new one.
    assert (tt["shared_examples"], tt["shared_questions"], tt["examples"]) == (1, 2, [["r2", "t2"]])


def test_real_benchmarks_overlap_measured(shared_data: Path) -> None:
    """OBQA (TinyLLM's copy) repeats examples across its splits; ARC-Challenge reuses stems with new options."""
    obqa = DataConfig(name="tinyllm", path=str(shared_data / "tinyllm" / "obqa"))
    with pytest.raises(SplitOverlapError, match=r"train ~ validation: 7 .*train ~ test: 14 "):
        load_splits(obqa)
    dropped = load_splits(obqa.model_copy(update={"split_overlap": "drop"}))
    assert dropped.sizes()["test"] == 500 and dropped.skipped["train"]["split_overlap"] >= 14
    assert [o["shared_examples"] for o in dropped.overlap] == [0, 0, 0]
    arc = load_splits(DataConfig(name="arc", path=str(shared_data / "ai2_arc"), hub_config="ARC-Challenge"))
    by_pair = {tuple(o["splits"]): o for o in arc.overlap}
    assert (by_pair[("train", "test")]["shared_examples"], by_pair[("train", "test")]["shared_questions"]) == (0, 6)


# --------------------------------------------------------------------------- silent problems made loud


def test_columns_with_a_named_adapter_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"data\.columns names the columns of a data\.name: generic file, but "
                                         r"data\.name is 'svamp'.*set data\.name: generic"):
        DataConfig(name="svamp", path="x.jsonl", columns={"question": "made_up"})
    with pytest.raises(ConfigError, match="data.columns"):
        load_config("demo_cpu", ["data.name=commonsense_qa", "data.path=x.jsonl", "data.columns.question=nope"])


def test_made_up_id_or_context_column_lists_the_file_columns(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "train.jsonl", [{"q": "x?", "opts": ["a", "b"], "gold": "a"}])
    for extra in ({"id": "qid"}, {"context": "passage"}):
        columns = {"question": "q", "choices": "opts", "answer": "gold", **extra}
        with pytest.raises(DataLoadError, match=rf"needs column\(s\) \['{next(iter(extra.values()))}'\] but the "
                                                r"source has \['gold', 'opts', 'q'\]"):
            load_splits(DataConfig(name="generic", files={"train": str(f)}, columns=columns))


@pytest.mark.parametrize("answer", ["twelve", "12 apples", "", True])
def test_a_non_numeric_free_form_answer_is_a_malformed_row(tmp_path: Path, answer: object) -> None:
    rows = [{"ID": f"c{i}", "Body": f"Tom has {i} apples.", "Question": "How many?", "Answer": float(i)}
            for i in range(4)]
    rows.insert(2, {"ID": "bad", "Body": "Tom has some apples.", "Question": "How many?", "Answer": answer})
    f = _jsonl(tmp_path / "test.jsonl", rows)
    reason = "no_answer" if answer == "" else "not_a_number"
    with pytest.raises(MalformedRowError, match=rf"test\.jsonl: line 3: {reason}: "):
        load_splits(DataConfig(name="svamp", files={"test": str(f)}))
    skipped = load_splits(DataConfig(name="svamp", files={"test": str(f)}, on_malformed="skip"))
    assert skipped.skipped == {"test": {reason: 1}} and len(skipped.splits["test"]) == 4


def test_generic_free_form_reads_numbers_and_gsm8k_solutions(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "train.jsonl", [
        {"question": "A?", "answer": "She has 3 + 4 = <<3+4=7>>7 left.\n#### 7"},
        {"question": "B?", "answer": "$1,200.50"},
        {"question": "C?", "answer": -3},
        {"question": "D?", "answer": "seven"},
    ])
    cfg = DataConfig(name="generic", files={"test": str(f)}, columns={"choices": None}, on_malformed="skip")
    loaded = load_splits(cfg)
    assert [(r.answer, r.choices) for r in loaded.splits["test"]] == [("7", ()), ("1200.5", ()), ("-3", ())]
    assert loaded.skipped == {"test": {"not_a_number": 1}}


def test_shared_gsm8k_through_the_generic_adapter(shared_data: Path) -> None:
    f = shared_data / "hub_layout" / "gsm8k" / "test.jsonl"
    loaded = load_splits(DataConfig(name="generic", files={"test": str(f)}, columns={"choices": None}))
    assert loaded.sizes() == {"test": 1319} and not loaded.skipped.get("test")
    assert (loaded.splits["test"][0].id, loaded.splits["test"][0].answer) == ("test-0", "18")


def test_a_broken_json_array_names_its_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "train.json"
    f.write_text('[\n  {"id": "a", "question": "Q?", "choices": ["x", "y"], "answer": "x"},\n  {"id": "b",,}\n]\n')
    with pytest.raises(DataLoadError, match=r"train\.json: line 3 column 14: not valid JSON \(Expecting "):
        load_splits(DataConfig(name="tinyllm", files={"train": str(f)}))


def test_streamed_overlap_decides_each_record_as_apply_overlap_policy_decides_the_split() -> None:
    """One rule for whole and streamed splits: under drop a row goes only when a LATER split has it."""
    def rec(i: int, q: str) -> MCQRecord:
        return MCQRecord(id=f"r{i}", question=q, choices=("a", "b"), answer="a")

    splits = {"train": [rec(0, "q one?"), rec(1, "q two?"), rec(2, "q three?")],
              "validation": [rec(3, "Q one"), rec(4, "q four?")],
              "test": [rec(5, "q four")]}
    assert overlap_compared_splits("validation", list(splits), "drop") == ["test"]
    assert overlap_compared_splits("validation", list(splits), "allow") == ["train", "test"]
    whole, dropped, _ = apply_overlap_policy(splits, "drop", {})
    assert dropped == {"train": 1, "validation": 1}
    for split, records in splits.items():
        others = {s: r for s, r in splits.items() if s != split}
        f = StreamedOverlap(split, others, "drop")
        assert [r for r in records if f.verdict(r) == "keep"] == whole[split]
    f = StreamedOverlap("train", {k: v for k, v in splits.items() if k != "train"}, "error")
    assert [f.verdict(r) for r in splits["train"]] == ["error", "keep", "keep"]
    f = StreamedOverlap("train", {k: v for k, v in splits.items() if k != "train"}, "report")
    assert {f.verdict(r) for r in splits["train"]} == {"keep"} and f.shared == 0

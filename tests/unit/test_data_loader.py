"""load_splits on the real shared files and on small files written per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.data_rows import mc_row as _mc
from tests.unit.data_rows import write_jsonl as _jsonl
from tinyllm_ray.config import ColumnMap, DataConfig
from tinyllm_ray.data import DataLoadError, LoadedData, MalformedRowError, load_splits
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.data.splits import carve, carve_size

# Row counts from ../shared/data/README.md.
TINYLLM_COUNTS = {
    "obqa": {"train": 4957, "validation": 500, "test": 500},
    "arc": {"train": 1117, "validation": 295, "test": 1165},
    "piqa": {"validation": 919, "test": 919},
    "riddle": {"train": 3510, "validation": 511, "test": 510},
    "pubmedqa": {"train": 500, "validation": 100, "test": 400},
}
AI2_ARC_COUNTS = {
    "ARC-Easy": {"train": 2251, "validation": 570, "test": 2376},
    "ARC-Challenge": {"train": 1119, "validation": 299, "test": 1172},
}


def _json_array(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=4))
    return path


# --------------------------------------------------------------------------- real shared data


@pytest.mark.parametrize("ds", sorted(TINYLLM_COUNTS))
def test_tinyllm_shared_splits_load_with_readme_counts(shared_data: Path, ds: str) -> None:
    # split_overlap allow: the README counts the files as published (obqa repeats examples across splits).
    loaded = load_splits(DataConfig(name="tinyllm", path=str(shared_data / "tinyllm" / ds), split_overlap="allow"))
    assert loaded.sizes() == TINYLLM_COUNTS[ds]
    assert all(not c for c in loaded.skipped.values())
    assert loaded.sources["validation"].endswith("valid.json")
    for records in loaded.splits.values():
        assert len({r.id for r in records}) == len(records)
        assert all(r.answer_index is not None for r in records)


def test_tinyllm_shared_record_content(shared_data: Path) -> None:
    loaded = load_splits(DataConfig(name="tinyllm", path=str(shared_data / "tinyllm" / "pubmedqa")))
    r = loaded.splits["train"][0]
    assert r.id == "21645374"
    assert r.choices == ("yes", "no", "maybe")
    assert r.question.startswith("Programmed cell death (PCD) is the regulated death of cells")
    obqa = load_splits(DataConfig(name="tinyllm", path=str(shared_data / "tinyllm" / "obqa"),
                                  limit={"train": 1}))
    first = obqa.splits["train"][0]
    assert (first.id, first.answer_index) == ("7-980", 3)
    assert first.answer == "plants sprouting, blooming and wilting"


def test_piqa_has_no_train_split_and_require_says_the_fix(shared_data: Path) -> None:
    loaded = load_splits(DataConfig(name="tinyllm", path=str(shared_data / "tinyllm" / "piqa")))
    assert "train" not in loaded.splits
    # Validation is real (not carved) and test is untouched.
    assert loaded.sources["validation"].endswith("piqa/valid.json")
    assert loaded.splits["validation"][0].id == "1"  # int ids become strings
    with pytest.raises(DataLoadError, match=r"no 'train' split.*data\.files\.train.*never carved"):
        loaded.require("train")
    assert len(loaded.require("test")) == 919


@pytest.mark.parametrize("subset", sorted(AI2_ARC_COUNTS))
def test_ai2_arc_dir_with_hub_config(shared_data: Path, subset: str) -> None:
    loaded = load_splits(DataConfig(name="arc", path=str(shared_data / "ai2_arc"), hub_config=subset,
                                    split_overlap="allow"))
    assert loaded.sizes() == AI2_ARC_COUNTS[subset]
    assert loaded.sources["train"].endswith(f"{subset}-train.jsonl")
    # Numbered labels ("1".."4") and 3/5-choice questions are all represented.
    sizes = {len(r.choices) for r in loaded.splits["train"]}
    assert {3, 4, 5} <= sizes


def test_ai2_arc_dir_without_hub_config_is_ambiguous(shared_data: Path) -> None:
    with pytest.raises(DataLoadError, match=r"several files.*data\.hub_config"):
        load_splits(DataConfig(name="arc", path=str(shared_data / "ai2_arc")))


def test_named_dataset_on_tinyllm_layout_switches_adapter(shared_data: Path) -> None:
    loaded = load_splits(DataConfig(name="obqa", path=str(shared_data / "tinyllm" / "obqa"),
                                    limit={"train": 3, "validation": 3, "test": 3}))
    assert loaded.sizes() == {"train": 3, "validation": 3, "test": 3}
    assert loaded.splits["train"][0].id == "7-980"


# --------------------------------------------------------------------------- formats and discovery


def test_json_array_and_jsonl_give_the_same_records(tmp_path: Path) -> None:
    rows = [_mc(i) for i in range(5)]
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _jsonl(a / "train.json", rows)
    _json_array(b / "train.json", rows)
    la = load_splits(DataConfig(name="tinyllm", path=str(a)))
    lb = load_splits(DataConfig(name="tinyllm", path=str(b)))
    assert la.splits == lb.splits
    assert len(la.splits["train"]) + len(la.splits["validation"]) == 5


def test_explicit_files_relative_to_path_and_globs(tmp_path: Path) -> None:
    _jsonl(tmp_path / "part-a.jsonl", [_mc(i) for i in range(4)])
    _jsonl(tmp_path / "part-b.jsonl", [_mc(i) for i in range(4, 6)])
    _jsonl(tmp_path / "heldout.jsonl", [_mc(i) for i in range(10, 13)])
    cfg = DataConfig(name="tinyllm", path=str(tmp_path),
                     files={"train": "part-*.jsonl", "validation": "heldout.jsonl"})
    loaded = load_splits(cfg)
    assert [r.id for r in loaded.splits["train"]] == [f"r{i}" for i in range(6)]
    assert [r.id for r in loaded.splits["validation"]] == ["r10", "r11", "r12"]
    assert "test" not in loaded.splits
    assert "part-a.jsonl + " in loaded.sources["train"]
    with pytest.raises(DataLoadError, match=r"data\.files\.test: file 'nope\.jsonl' not found"):
        load_splits(DataConfig(name="tinyllm", path=str(tmp_path), files={"test": "nope.jsonl"}))


def test_split_names_map_dataset_names(tmp_path: Path) -> None:
    _jsonl(tmp_path / "anli_train_r1.jsonl", [
        {"uid": "u1", "premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
        {"uid": "u2", "premise": "A dog runs.", "hypothesis": "A cat sleeps.", "label": 1},
    ])
    _jsonl(tmp_path / "anli_dev_r1.jsonl", [
        {"uid": "u3", "premise": "It rains.", "hypothesis": "It is dry.", "label": 2},
    ])
    loaded = load_splits(DataConfig(name="anli", path=str(tmp_path),
                                    split_names={"train": "train_r1", "validation": "dev_r1"}))
    assert loaded.sizes() == {"train": 2, "validation": 1}
    assert loaded.splits["validation"][0].answer == "contradiction"


def test_single_file_path_is_train_and_gets_carved(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "mydata.jsonl", [_mc(i) for i in range(20)])
    loaded = load_splits(DataConfig(name="tinyllm", path=str(f), validation_fraction=0.25))
    assert loaded.sizes() == {"train": 15, "validation": 5}
    assert "carved with seed 0" in loaded.sources["validation"]


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="does not exist"):
        load_splits(DataConfig(name="tinyllm", path=str(tmp_path / "missing")))


def test_wrong_layout_fails_once_with_the_columns(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [{"text": "hello", "label": 1}])
    with pytest.raises(DataLoadError, match=r"needs column\(s\) \['question', 'choices', 'answerKey'\].*\['label', 'text'\]"):
        load_splits(DataConfig(name="arc", path=str(tmp_path)))


def test_bioasq_object_file_and_broken_json_line(tmp_path: Path) -> None:
    questions = [
        {"id": "b1", "body": "Is A a protein?", "type": "yesno", "exact_answer": "yes", "snippets": [{"text": "A is."}]},
        {"id": "b2", "body": "Which gene?", "type": "factoid", "exact_answer": [["X"]], "snippets": []},
        {"id": "b3", "body": "Is B a gene?", "type": "yesno", "exact_answer": "no", "snippets": []},
    ]
    (tmp_path / "train.json").write_text(json.dumps({"questions": questions}))
    loaded = load_splits(DataConfig(name="bioasq", path=str(tmp_path), on_malformed="skip", split_overlap="allow",
                                    files={"train": "train.json", "test": "train.json"}))
    assert [r.id for r in loaded.splits["test"]] == ["b1", "b3"]
    assert loaded.skipped["test"] == {"not_yesno": 1}
    assert loaded.splits["test"][0].context == "A is."

    bad = tmp_path / "broken.jsonl"  # a blank line before the broken one: the error names line 3, once
    bad.write_text(json.dumps(_mc(1)) + "\n\n{not json\n" + json.dumps(_mc(2)) + "\n")
    with pytest.raises(MalformedRowError) as info:
        load_splits(DataConfig(name="tinyllm", files={"test": str(bad)}))
    assert str(info.value).startswith(f"{bad}: line 3: invalid_json: not valid JSON (Expecting property name")
    assert "row" not in str(info.value).split(". Fix")[0]  # one position: the line an editor shows
    skipped = load_splits(DataConfig(name="tinyllm", files={"test": str(bad)}, on_malformed="skip"))
    assert [r.id for r in skipped.splits["test"]] == ["r1", "r2"]
    assert skipped.skipped["test"] == {"invalid_json": 1}


def test_hidden_label_test_split_is_left_out_not_an_error(tmp_path: Path) -> None:
    def csqa(i: int, key: str) -> dict:
        return {"id": f"c{i}", "question": f"Where is thing {i}?", "question_concept": "thing",
                "choices": {"label": list("ABCDE"), "text": ["bank", "library", "school", "park", "house"]},
                "answerKey": key}

    _jsonl(tmp_path / "train.jsonl", [csqa(i, "B") for i in range(6)])
    _jsonl(tmp_path / "validation.jsonl", [csqa(i, "C") for i in range(6, 8)])
    _jsonl(tmp_path / "test.jsonl", [csqa(i, "") for i in range(8, 11)])
    loaded = load_splits(DataConfig(name="commonsense_qa", path=str(tmp_path)))
    assert loaded.sizes() == {"train": 6, "validation": 2}
    assert loaded.skipped["test"] == {"no_answer": 3}
    assert loaded.splits["validation"][0].answer == "school"
    # One unlabelled row among labelled ones is still a malformed row.
    _jsonl(tmp_path / "test.jsonl", [csqa(8, "A"), csqa(9, "")])
    with pytest.raises(MalformedRowError, match=r"test\.jsonl: line 2: no_answer"):
        load_splits(DataConfig(name="commonsense_qa", path=str(tmp_path)))


# --------------------------------------------------------------------------- generic columns


def _generic_rows() -> list[dict]:
    return [
        {"qid": "g1", "prompt": "Which is a colour?", "opts": ["red", "run", "rock"], "gold": "A", "notes": "n1"},
        {"qid": "g2", "prompt": "Which is a verb?", "opts": ["red", "run", "rock"], "gold": 1, "notes": None},
        {"qid": "g3", "prompt": "Which is a stone?", "opts": ["red", "run", "rock"], "gold": "rock", "notes": "n3"},
    ]


GENERIC_COLUMNS = ColumnMap(id="qid", question="prompt", choices="opts", answer="gold", context="notes")
EXPECTED_GENERIC = [("g1", "red", "n1"), ("g2", "run", None), ("g3", "rock", "n3")]


def _summary(loaded: LoadedData) -> list[tuple]:
    return [(r.id, r.answer, r.context) for r in loaded.splits["test"]]


def test_generic_jsonl(tmp_path: Path) -> None:
    rows = _generic_rows()
    rows[1]["gold"] = "B"  # JSON cannot mix str/int cleanly in arrow; letters it is
    f = _jsonl(tmp_path / "test.jsonl", rows)
    loaded = load_splits(DataConfig(name="generic", columns=GENERIC_COLUMNS, files={"test": str(f)}))
    assert _summary(loaded) == EXPECTED_GENERIC


def test_generic_csv_with_list_cells(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    rows = _generic_rows()
    for r in rows:
        r["gold"] = str(r["gold"]) if r["gold"] != 1 else "B"
    f = tmp_path / "test.csv"
    pd.DataFrame(rows).to_csv(f, index=False)  # list cells become "['red', 'run', 'rock']"
    loaded = load_splits(DataConfig(name="generic", columns=GENERIC_COLUMNS, files={"test": str(f)}))
    assert _summary(loaded) == EXPECTED_GENERIC
    assert loaded.splits["test"][0].choices == ("red", "run", "rock")


def test_generic_parquet_with_int_answers(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = _generic_rows()
    for r, idx in zip(rows, (0, 1, 2), strict=True):
        r["gold"] = idx
    f = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    loaded = load_splits(DataConfig(name="generic", columns=GENERIC_COLUMNS, path=str(tmp_path)))
    assert _summary(loaded) == EXPECTED_GENERIC
    assert loaded.sizes() == {"test": 3}


def test_generic_missing_column_names_the_fix(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "test.jsonl", [{"q": "x?", "opts": ["a", "b"], "gold": "a"}])
    with pytest.raises(DataLoadError, match=r"needs column\(s\) \[.qid., .prompt., .notes.\] but the source has \[.gold., .opts., .q.\]; set data\.columns"):
        load_splits(DataConfig(name="generic", columns=GENERIC_COLUMNS, files={"test": str(f)}))


def test_generic_free_form_and_svamp_file(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "test.jsonl", [
        {"ID": "chal-1", "Body": "Each pack costs 76 dollars.", "Question": "What is the price after a 25 dollar discount?",
         "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"},
        {"ID": "chal-2", "Body": "Tom had 2.5 kg.", "Question": "How much after doubling?", "Equation": "2.5 * 2",
         "Answer": 5.0, "Type": "Multiplication"},
    ])
    loaded = load_splits(DataConfig(name="svamp", files={"test": str(f)}))
    assert [(r.id, r.answer, r.choices) for r in loaded.splits["test"]] == [("chal-1", "51", ()), ("chal-2", "5", ())]


# --------------------------------------------------------------------------- malformed rows


BAD_ROWS = [
    (2, _mc(1, answer=""), "no_answer"),
    (3, _mc(2, answer="delta"), "answer_not_in_choices"),
    (4, _mc(3, question="   "), "empty_question"),
    (5, _mc(4, choices=["alpha"], answer="alpha"), "too_few_choices"),
    (6, _mc(5, choices=[], answer="alpha"), "too_few_choices"),
]


@pytest.mark.parametrize(("row_no", "bad", "reason"), BAD_ROWS)
def test_malformed_row_error_names_file_row_and_reason(tmp_path: Path, row_no: int, bad: dict, reason: str) -> None:
    rows = [_mc(0)] + [_mc(100 + i) for i in range(row_no - 2)] + [bad] + [_mc(200)]
    f = _jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(MalformedRowError) as info:
        load_splits(DataConfig(name="tinyllm", files={"test": str(f)}))
    err = info.value
    assert (err.source, err.row, err.reason) == (str(f), row_no, reason)
    assert str(err).startswith(f"{f}: line {row_no}: {reason}: ")
    assert "on_malformed: skip" in str(err)


def test_skip_counts_by_reason_per_split(tmp_path: Path) -> None:
    train = [_mc(i) for i in range(10)] + [bad for _, bad, _ in BAD_ROWS]
    test = [_mc(50), _mc(51, answer="zeta"), _mc(50)]  # one bad answer, one duplicate id
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "test.jsonl", test)
    loaded = load_splits(DataConfig(name="tinyllm", path=str(tmp_path), on_malformed="skip"))
    assert loaded.skipped == {
        "train": {"no_answer": 1, "answer_not_in_choices": 1, "empty_question": 1, "too_few_choices": 2},
        "test": {"answer_not_in_choices": 1, "duplicate_id": 1},
    }
    assert loaded.total_skipped() == 7
    assert len(loaded.splits["train"]) + len(loaded.splits["validation"]) == 10
    assert [r.id for r in loaded.splits["test"]] == ["r50"]


def test_duplicate_id_is_an_error_naming_the_first_row(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "test.jsonl", [_mc(1), _mc(2), _mc(1, question="Another?")])
    with pytest.raises(MalformedRowError, match=r"line 3: duplicate_id: id 'r1' already used at .*test\.jsonl line 1"):
        load_splits(DataConfig(name="tinyllm", files={"test": str(f)}))


def test_same_id_in_different_splits_is_fine(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [_mc(i) for i in range(4)])
    _jsonl(tmp_path / "valid.jsonl", [_mc(0, question="Another question?")])
    _jsonl(tmp_path / "test.jsonl", [_mc(0, question="A third question?")])
    assert load_splits(DataConfig(name="tinyllm", path=str(tmp_path))).sizes() == {"train": 4, "validation": 1, "test": 1}


def test_fallback_ids_are_unique_per_split(tmp_path: Path) -> None:
    piqa = [{"goal": f"goal {i}", "sol1": "a", "sol2": "b", "label": i % 2} for i in range(3)]
    _jsonl(tmp_path / "train.jsonl", piqa)
    _jsonl(tmp_path / "dev.jsonl", [{**piqa[0], "goal": "another goal"}])
    loaded = load_splits(DataConfig(name="piqa", path=str(tmp_path)))
    assert [r.id for r in loaded.splits["train"]] == ["train-0", "train-1", "train-2"]
    assert [r.id for r in loaded.splits["validation"]] == ["validation-0"]


# --------------------------------------------------------------------------- carving and limits


def _records(n: int) -> list[MCQRecord]:
    return [MCQRecord(id=f"r{i}", question=f"q{i}?", choices=("a", "b"), answer="a") for i in range(n)]


def test_carve_is_deterministic_disjoint_and_ordered() -> None:
    recs = _records(100)
    train, parts = carve(recs, {"validation": carve_size(100, 0.1, None)}, seed=0)
    val = parts["validation"]
    assert (len(train), len(val)) == (90, 10)
    assert {r.id for r in train}.isdisjoint({r.id for r in val})
    assert {r.id for r in train} | {r.id for r in val} == {r.id for r in recs}
    assert [int(r.id[1:]) for r in val] == sorted(int(r.id[1:]) for r in val)  # original order kept
    assert carve(recs, {"validation": 10}, seed=0) == (train, parts)
    assert carve(recs, {"validation": 10}, seed=1)[1]["validation"] != val
    assert carve_size(3, 0.1, None) == 1  # at least one row
    with pytest.raises(DataLoadError, match="leaves none to train on"):
        carve(_records(1), {"validation": 1}, seed=0)


def test_missing_validation_is_carved_from_train_never_test(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [_mc(i) for i in range(40)])
    _jsonl(tmp_path / "test.jsonl", [_mc(i) for i in range(100, 110)])
    cfg = DataConfig(name="tinyllm", path=str(tmp_path), validation_fraction=0.2, seed=7)
    loaded = load_splits(cfg)
    assert loaded.sizes() == {"train": 32, "validation": 8, "test": 10}
    train_ids = {f"r{i}" for i in range(40)}
    assert {r.id for r in loaded.splits["validation"]} <= train_ids
    assert [r.id for r in loaded.splits["test"]] == [f"r{i}" for i in range(100, 110)]
    assert loaded.sources["validation"].startswith("0.2 of train carved with seed 7")
    assert load_splits(cfg).splits == loaded.splits
    other = load_splits(cfg.model_copy(update={"seed": 8}))
    assert other.splits["validation"] != loaded.splits["validation"]


def _svamp_rows(ids: range) -> list[dict]:
    return [{"ID": f"chal-{i}", "Body": f"Tom has {i} apples.", "Question": "How many does he have?",
             "Equation": f"( {i}.0 )", "Answer": float(i)} for i in ids]


def test_resplit_pools_every_split_and_cuts_seeded_sizes(tmp_path: Path) -> None:
    # Mind's Mirror's SVAMP split in miniature: hub 7/3 -> 8/2 of all 10, then validation from train
    _jsonl(tmp_path / "train.jsonl", _svamp_rows(range(1, 8)))
    _jsonl(tmp_path / "test.jsonl", _svamp_rows(range(8, 11)))
    cfg = DataConfig(name="svamp", path=str(tmp_path), resplit={"sizes": {"train": 8, "test": 2}, "seed": 0},
                     validation_size=2, seed=0)
    loaded = load_splits(cfg)
    assert loaded.sizes() == {"train": 6, "validation": 2, "test": 2}
    ids = [r.id for s in ("train", "validation", "test") for r in loaded.splits[s]]
    assert sorted(ids) == sorted(f"chal-{i}" for i in range(1, 11))  # disjoint, nothing lost
    assert load_splits(cfg).splits == loaded.splits  # seeded
    other = load_splits(cfg.model_copy(update={"resplit": cfg.resplit.model_copy(update={"seed": 1})}))
    assert [r.id for r in other.splits["test"]] != [r.id for r in loaded.splits["test"]]
    assert "pooled" in loaded.sources["test"] and loaded.sources["validation"].startswith("2 rows of train")
    with pytest.raises(DataLoadError, match="asks for 11 rows"):
        load_splits(cfg.model_copy(update={"resplit": cfg.resplit.model_copy(update={"sizes": {"train": 11}})}))


def test_resplit_and_validation_size_config_rules() -> None:
    with pytest.raises(ValueError, match="needs a train size"):
        DataConfig(name="svamp", path="x", resplit={"sizes": {"test": 2}})
    with pytest.raises(ValueError, match="re-cuts loaded datasets"):
        DataConfig(name="arithmetic", resplit={"sizes": {"train": 8}})
    with pytest.raises(DataLoadError, match="leaves none to train on"):
        carve(_records(3), {"validation": carve_size(3, 0.1, 3)}, seed=0)
    assert len(carve(_records(10), {"validation": carve_size(10, 0.1, 4)}, seed=0)[1]["validation"]) == 4


def test_limits_take_the_first_rows_after_carving(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [_mc(i) for i in range(40)])
    _jsonl(tmp_path / "test.jsonl", [_mc(i) for i in range(100, 110)])
    full = load_splits(DataConfig(name="tinyllm", path=str(tmp_path)))
    limited = load_splits(DataConfig(name="tinyllm", path=str(tmp_path),
                                     limit={"train": 5, "validation": 2, "test": 3}))
    assert limited.sizes() == {"train": 5, "validation": 2, "test": 3}
    for split in ("train", "validation", "test"):
        assert limited.splits[split] == full.splits[split][: len(limited.splits[split])]


# --------------------------------------------------------------------------- hub path (no network)


def test_hub_dataset_split_mapping_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    row = {"uid": "u", "premise": "P.", "hypothesis": "H.", "label": 0, "reason": ""}
    dd = datasets.DatasetDict({
        name: datasets.Dataset.from_list([{**row, "uid": f"{name}-{i}", "premise": f"P {name} {i}.", "label": i % 3}
                                          for i in range(n)])
        for name, n in (("train_r1", 6), ("dev_r1", 2), ("test_r1", 3), ("train_r2", 5))
    })
    calls: list[tuple] = []

    def fake_load_dataset(path: str, name: str | None = None, **kw: object):
        calls.append((path, name))
        return dd

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_splits(DataConfig(name="anli", path="facebook/anli"))
    assert calls == [("facebook/anli", None)]
    assert loaded.sizes() == {"train": 6, "validation": 2, "test": 3}  # adapter defaults: round 1
    assert loaded.sources["validation"] == "hub:facebook/anli[dev_r1]"
    assert loaded.splits["test"][2].answer == "contradiction"

    r2 = load_splits(DataConfig(name="anli", path="facebook/anli", split_names={"train": "train_r2"}))
    assert [r.id for r in r2.splits["train"]][:2] == ["train_r2-0", "train_r2-1"]
    with pytest.raises(DataLoadError, match=r"split_names\.test='test_r9' is not a split"):
        load_splits(DataConfig(name="anli", path="facebook/anli", split_names={"test": "test_r9"}))

"""File splits streamed row by row (``iter_split`` on JSON Lines, CSV, Parquet) are exactly ``load_splits``' lists.

Same records in the same order (so stores' ``data_hash`` holds), same malformed-row rules
and counts, same error messages, same hidden-label and ``data.split_overlap`` outcomes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.loader import can_stream, iter_split, load_splits, split_size, streams
from tinyllm_ray.data.split_file import load_and_spill
from tinyllm_ray.errors import DataLoadError, MalformedRowError, SplitOverlapError
from tinyllm_ray.store.manifest import data_fingerprint

from .data_rows import mc_row, write_jsonl

SPLITS = ("train", "validation", "test")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _same(cfg: DataConfig, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Every split streams (not a list) to exactly the loaded list; with ``monkeypatch``, never via load_splits."""
    loaded = load_splits(cfg)
    assert streams(cfg) and not can_stream(cfg)
    if monkeypatch is not None:
        from tinyllm_ray.data import loader

        monkeypatch.setattr(loader, "load_splits", lambda *a, **k: pytest.fail("streamed via load_splits"))
    for split in loaded.splits:
        it = iter_split(cfg, split)
        assert not isinstance(it, list)
        got = list(it)
        assert got == loaded.splits[split], split
        assert data_fingerprint(got) == data_fingerprint(loaded.splits[split])
        assert split_size(cfg, split) == len(got)


def _messy_train(tmp_path: Path, name: str = "train.jsonl") -> Path:
    """Valid rows around every kind of malformed row, with CRLF, a lone CR, a BOM and blank lines."""
    good = [json.dumps(mc_row(i)) for i in range(30)]
    lines = [
        "\ufeff" + good[0], good[1], "", "{not json", good[2], "0", json.dumps(mc_row(3, choices=[])),
        json.dumps(mc_row(4, answer="")), good[1],  # duplicate id r1
        json.dumps({k: v for k, v in mc_row(5).items() if k != "id"}),  # fallback id train-<n>
        "   ", *good[6:20],
    ]
    text = "\r\n".join(lines[:6]) + "\r" + "\n".join(lines[6:]) + "\n" + "\n".join(good[20:]) + "\n"
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _files(tmp_path: Path, **over: object) -> dict:
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100 + i) for i in range(8)])
    test = write_jsonl(tmp_path / "test.jsonl", [mc_row(200 + i) for i in range(6)])
    return {"name": "tinyllm", "files": {"train": str(_messy_train(tmp_path)), "validation": str(val),
                                         "test": str(test)}, **over}


def test_jsonl_with_malformed_rows_skipped_duplicates_and_limits(tmp_path, monkeypatch):
    raw = _files(tmp_path, on_malformed="skip")
    _same(DataConfig(**raw, limit={"train": 7, "test": 2}))
    _same(DataConfig(**raw), monkeypatch)
    loaded = load_splits(DataConfig(**raw))
    assert loaded.skipped["train"] and len(loaded.splits["train"]) > 20  # the rows really were mixed


def test_jsonl_errors_are_load_splits_errors_at_the_same_line(tmp_path):
    cfg = DataConfig(**_files(tmp_path))  # on_malformed: error
    with pytest.raises(MalformedRowError) as listed:
        load_splits(cfg)
    with pytest.raises(MalformedRowError) as streamed:
        list(iter_split(cfg, "train"))
    assert str(streamed.value) == str(listed.value) and "line 4" in str(listed.value)


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_line_numbers_in_errors_match_for_every_line_ending(tmp_path, ending):
    lines = ["\ufeff" + json.dumps(mc_row(0)), "", json.dumps(mc_row(1)), " ", json.dumps(mc_row(2, answer="zeta"))]
    train = tmp_path / "train.jsonl"
    train.write_bytes(ending.join(lines).encode())
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100)])
    cfg = DataConfig(name="tinyllm", files={"train": str(train), "validation": str(val)})
    with pytest.raises(MalformedRowError) as listed:
        load_splits(cfg)
    with pytest.raises(MalformedRowError) as streamed:
        list(iter_split(cfg, "train"))
    assert str(streamed.value) == str(listed.value) and "line 5" in str(listed.value)


def test_compressed_json_lines_stream(tmp_path):
    import gzip

    train = tmp_path / "train.jsonl.gz"
    train.write_bytes(gzip.compress("".join(json.dumps(mc_row(i)) + "\n" for i in range(9)).encode()))
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100)])
    _same(DataConfig(name="tinyllm", files={"train": str(train), "validation": str(val)}, limit={"train": 4}))


def test_a_later_splits_error_comes_after_the_streamed_split_as_in_load_splits(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [mc_row(i) for i in range(10)])
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100), mc_row(101, choices=[])])
    cfg = DataConfig(name="tinyllm", files={"train": str(train), "validation": str(val)})
    with pytest.raises(MalformedRowError) as listed:
        load_splits(cfg)
    with pytest.raises(MalformedRowError) as streamed:
        list(iter_split(cfg, "train"))
    assert str(streamed.value) == str(listed.value)
    with pytest.raises(MalformedRowError) as itself:
        list(iter_split(cfg, "validation"))
    assert str(itself.value) == str(listed.value)


def test_an_earlier_splits_error_is_raised_before_any_record(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [mc_row(i) for i in range(4)] + [mc_row(1)])
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100)])
    cfg = DataConfig(name="tinyllm", files={"train": str(train), "validation": str(val)})
    with pytest.raises(MalformedRowError) as listed:
        load_splits(cfg)
    with pytest.raises(MalformedRowError) as streamed:
        iter_split(cfg, "validation")  # train is checked first, as load_splits checks it
    assert str(streamed.value) == str(listed.value) and "already used at" in str(listed.value)


def test_csv_and_parquet_files(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [mc_row(i, answer="gamma" if i % 3 else "beta") for i in range(40)]
    rows[5]["id"] = "r4"  # duplicate, skipped
    rows[9]["answer"] = ""  # no gold answer, skipped
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet", row_group_size=7)
    pq.write_table(pa.Table.from_pylist([mc_row(100 + i) for i in range(5)]), tmp_path / "valid.parquet")
    pd.DataFrame([mc_row(200 + i) for i in range(9)]).to_csv(tmp_path / "test.csv", index=False)
    files = {"train": str(tmp_path / "train.parquet"), "validation": str(tmp_path / "valid.parquet"),
             "test": str(tmp_path / "test.csv")}
    _same(DataConfig(name="tinyllm", files=files, on_malformed="skip"))
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)  # list cells as text: the adapter parses them
    _same(DataConfig(name="tinyllm", files={**files, "train": str(tmp_path / "train.csv")}, on_malformed="skip",
                     limit={"train": 11}), monkeypatch)


def test_a_hidden_label_split_is_left_out_as_in_load_splits(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [mc_row(i) for i in range(12)])
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100 + i) for i in range(4)])
    test = write_jsonl(tmp_path / "test.jsonl", [mc_row(200 + i, answer="") for i in range(5)])
    cfg = DataConfig(name="tinyllm", files={"train": str(train), "validation": str(val), "test": str(test)})
    assert "test" not in load_splits(cfg).splits
    _same(cfg)
    with pytest.raises(DataLoadError) as listed:
        load_splits(cfg).require("test")
    with pytest.raises(DataLoadError) as streamed:
        list(iter_split(cfg, "test"))
    assert str(streamed.value) == str(listed.value)
    # a hidden-label validation file: validation is carved from train, by load_splits
    hidden_val = DataConfig(name="tinyllm", files={"train": str(train), "validation": str(test)})
    assert [list(iter_split(hidden_val, s)) for s in ("train", "validation")] == [
        load_splits(hidden_val).splits[s] for s in ("train", "validation")]


@pytest.mark.parametrize("policy", ["drop", "allow", "error"])
def test_split_overlap_policies(tmp_path, policy):
    train = write_jsonl(tmp_path / "train.jsonl", [mc_row(i) for i in range(15)])
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100), mc_row(3, id="v3"), mc_row(101)])  # r3's example
    test = write_jsonl(tmp_path / "test.jsonl", [mc_row(7, id="t7"), mc_row(200)])  # r7's example
    cfg = DataConfig(name="tinyllm", split_overlap=policy,
                     files={"train": str(train), "validation": str(val), "test": str(test)})
    if policy != "error":
        _same(cfg)
        return
    with pytest.raises(SplitOverlapError) as listed:
        load_splits(cfg)
    for split in SPLITS:
        with pytest.raises(SplitOverlapError) as streamed:
            list(iter_split(cfg, split))
        assert str(streamed.value) == str(listed.value)


def test_json_array_files_and_carving_keep_the_list_path_with_the_same_records(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([mc_row(i) for i in range(10)]))
    val = write_jsonl(tmp_path / "valid.jsonl", [mc_row(100 + i) for i in range(3)])
    cfg = DataConfig(name="tinyllm", files={"train": str(tmp_path / "train.json"), "validation": str(val)})
    _same(cfg)  # the array is read whole, validation streamed
    carved = DataConfig(name="tinyllm", files={"train": str(tmp_path / "train.json")})
    assert not streams(carved)
    files = {"train": str(tmp_path / "train.json"), "validation": str(val)}
    assert not streams(DataConfig(name="tinyllm", files=files, test_size=2))
    assert not streams(DataConfig(name="tinyllm", files=files, resplit={"sizes": {"train": 9, "test": 4}}))
    assert not streams(DataConfig(name="arc", path="allenai/ai2_arc"))  # the hub
    assert list(iter_split(carved, "validation")) == load_splits(carved).splits["validation"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_and_spill_streams_a_file_split(tmp_path, split):
    cfg = DataConfig(**_files(tmp_path, on_malformed="skip"))
    loaded = load_splits(cfg)
    records, pool = load_and_spill(cfg, split)
    assert list(records) == loaded.splits[split]
    assert list(pool) == loaded.splits["train"]


def test_real_shared_obqa_streams_to_the_loaded_records():
    obqa = SHARED / "tinyllm" / "obqa"
    if not obqa.is_dir():
        pytest.skip(f"shared data not found at {obqa}")
    cfg = DataConfig(name="tinyllm", path=str(obqa), split_overlap="drop")  # OpenBookQA repeats 21 examples
    loaded = load_splits(cfg)
    assert loaded.skipped["train"]  # the drop really applied to the streamed split
    assert streams(cfg)
    assert list(iter_split(cfg, "train")) == loaded.splits["train"]

"""Streamed splits (``data.loader.iter_split``) are exactly ``load_splits``' lists, and spilling streams them."""

from __future__ import annotations

import json

import pytest

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.loader import can_stream, iter_split, load_splits, split_size
from tinyllm_ray.data.split_file import load_and_spill
from tinyllm_ray.errors import DataLoadError
from tinyllm_ray.key_index import KeyIndex
from tinyllm_ray.store.manifest import data_fingerprint

CONFIGS = [
    {"name": "synthetic", "synthetic": {"train": 300, "validation": 40, "test": 33}, "seed": 0},
    {"name": "synthetic", "synthetic": {"train": 50, "validation": 20, "test": 9}, "seed": 7,
     "limit": {"train": 17, "test": 4}},
    {"name": "synthetic", "synthetic": {"train": 4000, "validation": 2000, "test": 2}, "seed": 3},  # redraws
    {"name": "arithmetic", "arithmetic": {"train": 400, "validation": 60, "test": 50}, "seed": 0},
    {"name": "arithmetic", "arithmetic": {"train": 120, "validation": 30, "test": 20, "max_steps": 1,
                                          "form": "free"}, "seed": 5, "limit": {"validation": 11}},
]


@pytest.mark.parametrize("raw", CONFIGS)
def test_a_streamed_split_is_the_loaded_list_in_order(raw):
    cfg = DataConfig(**raw)
    loaded = load_splits(cfg)
    assert can_stream(cfg)
    for split in ("train", "validation", "test"):
        streamed = iter_split(cfg, split)
        assert not isinstance(streamed, list)  # a generator, never the whole split
        got = list(streamed)
        assert got == loaded.splits[split], split  # same records, same order: stores' data_hash holds
        assert data_fingerprint(got) == data_fingerprint(loaded.splits[split])
        assert split_size(cfg, split) == len(got)  # counted without the records


def test_small_arithmetic_problem_space_redraws_identically():
    """One-step problems repeat often: the on-disk 'already drawn' index must redraw exactly as the set."""
    cfg = DataConfig(name="arithmetic", arithmetic={"train": 2000, "validation": 300, "test": 300, "max_steps": 1})
    loaded = load_splits(cfg)
    assert [list(iter_split(cfg, s)) for s in ("train", "validation", "test")] == [
        loaded.splits[s] for s in ("train", "validation", "test")]


def test_file_sources_are_not_streamed_but_give_the_same_records(tmp_path):
    rows = [{"id": f"q{i}", "question": f"Q{i}?", "choices": ["a", "b"], "answer": "a"} for i in range(12)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(name="tinyllm", path=str(path))
    assert not can_stream(cfg)
    loaded = load_splits(cfg)
    assert list(iter_split(cfg, "train")) == loaded.splits["train"]
    assert list(iter_split(cfg, "validation")) == loaded.splits["validation"]  # carved: today's path


def test_an_unknown_split_is_a_data_error():
    with pytest.raises(DataLoadError, match="no 'dev' split"):
        iter_split(DataConfig(name="synthetic"), "dev")


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_and_spill_streams_the_split_and_the_train_pool(split):
    cfg = DataConfig(name="synthetic", synthetic={"train": 150, "validation": 10, "test": 70}, seed=1)
    loaded = load_splits(cfg)
    records, pool = load_and_spill(cfg, split)
    assert list(records) == loaded.splits[split] and list(pool) == loaded.splits["train"]
    assert (records is pool) == (split == "train")


def test_key_index_put_new_and_membership():
    ix = KeyIndex()
    assert ix.put_new("a", 1) is None and ix.put_new("a", 2) == 1 and ix.put_new("b") is None
    assert "a" in ix and "c" not in ix and len(ix) == 2
    ix.add(["b", "c"], "here")  # the first value wins; values may be text
    assert ix.get(["a", "b", "c", "d"]) == {"a": 1, "b": 0, "c": "here"}
    ix.close()

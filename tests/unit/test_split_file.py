"""The spilled generation split (data/split_file.py): same examples as the list, nothing kept per example."""

from __future__ import annotations

import os
import threading

import pytest

from tinyllm_ray.data import split_file
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.data.split_file import spill
from tinyllm_ray.prompts import sample_icl_examples
from tinyllm_ray.store.manifest import data_fingerprint
from tinyllm_ray.teachers.prompt_rows import examples_by_id, shard_slice


def records(n: int) -> list[MCQRecord]:
    return [MCQRecord(f"q{i}", f"What is {i}?", (f"{i}", f"{i + 1}", "x") if i % 3 else (),
                      f"{i}", f"ctx {i}" if i % 2 else None) for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 7, 130])
def test_the_spilled_split_reads_back_as_the_list(n, tmp_path):
    recs = records(n)
    f = spill(iter(recs), str(tmp_path), rows_per_batch=8)
    assert os.listdir(tmp_path) == []  # unlinked once open: a killed driver leaves nothing
    assert len(f) == n and list(f) == recs and f[:] == recs
    assert [f[i] for i in range(n)] == recs and (n == 0 or f[-1] == recs[-1])
    assert f[3:20:2] == recs[3:20:2]
    assert data_fingerprint(f) == data_fingerprint(recs)  # the manifest's data_hash is unchanged
    for s in range(-(-n // 5)):
        assert list(shard_slice(f, s, 5)) == list(shard_slice(recs, s, 5))
        assert examples_by_id(f, s, 5) == examples_by_id(recs, s, 5)
    with pytest.raises(IndexError):
        f[n]
    f.close()


def test_in_context_draws_are_the_same_and_memory_is_bounded_by_the_batch_cache():
    recs = records(1000)
    f = spill(recs, rows_per_batch=16)
    for i in range(0, 1000, 37):
        assert sample_icl_examples(f, 3, 7, f"q{i}") == sample_icl_examples(recs, 3, 7, f"q{i}")
    assert len(f._cache) <= split_file.CACHED_BATCHES


def test_concurrent_readers_see_the_same_examples():
    recs = records(500)
    f = spill(recs, rows_per_batch=10)
    bad: list[int] = []

    def read(start: int) -> None:
        for k in range(2000):
            i = (start + 7 * k) % 500
            if f[i] != recs[i]:
                bad.append(i)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_the_file_holds_every_field_of_a_record():
    """A field added to MCQRecord must be spilled too, or generation would silently drop it."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(MCQRecord)}
    assert set(split_file._SCHEMA.names) == names
    assert set(split_file._FIELDS) | {"choices"} == names

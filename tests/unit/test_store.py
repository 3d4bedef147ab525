"""Rationale store: atomic shards, resume bookkeeping, manifest checks, stats in footers."""

from __future__ import annotations

import json

import pytest

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.store.manifest import build_manifest, data_fingerprint
from tinyllm_ray.store.stats import KindStats, TeacherStats, format_table, total
from tinyllm_ray.store.store import (
    RECORD_SCHEMA,
    RationaleStore,
    StoreMismatchError,
    manifest_conflicts,
    resolve_filesystem,
)


def row(ex: str, kind: str = "rationale", s: int = 0, e: int = -1) -> dict:
    return {"kind": kind, "teacher": "llama", "example_id": ex, "split": "train", "sample_idx": s, "eval_idx": e,
                "prompt_hash": "abc", "question": "Q?", "context": None, "choices": ["a", "b"], "answer": "a",
                "rationale": "because", "parsed_answer": None, "answer_match": None, "verdict": None, "critique": None,
                "prompt_tokens": 3, "output_tokens": 4, "finish_reason": "stop"}


def shard_stats(kept: int) -> TeacherStats:
    st = TeacherStats("llama", shards=1, generation_seconds=2.0)
    st.kinds["rationale"] = KindStats(prompts=kept, outputs=kept + 1, kept=kept,
                                      dropped={"empty": 1, "unparsable": 0, "answer_mismatch": 0,
                                               "verdict_wrong": 0}, output_tokens=40)
    return st


def test_write_read_shards_and_resume_bookkeeping(tmp_path):
    store = RationaleStore(str(tmp_path / "store"))
    assert store.finished_shards("llama") == set()
    store.write_shard("llama", 3, [row("q1"), row("q2")], [row("q1", "self_eval", 0, 0)], shard_stats(2))
    store.write_shard("llama", 0, [], [], shard_stats(0))  # an all-dropped shard still commits
    assert store.finished_shards("llama") == {0, 3}
    files = sorted(p.name for p in (tmp_path / "store/records/teacher=llama/kind=rationale").iterdir())
    assert files == ["shard-00000.parquet", "shard-00003.parquet"]  # no temporary leftovers
    table = store.read_table("rationale")
    assert table.schema == RECORD_SCHEMA and table.num_rows == 2
    assert store.read_table("self_eval").num_rows == 1
    assert store.teachers() == ["llama"]
    stats = store.shard_stats("llama")
    assert set(stats) == {0, 3} and stats[3].kept == 2
    agg = total("llama", stats.values())
    assert agg.kept == 2 and agg.outputs == 4 and agg.shards == 2 and agg.tokens_per_s == pytest.approx(20.0)
    store.write_stats(agg)
    back = json.loads((tmp_path / "store/stats/llama.json").read_text())
    assert back["kept"] == 2 and back["dropped"]["empty"] == 2 and back["tokens_per_s"] == 20.0
    assert store.read_stats("llama").to_dict() == agg.to_dict()


def test_rewriting_a_shard_replaces_it(tmp_path):
    store = RationaleStore(str(tmp_path))
    store.write_shard("t", 0, [row("q1"), row("q2")], None, shard_stats(2))
    store.write_shard("t", 0, [row("q1")], None, shard_stats(1))
    assert store.read_table().num_rows == 1


def test_temporary_files_are_invisible_and_cleaned(tmp_path):
    store = RationaleStore(str(tmp_path))
    store.write_shard("t", 0, [row("q1")], None, shard_stats(1))
    d = tmp_path / "records/teacher=t/kind=rationale"
    (d / ".shard-00001.parquet.dead.tmp").write_bytes(b"partial")
    assert store.finished_shards("t") == {0}
    assert store.remove_temporary_files("t") == 1
    assert sorted(p.name for p in d.iterdir()) == ["shard-00000.parquet"]


def test_fsspec_uri_goes_through_the_same_code(tmp_path):
    store = RationaleStore("memory://tinyllm-test/store")
    store.write_shard("t", 1, [row("q1")], None, shard_stats(1))
    assert store.finished_shards("t") == {1}
    assert store.read_table().column("example_id").to_pylist() == ["q1"]


def test_resolve_filesystem_kinds(tmp_path):
    _fs, path, obj = resolve_filesystem("relative/dir")
    assert path.endswith("relative/dir") and path.startswith("/") and not obj
    _fs, path, obj = resolve_filesystem(f"file://{tmp_path}")
    assert path == str(tmp_path) and not obj


def cfg(**teacher_kw) -> JobConfig:
    t = {"name": "llama", "model": "/m/llama"}
    t.update(teacher_kw)
    return JobConfig(data={"name": "synthetic"}, teachers=[TeacherConfig(**t)])


RECS = [MCQRecord(f"q{i}", f"Question {i}?", ("a", "b"), "a") for i in range(5)]


def test_manifest_accepts_resource_changes_and_new_teachers(tmp_path):
    store = RationaleStore(str(tmp_path))
    store.open_manifest(build_manifest(cfg(), "train", RECS, 2))
    store.open_manifest(build_manifest(cfg(replicas=4, num_cpus=2, batch_size=7), "train", RECS, 2))
    two = JobConfig(data={"name": "synthetic"},
                    teachers=[TeacherConfig(name="llama", model="/m/llama"), TeacherConfig(name="qwen", model="/m/q")])
    merged = store.open_manifest(build_manifest(two, "train", RECS, 2))
    assert set(merged["teachers"]) == {"llama", "qwen"}
    assert set(store.read_manifest()["teachers"]) == {"llama", "qwen"}


def test_manifest_refuses_a_changed_generation_setup(tmp_path):
    store = RationaleStore(str(tmp_path))
    store.open_manifest(build_manifest(cfg(), "train", RECS, 2))
    with pytest.raises(StoreMismatchError, match=r"teacher 'llama' changed \(sampling.max_tokens\).*run_name"):
        store.open_manifest(build_manifest(cfg(sampling={"max_tokens": 9}), "train", RECS, 2))
    with pytest.raises(StoreMismatchError, match="shard_size"):
        store.open_manifest(build_manifest(cfg(), "train", RECS, 3))
    with pytest.raises(StoreMismatchError, match="examples differ"):
        store.open_manifest(build_manifest(cfg(), "train", RECS[:4], 2))


def test_manifest_conflicts_is_pure_and_lists_fields():
    a = build_manifest(cfg(), "train", RECS, 2)
    b = build_manifest(JobConfig(data={"name": "synthetic"}, teachers=[TeacherConfig(name="llama", model="/m/llama")],
                                 filter={"require_answer_match": True}), "train", RECS, 2)
    problems = manifest_conflicts(a, b)
    assert len(problems) == 1 and "filter.require_answer_match" in problems[0]
    assert manifest_conflicts(a, a) == []
    assert data_fingerprint(RECS) != data_fingerprint(list(reversed(RECS)))


def test_stats_roundtrip_check_and_table():
    st = shard_stats(3)
    st.note_drop("rationale:empty", "x" * 500)
    d = st.to_dict()
    assert d["outputs"] == d["kept"] + sum(d["dropped"].values())
    assert len(d["drop_examples"]["rationale:empty"][0]) == 200
    assert TeacherStats.from_dict(d).to_dict() == d
    bad = shard_stats(3)
    bad.kinds["rationale"].kept = 10
    with pytest.raises(ValueError, match="outputs 4 != kept 10"):
        bad.check()
    table = format_table([st])
    assert "teacher" in table.splitlines()[0] and "llama" in table.splitlines()[2]
    with pytest.raises(ValueError):
        TeacherStats("a").merge(TeacherStats("b"))


def test_markers_and_has_file_for_readers_of_a_growing_store(tmp_path):
    store = RationaleStore(str(tmp_path))
    path = store.shard_path("t", "rationale", 0)
    assert not store.has_file(path)
    store.write_shard("t", 0, [row("q1")], None, shard_stats(1))
    assert store.has_file(path)
    assert not store.has_marker("GENERATION_FAILED") and store.read_marker("GENERATION_FAILED") is None
    store.write_marker("GENERATION_FAILED", "teacher 'x' failed")
    assert store.has_marker("GENERATION_FAILED") and store.read_marker("GENERATION_FAILED") == "teacher 'x' failed"
    store.remove_marker("GENERATION_FAILED")
    store.remove_marker("GENERATION_FAILED")  # idempotent
    assert not store.has_marker("GENERATION_FAILED")
    with pytest.raises(ValueError):
        store.marker_path("../escape")

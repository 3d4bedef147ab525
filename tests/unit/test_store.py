"""Rationale store: atomic shards, resume bookkeeping, manifest checks, stats in footers."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import InternalError, StoreMismatchError, StreamingError
from tinyllm_ray.store import FAILED_SCHEMA, RECORD_SCHEMA, STORED_KINDS, RationaleStore, resolve_filesystem
from tinyllm_ray.store.layout import (
    StoreLayout,
    is_temporary,
    num_shards,
    shard_index,
    shard_length,
    temporary_path,
)
from tinyllm_ray.store.manifest import (
    MANIFEST_VERSION,
    RESOURCE_FIELDS,
    build_manifest,
    data_fingerprint,
    manifest_conflicts,
)
from tinyllm_ray.store.stats import KindStats, StatsError, TeacherStats, format_table, total


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


# --------------------------------------------------------------------------- failed generations


def failed_row(ex: str, s: int = 0, e: int = -1, error: str = "engine died") -> dict:
    return row(ex, "failed", s, e) | {"rationale": None, "error": error}


def shard_stats_with_failures(kept: int, failed: int) -> TeacherStats:
    st = shard_stats(kept)
    st.kinds["rationale"].failed = failed
    return st


def test_failed_rows_have_their_own_partition_stats_and_reader(tmp_path):
    store = RationaleStore(str(tmp_path))
    store.write_shard("llama", 0, [row("q1")], None, shard_stats_with_failures(1, 2),
                      failed=[failed_row("q2", 0), failed_row("q2", 1, error="timeout")])
    store.write_shard("llama", 1, [row("q3")], None, shard_stats(1))
    assert (tmp_path / "records/teacher=llama/kind=failed/shard-00000.parquet").is_file()
    failed = store.failed_rows("llama")
    assert failed.schema == FAILED_SCHEMA and failed.num_rows == 2
    assert failed.column("error").to_pylist() == ["engine died", "timeout"]
    assert set(failed.column("kind").to_pylist()) == {"failed"}
    # student readers never see them
    assert store.read_table("rationale").num_rows == 2
    assert store.row_counts() == {("llama", "rationale"): 2, ("llama", "self_eval"): 0}
    assert store.row_counts(kinds=STORED_KINDS)[("llama", "failed")] == 2
    assert store.read_shard("llama", "failed", 1).num_rows == 0
    agg = total("llama", store.shard_stats("llama").values())
    assert agg.failed == 2 and agg.to_dict()["failed"] == 2 and agg.outputs == agg.kept + sum(agg.dropped.values())
    assert "failed" in format_table([agg]).splitlines()[0]
    assert failed_rows_ok(store.failed_rows("nobody"))


def failed_rows_ok(table) -> bool:
    return table.num_rows == 0 and table.schema == FAILED_SCHEMA


def test_failed_rows_must_match_the_statistics_and_a_rewrite_clears_them(tmp_path):
    store = RationaleStore(str(tmp_path))
    with pytest.raises(StatsError, match="1 failed rows but the statistics count 0") as e:
        store.write_shard("t", 0, [row("q1")], None, shard_stats(1), failed=[failed_row("q2")])
    assert isinstance(e.value, InternalError) and not store.finished_shards("t")
    store.write_shard("t", 0, [row("q1")], None, shard_stats_with_failures(1, 1), failed=[failed_row("q2")])
    store.write_shard("t", 0, [row("q1"), row("q2")], None, shard_stats(2))  # a retry that succeeded
    assert store.failed_rows("t").num_rows == 0 and store.read_table().num_rows == 2
    (tmp_path / "records/teacher=t/kind=failed").mkdir(exist_ok=True)
    (tmp_path / "records/teacher=t/kind=failed/.shard-00003.parquet.x.tmp").write_bytes(b"partial")
    assert store.remove_temporary_files("t") == 1


# --------------------------------------------------------------------------- manifest


@pytest.mark.parametrize("change", [
    {"resources": {"teacher_node": 1.0}}, {"replicas": 3}, {"num_cpus": 4}, {"batch_size": 5},
    {"gpu_memory_utilization": 0.5}, {"kv_cache_space_gib": 8}, {"tensor_parallel_size": 2},
])
def test_output_neutral_teacher_fields_never_cause_a_mismatch(tmp_path, change):
    store = RationaleStore(str(tmp_path))
    store.open_manifest(build_manifest(cfg(), "train", RECS, 2))
    store.open_manifest(build_manifest(cfg(**change), "train", RECS, 2))
    assert set(change) <= RESOURCE_FIELDS


@pytest.mark.parametrize("change,field", [
    ({"dtype": "bfloat16"}, "dtype"), ({"model": "/m/other"}, "model"), ({"prompt_style": "cot"}, "prompt_style"),
    ({"sampling": {"seed": 7}}, "sampling.seed"), ({"engine_kwargs": {"enforce_eager": True}}, "engine_kwargs"),
])
def test_output_changing_teacher_fields_are_named_in_the_mismatch(tmp_path, change, field):
    store = RationaleStore(str(tmp_path))
    store.open_manifest(build_manifest(cfg(), "train", RECS, 2))
    with pytest.raises(StoreMismatchError, match=rf"teacher 'llama' changed \({field}"):
        store.open_manifest(build_manifest(cfg(**change), "train", RECS, 2))


def test_a_store_of_another_format_version_is_refused(tmp_path):
    store = RationaleStore(str(tmp_path))
    old = build_manifest(cfg(), "train", RECS, 2) | {"version": 1}
    store.write_manifest(old)
    assert MANIFEST_VERSION == 2
    with pytest.raises(StoreMismatchError, match="store format version 1 != 2.*delete the store"):
        store.open_manifest(build_manifest(cfg(), "train", RECS, 2))


# --------------------------------------------------------------------------- one code path for every URI


@pytest.fixture(params=["memory", "file"])
def uri(request, tmp_path):
    if request.param == "memory":
        return f"memory://tinyllm-store-test/{tmp_path.name}/store"
    return f"file://{tmp_path}/store"


def test_local_and_fsspec_uris_share_one_code_path(uri):
    store = RationaleStore(uri)
    assert not store.object_store and not store.exists()
    assert isinstance(store.fs, pafs.PyFileSystem if uri.startswith("memory") else pafs.LocalFileSystem)
    with store.writer_lock():
        store.open_manifest(build_manifest(cfg(), "train", RECS, 2))
        store.remove_temporary_files("llama")
        store.write_shard("llama", 0, [row("q0"), row("q1")], [row("q0", "self_eval", 0, 0)],
                          shard_stats_with_failures(2, 1), failed=[failed_row("q1", 1)])
        store.write_shard("llama", 2, [row("q4")], [], shard_stats(1))
        store.write_stats(total("llama", store.shard_stats("llama").values()))
    again = RationaleStore(uri)  # a reader in the same process, e.g. the trainer
    assert again.exists() and again.read_manifest()["version"] == MANIFEST_VERSION
    assert again.teachers() == ["llama"] and again.finished_shards("llama") == {0, 2}
    assert sorted(again.shard_files("llama")) == [0, 2]
    assert again.row_counts(["llama"]) == {("llama", "rationale"): 3, ("llama", "self_eval"): 1}
    assert again.read_table().column("example_id").to_pylist() == ["q0", "q1", "q4"]
    assert again.read_shard("llama", "rationale", 2, ["example_id"]).to_pylist() == [{"example_id": "q4"}]
    batches = list(again.iter_batches("llama", "rationale", ["example_id", "record_key", "nope"]))
    assert sum(b.num_rows for b in batches) == 3 and batches[0].schema.names == ["example_id", "record_key"]
    assert again.failed_rows("llama").column("example_id").to_pylist() == ["q1"]
    assert again.read_stats("llama").failed == 1 and again.read_stats("llama").kept == 3
    assert again.shard_ready(["llama"], 2) == {"llama": True} and again.shard_ready(["llama"], 1) == {"llama": False}
    again.wait_for_shard(["llama"], 0, poll_s=0.01, timeout_s=1)
    again.mark_generation_failed("teacher 'llama' failed: boom")
    with pytest.raises(StreamingError, match="boom"):
        again.wait_for_shard(["llama"], 1, poll_s=0.01, timeout_s=5)
    again.clear_generation_failed()
    with pytest.raises(StreamingError, match=r"shard 1 of teacher\(s\) \['llama'\] not written"):
        again.wait_for_shard(["llama"], 1, poll_s=0.01, timeout_s=0.05)


def test_store_contracts_are_defined_once():
    from tinyllm_ray import store as pkg
    from tinyllm_ray.store import layout, schema, stats

    assert stats.KINDS is schema.KINDS and pkg.KINDS is schema.KINDS
    assert pkg.DEFAULT_SHARD_SIZE == layout.DEFAULT_SHARD_SIZE
    assert pkg.resolve_shard_size(None, None, [100]) == (100, pkg.resolve_shard_size(None, None, [1])[1])
    assert schema.schema_for("failed") is FAILED_SCHEMA and schema.schema_for("rationale") is RECORD_SCHEMA
    with pytest.raises(ValueError, match="unknown record kind"):
        schema.schema_for("dropped")


def test_layout_paths_and_names():
    lay = StoreLayout("/r")
    assert lay.shard_path("t", "failed", 7) == "/r/records/teacher=t/kind=failed/shard-00007.parquet"
    assert lay.stats_path("t") == "/r/stats/t.json" and lay.manifest_path == "/r/manifest.json"
    assert lay.writer_lock_path == "/r/.writer.lock" and StoreLayout("/").join("a") == "/a"
    assert shard_index("shard-00012.parquet") == 12 and shard_index(".shard-00012.parquet.ab.tmp") is None
    tmp = temporary_path("/r/x/shard-00001.parquet")
    assert tmp.startswith("/r/x/.shard-00001.parquet.") and is_temporary(tmp.rsplit("/", 1)[1])
    assert StoreLayout.teacher_of("teacher=a=b") == "a=b" and StoreLayout.teacher_of("other") is None


def test_shard_length_counts_a_shard_without_its_examples():
    assert [shard_length(1001, s, 100) for s in range(num_shards(1001, 100))] == [100] * 10 + [1]
    assert sum(shard_length(256, s, 256) for s in range(num_shards(256, 256))) == 256
    with pytest.raises(ValueError):
        shard_length(1001, 11, 100)

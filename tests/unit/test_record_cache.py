"""Record cache (store/record_cache.py) and superseding changed shards (store/manifest.py): pure, no Ray."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store import RationaleStore
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.manifest import build_manifest, manifest_changes
from tinyllm_ray.store.record_cache import (
    FROM_CACHE,
    CacheCounts,
    RecordCache,
    format_cache_counts,
    split_shards,
)
from tinyllm_ray.store.stats import KindStats, TeacherStats

KEY = KeyContext("llama", "tiny:llama", "sha256:abc", "3", '{"n":2}', '{"evals_per_cot":2}')


def prompt(ex: str, shard: int = 0, phash: str | None = None) -> dict:
    return {"example_id": ex, "split": "train", "shard": shard, "prompt": f"P {ex}", "prompt_hash": phash or f"h{ex}"}


def outputs(ex: str, n: int = 2, evals: int = 2, shard: int = 0, error_sample: int | None = None) -> list[dict]:
    """What the engine returns for one prompt: n CoTs, each with ``evals`` self-evaluations."""
    base = {"example_id": ex, "split": "train", "shard": shard, "prompt_tokens": 5, "finish_reason": "stop",
            "gen_seconds": 0.5, "error": None}
    rows = []
    for j in range(n):
        failed = j == error_sample
        rows.append({**base, "kind": "rationale", "sample_idx": j, "eval_idx": -1, "prompt_hash": f"h{ex}",
                     "text": f"cot {ex} {j}", "output_tokens": 3, "n_evals": 0 if failed else evals,
                     "error": "HTTP 500: boom" if failed else None})
        if not failed:
            rows += [{**base, "kind": "self_eval", "sample_idx": j, "eval_idx": e, "prompt_hash": f"se{ex}{j}",
                      "text": f"ok Verdict: right {e}", "output_tokens": 2, "n_evals": 0} for e in range(evals)]
    return rows


@pytest.fixture(params=["local", "memory"])
def cache_uri(request, tmp_path):
    return str(tmp_path / "cache") if request.param == "local" else f"memory://record-cache-test/{tmp_path.name}"


def test_context_id_is_stable_and_ignores_prompts():
    same = KeyContext(*(getattr(KEY, f) for f in ("teacher", "model", "model_revision", "template_version",
                                                   "sampling", "self_eval_sampling")))
    assert KEY.context_id() == same.context_id() and len(KEY.context_id()) == 16
    other = KeyContext("llama", "tiny:llama", "sha256:abc", "3", '{"n":2,"seed":1}', '{"evals_per_cot":2}')
    assert other.context_id() != KEY.context_id()


def test_cached_prompts_are_served_restamped_and_the_rest_are_misses(cache_uri):
    ctx = RecordCache(cache_uri).context(KEY)
    assert ctx.put(outputs("a") + outputs("b", error_sample=1)) == 6 + 3  # the failed CoT is not cached
    fresh = RecordCache(cache_uri).context(KEY)  # a later run: reads the part files
    served, misses = fresh.lookup([prompt("a2", shard=4, phash="ha"), prompt("b"), prompt("c")], n=2)
    assert [m["example_id"] for m in misses] == ["b", "c"]  # b: one CoT failed, c: never generated
    assert len(served) == 6 and all(r["example_id"] == "a2" and r["shard"] == 4 and r[FROM_CACHE] for r in served)
    cots = sorted((r["sample_idx"], r["text"]) for r in served if r["kind"] == "rationale")
    assert cots == [(0, "cot a 0"), (1, "cot a 1")]
    assert sorted((r["sample_idx"], r["eval_idx"]) for r in served if r["kind"] == "self_eval") == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    assert "record_key" not in served[0] and "cot_key" not in served[0]
    assert fresh.put(served) == 0  # served rows are never written back


def test_a_cot_without_all_its_self_evaluations_is_a_miss(cache_uri):
    ctx = RecordCache(cache_uri).context(KEY)
    rows = [r for r in outputs("a") if not (r["kind"] == "self_eval" and r["sample_idx"] == 1 and r["eval_idx"] == 1)]
    ctx.put(rows)
    served, misses = RecordCache(cache_uri).context(KEY).lookup([prompt("a")], n=2)
    assert served == [] and len(misses) == 1


def test_another_context_sees_nothing_and_writers_do_not_collide(cache_uri):
    c1, c2 = RecordCache(cache_uri).context(KEY), RecordCache(cache_uri).context(KEY)
    c1.put(outputs("a"))
    c2.put(outputs("b"))  # a concurrent writer: its own part file
    served, misses = RecordCache(cache_uri).context(KEY).lookup([prompt("a"), prompt("b")], n=2)
    assert not misses and len(served) == 12
    other = KeyContext("qwen", "tiny:qwen2", "sha256:abc", "3", '{"n":2}', '{"evals_per_cot":2}')
    assert RecordCache(cache_uri).context(other).lookup([prompt("a")], n=2)[0] == []


def test_temporary_files_are_ignored_and_the_index_follows_own_writes(tmp_path):
    ctx = RecordCache(str(tmp_path)).context(KEY)
    assert ctx.lookup([prompt("a")], n=2)[0] == []  # index loaded (empty) ...
    ctx.put(outputs("a"))
    assert len(ctx.lookup([prompt("a")], n=2)[0]) == 6  # ... and extended by put
    folder = tmp_path / f"ctx={KEY.context_id()}"
    (folder / ".part-x.parquet.1234.tmp").write_bytes(b"half a file")
    assert len(RecordCache(str(tmp_path)).context(KEY).lookup([prompt("a")], n=2)[0]) == 6
    assert (folder / "context.json").exists()


def test_the_key_index_is_on_disk_first_part_wins_and_answers_only_what_is_asked():
    from tinyllm_ray.key_index import KeyIndex

    ix = KeyIndex()
    keys = [f"{i:032x}" for i in range(1200)]  # more than one IN (...) chunk
    ix.add(keys[:700], 0)
    ix.add(keys[600:], 1)  # 600..699 already held by part 0: the first part wins
    got = ix.get(keys + ["f" * 32, "not hex"])
    assert len(ix) == 1200 and set(got) == set(keys)  # absent keys are absent, never an error
    assert {got[k] for k in keys[:700]} == {0} and {got[k] for k in keys[700:]} == {1}
    assert ix.get([]) == {} and ix.get([keys[5]]) == {keys[5]: 0}


def test_a_lookup_reads_one_shard_of_many_without_a_per_prompt_index_in_memory(cache_uri):
    from tinyllm_ray.key_index import KeyIndex

    writer = RecordCache(cache_uri).context(KEY)
    for s in range(6):  # one part file per committed shard
        writer.put([r for e in range(3) for r in outputs(f"s{s}e{e}", shard=s)])
    fresh = RecordCache(cache_uri).context(KEY)
    served, misses = fresh.lookup([prompt("s4e1", shard=4), prompt("s0e2"), prompt("new")], n=2)
    assert [m["example_id"] for m in misses] == ["new"]
    assert {r["example_id"] for r in served} == {"s4e1", "s0e2"} and len(served) == 12
    assert isinstance(fresh._index, KeyIndex) and len(fresh._index) == 6 * 3 * 2  # every CoT key, on disk
    assert len(fresh._parts) == 6 and len(fresh._open) <= 4  # per part file (shard), never per prompt
    fresh.put(outputs("new"))  # own writes join the index at once
    assert len(fresh.lookup([prompt("new")], n=2)[0]) == 6


def test_split_shards_counts_hits_and_misses_per_prompt(tmp_path):
    ctx = RecordCache(str(tmp_path)).context(KEY)
    ctx.put(outputs("a"))
    counts = CacheCounts()
    got = list(split_shards(ctx, [[prompt("a")], [prompt("b", shard=1)]], 2, counts))
    assert [(len(s), len(m)) for s, m in got] == [(6, 0), (0, 1)]
    assert counts.to_dict() == {"hits": 1, "misses": 1}
    off = CacheCounts()
    assert [len(m) for _s, m in split_shards(None, [[prompt("a")]], 2, off)] == [1] and off.misses == 1
    assert format_cache_counts({"llama": counts.to_dict(), "idle": {"hits": 0, "misses": 0}}) == [
        "teacher llama: 1 of 2 prompts served from the record cache, 1 generated"]


def test_record_cache_config_defaults_and_off():
    rt = JobConfig().runtime
    assert rt.record_cache and rt.resolved_record_cache_uri == "./runs/record_cache"
    assert JobConfig(runtime={"record_cache": False}).runtime.resolved_record_cache_uri is None
    assert JobConfig(runtime={"record_cache_uri": "s3://b/c"}).runtime.resolved_record_cache_uri == "s3://b/c"


# --------------------------------------------------------------------------- superseding (store/manifest.py)

RECS = [MCQRecord(f"q{i}", f"Question {i}?", ("a", "b"), "a") for i in range(4)]


def two(max_tokens: int = 64, **job) -> JobConfig:
    return JobConfig(data={"name": "synthetic"}, teachers=[
        TeacherConfig(name="llama", model="/m/llama", sampling={"max_tokens": max_tokens}),
        TeacherConfig(name="qwen", model="/m/qwen")], **job)


def fill(store: RationaleStore) -> None:
    row = {"kind": "rationale", "teacher": "x", "example_id": "q0", "split": "train", "sample_idx": 0, "eval_idx": -1,
           "prompt_hash": "h", "question": "Q", "context": None, "choices": ["a", "b"], "answer": "a",
           "rationale": "r", "parsed_answer": None, "answer_match": None, "verdict": None, "critique": None,
           "prompt_tokens": 1, "output_tokens": 1, "finish_reason": "stop"}
    for t in ("llama", "qwen"):
        st = TeacherStats(t, shards=1)
        st.kinds["rationale"] = KindStats(prompts=1, outputs=1, kept=1)
        store.write_shard(t, 0, [{**row, "teacher": t}], None, st)
        store.write_stats(st)


def test_a_changed_teacher_is_superseded_alone(tmp_path, caplog):
    store = RationaleStore(str(tmp_path / "s"))
    store.open_manifest(build_manifest(two(), "train", RECS, 2))
    fill(store)
    with pytest.raises(StoreMismatchError, match=r"teacher 'llama' changed.*record_cache: true"):
        store.open_manifest(build_manifest(two(max_tokens=9), "train", RECS, 2))
    with caplog.at_level("WARNING"):
        merged = store.open_manifest(build_manifest(two(max_tokens=9), "train", RECS, 2), supersede=True)
    assert store.finished_shards("llama") == set() and store.finished_shards("qwen") == {0}
    moved = list((tmp_path / "s/superseded").glob("*/records/teacher=llama/kind=rationale/shard-00000.parquet"))
    assert len(moved) == 1 and list((tmp_path / "s/superseded").glob("*/stats/llama.json"))
    assert merged["teachers"]["llama"]["config"]["sampling"]["max_tokens"] == 9
    assert store.read_manifest() == merged
    assert [r.getMessage() for r in caplog.records if "superseded" in r.getMessage()] and \
        "sampling.max_tokens" in caplog.text and "qwen" not in caplog.text


def test_a_changed_common_part_supersedes_every_teacher(tmp_path):
    store = RationaleStore(str(tmp_path / "s"))
    old = build_manifest(two(), "train", RECS, 2)
    store.open_manifest(old)
    fill(store)
    new = build_manifest(two(filter={"require_answer_match": True}), "train", RECS, 2)
    assert manifest_changes(old, new).common and not manifest_changes(old, new).teachers
    assert store.open_manifest(new, supersede=True) == new
    assert store.finished_shards("llama") == set() == store.finished_shards("qwen")
    assert len(list((tmp_path / "s/superseded").glob("*/manifest.json"))) == 1
    assert store.open_manifest(new) == new  # now the store matches: no more moves


def test_superseding_works_on_fsspec_uris(tmp_path):
    store = RationaleStore(f"memory://supersede-test/{tmp_path.name}")
    store.open_manifest(build_manifest(two(), "train", RECS, 2))
    fill(store)
    store.open_manifest(build_manifest(two(max_tokens=9), "train", RECS, 2), supersede=True)
    assert store.finished_shards("llama") == set() and store.finished_shards("qwen") == {0}

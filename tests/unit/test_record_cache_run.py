"""The record cache inside ``GenerationRun`` (real ``TeacherEngine`` on a fake LLM, no Ray; see
``test_teacher_serving.fake_serving``): hits start no engine, a changed teacher or filter
regenerates only what it touches, and the cache off keeps the refusal."""

from __future__ import annotations

import pytest

from tests.unit.test_teacher_serving import fake_serving, job
from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store import RationaleStore
from tinyllm_ray.teachers.pipeline import GenerationRun

TEACHERS = ({"name": "tf", "model": "org/a", "batch_size": 2},
            {"name": "mirror", "model": "org/b", "self_eval": True, "prompt_style": "cot", "batch_size": 2,
             "sampling": {"n": 2, "temperature": 0.7, "seed": 3}})
COMPARED = ["teacher", "kind", "example_id", "sample_idx", "eval_idx", "record_key", "rationale", "parsed_answer",
            "verdict", "critique", "output_tokens"]


def cfg_in(tmp_path, store: str, teachers=TEACHERS, runtime=None, **kw):
    cfg = job(tmp_path, teachers=teachers, self_eval={"evals_per_cot": 2, "temperature": 0.7}, **kw)
    raw = cfg.model_dump(mode="json")
    raw["runtime"].update({"store_uri": str(tmp_path / store), **(runtime or {})})
    return type(cfg).model_validate(raw)


def records(cfg) -> list[tuple]:
    store = RationaleStore(cfg.runtime.resolved_store_uri)
    rows = store.read_table("rationale").to_pylist() + store.read_table("self_eval").to_pylist()
    return sorted(tuple(r[c] for c in COMPARED) for r in rows)


def run(cfg, shard_size=None):
    r = GenerationRun(cfg, shard_size=shard_size)
    list(r)
    return r.report


def test_a_fresh_store_with_the_same_config_is_served_entirely_from_the_cache(monkeypatch, tmp_path):
    first = fake_serving(monkeypatch)
    a = cfg_in(tmp_path, "a")
    rep = run(a, 4)
    assert sorted(set(first.started)) == ["mirror", "tf"]
    assert rep.record_cache == {"tf": {"hits": 0, "misses": 8}, "mirror": {"hits": 0, "misses": 8}}
    second = fake_serving(monkeypatch)
    b = cfg_in(tmp_path, "b")
    rep2 = run(b, 4)
    assert second.started == []  # no engine at all
    assert rep2.record_cache == {"tf": {"hits": 8, "misses": 0}, "mirror": {"hits": 8, "misses": 0}}
    assert records(a) == records(b) and len(records(b)) > 16
    assert sum(rep2.run_output_tokens.values()) == 0  # nothing generated, everything stored
    assert {t: s.outputs for t, s in rep2.teachers.items()} == {t: s.outputs for t, s in rep.teachers.items()}
    assert "8 of 8 prompts served from the record cache, 0 generated" in rep2.summary()
    assert rep2.to_dict()["record_cache"] == rep2.record_cache


def test_a_changed_teacher_alone_is_regenerated_and_its_old_shards_kept_aside(monkeypatch, tmp_path):
    fake_serving(monkeypatch)
    a = cfg_in(tmp_path, "a")
    run(a, 4)
    changed = ({**TEACHERS[0]}, {**TEACHERS[1], "sampling": {**TEACHERS[1]["sampling"], "max_tokens": 9}})
    served = fake_serving(monkeypatch)
    rep = run(cfg_in(tmp_path, "a", teachers=changed))
    assert served.started == ["mirror"]
    assert rep.shards_skipped == {"tf": 2, "mirror": 0} and rep.shards_written == {"tf": 0, "mirror": 2}
    assert rep.record_cache["mirror"] == {"hits": 0, "misses": 8}
    assert list((tmp_path / "a/superseded").glob("*/records/teacher=mirror/kind=rationale/shard-00000.parquet"))
    assert not list((tmp_path / "a/superseded").glob("*/records/teacher=tf"))


def test_a_changed_filter_refilters_cached_outputs_without_generating(monkeypatch, tmp_path):
    fake_serving(monkeypatch)
    a = cfg_in(tmp_path, "a")
    before = run(a, 4)
    served = fake_serving(monkeypatch)
    strict = cfg_in(tmp_path, "a", filter={"min_rationale_chars": 10_000})
    after = run(strict)
    assert served.started == [] and after.shards_written == {"tf": 2, "mirror": 2}
    assert after.teachers["mirror"].outputs == before.teachers["mirror"].outputs
    assert before.teachers["mirror"].kinds["rationale"].kept > 0 == after.teachers["mirror"].kinds["rationale"].kept


def test_without_the_cache_a_changed_config_is_still_refused(monkeypatch, tmp_path):
    served = fake_serving(monkeypatch)
    a = cfg_in(tmp_path, "a", runtime={"record_cache": False})
    rep = run(a, 4)
    assert rep.record_cache is None and not (tmp_path / "runs/record_cache").exists()
    with pytest.raises(StoreMismatchError, match="record_cache: true"):
        run(cfg_in(tmp_path, "a", runtime={"record_cache": False}, filter={"drop_verdict_wrong": True}))
    assert sorted(set(served.started)) == ["mirror", "tf"]

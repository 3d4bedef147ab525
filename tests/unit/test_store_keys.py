"""Record keys (content-addressed provenance) and the store's one-writer lock."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.errors import UsageError, UserError
from tinyllm_ray.store import keys
from tinyllm_ray.store.keys import KeyContext, canonical_json, key_context_for, model_revision
from tinyllm_ray.store.store import RationaleStore


def model_dir(tmp_path, weights=b"\x00\x01" * 100):
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text('{"a": 1}')
    (d / "tokenizer.json").write_text('{"v": 2}')
    (d / "model.safetensors").write_bytes(weights)
    (d / ".cache").mkdir(exist_ok=True)
    (d / ".cache" / "junk").write_text("ignored")
    return d


def test_model_revision_hashes_content_and_caches(tmp_path, monkeypatch):
    d = model_dir(tmp_path)
    rev = model_revision(str(d))
    assert rev.startswith("sha256:") and len(rev) == len("sha256:") + 32
    assert model_revision(f"file://{d}") == rev
    (d / ".cache" / "junk").write_text("hidden files do not count")
    assert model_revision(str(d)) == rev
    # cached by (path, size, mtime): a second call reads no file
    monkeypatch.setattr(keys, "_CHUNK", 0)  # would loop forever if it read
    assert model_revision(str(d)) == rev
    monkeypatch.undo()
    (d / "model.safetensors").write_bytes(b"\x00\x02" * 100)  # same size, new content + mtime
    assert model_revision(str(d)) != rev


def test_model_revision_of_hub_names_and_missing_paths(tmp_path):
    assert model_revision("Qwen/Qwen2.5-0.5B-Instruct") == "hub:Qwen/Qwen2.5-0.5B-Instruct"
    assert model_revision(str(tmp_path / "nope")) == f"path:{tmp_path / 'nope'}"


def job(**sampling) -> tuple[TeacherConfig, JobConfig]:
    t = TeacherConfig(name="llama", model="tiny:llama", sampling=sampling)
    return t, JobConfig(data={"name": "synthetic"}, teachers=[t])


def test_key_context_and_record_keys(tmp_path):
    d = model_dir(tmp_path)
    t, cfg = job(temperature=0.7, seed=3)
    ctx = key_context_for(t, str(d), cfg, "v1")
    assert ctx.teacher == "llama" and ctx.model == "tiny:llama" and ctx.model_revision == model_revision(str(d))
    assert ctx.self_eval_sampling is None and '"seed":3' in ctx.sampling
    t4, cfg4 = job(temperature=0.7, seed=4)
    k = ctx.record_key("abc", "rationale", 0, -1)
    assert len(k) == 32 and int(k, 16) >= 0
    assert k == key_context_for(t, str(d), cfg, "v1").record_key("abc", "rationale", 0, -1)  # deterministic
    others = {
        ctx.record_key("abd", "rationale", 0, -1),
        ctx.record_key("abc", "rationale", 1, -1),
        ctx.record_key("abc", "self_eval", 0, 0),
        key_context_for(t, str(d), cfg, "v2").record_key("abc", "rationale", 0, -1),
        key_context_for(t4, str(d), cfg4, "v1").record_key("abc", "rationale", 0, -1),
    }
    assert k not in others and len(others) == 5
    assert ctx.columns() == {"model": "tiny:llama", "model_revision": ctx.model_revision, "template_version": "v1"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.teacher = "other"


def test_self_eval_sampling_changes_only_self_eval_keys():
    t = TeacherConfig(name="q", model="hub/q")
    a = key_context_for(t, "hub/q", JobConfig(teachers=[t], self_eval={"enabled": True, "temperature": 0.0}), "v1")
    b = key_context_for(t, "hub/q", JobConfig(teachers=[t], self_eval={"enabled": True, "temperature": 0.5}), "v1")
    assert a.record_key("h", "rationale", 0, -1) == b.record_key("h", "rationale", 0, -1)
    assert a.record_key("h", "self_eval", 0, 0) != b.record_key("h", "self_eval", 0, 0)
    assert KeyContext("q", "hub/q", "hub:hub/q", "v1", "{}").record_key("h", "self_eval", 0, 0)


def test_writer_lock_allows_one_writer_per_local_store(tmp_path):
    a, b = RationaleStore(str(tmp_path / "s")), RationaleStore(f"file://{tmp_path / 's'}")
    with a.writer_lock():
        with pytest.raises(UsageError, match=r"being written by another generation.*runtime.store_uri") as e, \
                b.writer_lock():
            pass
        assert isinstance(e.value, UserError) and str(tmp_path / "s") in str(e.value)
    with b.writer_lock():  # released on exit
        pass
    assert a.teachers() == []  # the lock file is no record


def test_writer_lock_is_by_convention_on_object_like_stores(caplog):
    caplog.set_level("INFO")
    with RationaleStore("memory://lock-test/s").writer_lock(), RationaleStore("memory://lock-test/s").writer_lock():
        pass
    assert "by convention" in caplog.text


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers() | st.floats(allow_nan=False) | st.text(),
                       max_size=5))
def test_canonical_json_ignores_key_order(d):
    assert canonical_json(d) == canonical_json(dict(reversed(list(d.items()))))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.sampled_from(["rationale", "self_eval"]),
                          st.integers(0, 3), st.integers(-1, 3)), min_size=2, max_size=8, unique=True))
def test_distinct_outputs_get_distinct_keys(outputs):
    ctx = KeyContext("t", "m", "hub:m", "v1", "{}", "{}")
    assert len({ctx.record_key(*o) for o in outputs}) == len(outputs)

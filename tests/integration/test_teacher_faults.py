"""A dead teacher does not kill the job: real vLLM (CPU build) engine actors killed mid-batch.

The fault is injected inside the real engine actor (``TINYLLM_FAULT_INJECT``, read on the
driver): the actor sends itself SIGKILL (or raises an engine error) after its CoTs of the
chosen batch are generated and before the self-evaluations, i.e. in the middle of a
batch. One greedy tiny teacher, 16 questions, shards = batches of 4 (4 batches), self-
evaluation on; each test costs one run plus one engine restart per injected death.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_generate import EVALS, N_TRAIN, make_cfg
from tinyllm_ray.teachers import GenerationError, RationaleStore, run_generation
from tinyllm_ray.teachers.faults import FAULT_ENV

pytestmark = pytest.mark.slow

SHARD = 4
KEY = ["teacher", "example_id", "sample_idx", "eval_idx"]
COMPARED = KEY + ["prompt_hash", "rationale", "parsed_answer", "verdict", "critique", "output_tokens",
                  "finish_reason", "record_key"]


def llama_cfg(store: Path, tiny_cache: Path, **teacher):
    cfg = make_cfg(store, tiny_cache, teachers=("llama",))
    if teacher:
        cfg = cfg.model_copy(update={"teachers": [cfg.teachers[0].model_copy(update=teacher)]})
    return cfg


def _table(store: Path, kind: str):
    return RationaleStore(str(store)).read_table(kind).to_pandas()


def _same_records(store: Path, reference: Path) -> None:
    for kind in ("rationale", "self_eval"):
        got, want = _table(store, kind), _table(reference, kind)
        assert not got.duplicated(KEY).any(), f"{kind}: a record stored twice"
        a = want[COMPARED].sort_values(KEY).reset_index(drop=True)
        b = got[COMPARED].sort_values(KEY).reset_index(drop=True)
        assert a.equals(b), f"{kind} records differ from the run without a fault"


def _engines_released() -> None:
    """Restarted and refusing engine actors end with the run: every CPU comes back."""
    import ray

    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


def _neutral(stats):
    return stats.to_dict() | {"generation_seconds": 0, "tokens_per_s": 0}


@pytest.fixture(scope="module")
def reference(ray_session, tiny_cache, tmp_path_factory):
    """The same teacher and data, no fault: what every faulty run must end up storing."""
    store = tmp_path_factory.mktemp("ref") / "store"
    report = run_generation(llama_cfg(store, tiny_cache), shard_size=SHARD, print_summary=False)
    assert report.faults["llama"]["restarts"] == 0 and report.faults["llama"]["failed_batches"] == 0
    return store, report


def test_killed_engine_is_restarted_and_its_batch_retried_exactly_once(reference, tiny_cache, tmp_path,
                                                                       monkeypatch):
    ref_store, ref_report = reference
    monkeypatch.setenv(FAULT_ENV, "teacher=llama,batch=1,action=kill,times=1")
    store = tmp_path / "store"
    t0 = time.perf_counter()
    report = run_generation(llama_cfg(store, tiny_cache), shard_size=SHARD)
    print(f"\nrun with one SIGKILL mid-batch: {time.perf_counter() - t0:.1f}s, faults {report.faults}")
    f = report.faults["llama"]
    assert (f["restarts"], f["retried_batches"], f["failed_batches"]) == (1, 1, 0)
    assert "pid" in f["last_reason"] and "died during batch 1" in f["last_reason"]
    assert report.shards_written == {"llama": N_TRAIN // SHARD}
    st = report.teachers["llama"]
    assert st.failed == 0 and st.kinds["rationale"].outputs == N_TRAIN
    assert st.kinds["self_eval"].outputs == st.kinds["self_eval"].prompts * EVALS
    rat = _table(store, "rationale")
    assert sorted(rat.example_id) == sorted(f"syn-train-{i:05d}" for i in range(N_TRAIN))  # one each
    _same_records(store, ref_store)
    assert _neutral(st) == _neutral(ref_report.teachers["llama"])
    assert "engine restarted 1 time(s)" in report.summary()
    _engines_released()


def test_batch_that_always_kills_its_engine_is_stored_failed_then_retried_alone(reference, tiny_cache, tmp_path,
                                                                                 monkeypatch):
    ref_store, ref_report = reference
    store = tmp_path / "store"
    cfg = llama_cfg(store, tiny_cache, max_restarts=3, max_batch_retries=1)
    monkeypatch.setenv(FAULT_ENV, "teacher=llama,batch=2,action=kill,times=99")
    report = run_generation(cfg, shard_size=SHARD, print_summary=False)
    f = report.faults["llama"]
    print(f"\npoison batch: faults {f}")
    assert (f["restarts"], f["failed_batches"], f["failed_rows"]) == (2, 1, SHARD)  # 1 + max_batch_retries deaths
    st = report.teachers["llama"]
    assert st.failed == SHARD and st.kinds["rationale"].outputs == N_TRAIN - SHARD  # the job went on
    assert report.shards_written == {"llama": N_TRAIN // SHARD}
    failed = RationaleStore(str(store)).failed_rows("llama").to_pandas()
    assert len(failed) == SHARD and failed.error.str.contains("died on 2 attempt").all()
    assert set(failed.example_id).isdisjoint(set(_table(store, "rationale").example_id))
    assert RationaleStore(str(store)).read_stats("llama").failed == SHARD

    monkeypatch.delenv(FAULT_ENV)
    again = run_generation(cfg, print_summary=False)  # generates the failed CoTs, and only those
    assert again.shards_written == {"llama": 0} and again.shards_retried == {"llama": 1}
    assert again.run_output_tokens["llama"] < ref_report.run_output_tokens["llama"] / 2
    assert len(RationaleStore(str(store)).failed_rows("llama")) == 0
    _same_records(store, ref_store)
    assert _neutral(again.teachers["llama"]) == _neutral(ref_report.teachers["llama"])
    third = run_generation(cfg, print_summary=False)  # nothing left: no engine starts
    assert third.shards_written == {"llama": 0} and third.shards_retried == {"llama": 0}


def test_teacher_that_keeps_dying_ends_the_job_with_its_reason(ray_session, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "teacher=llama,batch=*,action=raise,times=99")
    store = tmp_path / "store"
    cfg = llama_cfg(store, tiny_cache, max_restarts=1, max_batch_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(GenerationError) as err:
        run_generation(cfg, shard_size=SHARD, print_summary=False)
    msg = str(err.value)
    print(f"\ngave up after {time.perf_counter() - t0:.1f}s: {msg}")
    assert "teacher 'llama'" in msg and "max_restarts=1" in msg and "injected engine error" in msg
    assert len(msg.splitlines()) == 1
    _engines_released()

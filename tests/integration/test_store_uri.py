"""``generate`` then ``train`` through a ``file://`` store URI: the pyarrow/fsspec path, not os paths.

Why: the store promises one code path for a local path and any URI. Every other
integration test passes a plain path; this one makes the teachers write and the
student read ``runtime.store_uri: file:///...`` through the same jobs the CLI runs.
Tiny on purpose (2-core machine): one tiny Llama teacher on 8 questions (16 new tokens),
a tiny T5 student, one worker, ZeRO-0, 2 optimizer steps. Measured alone on the 2-core
machine: 58-70 s (Ray start ~10 s, generate 14-17 s, train 36-43 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tinyllm_ray.config import JobConfig

pytestmark = pytest.mark.slow

N_TRAIN = 8


def _cfg(tmp: Path) -> JobConfig:
    store_uri = f"file://{tmp / 'store'}"
    return JobConfig.model_validate({
        "data": {"name": "synthetic", "synthetic": {"train": N_TRAIN, "validation": 4, "test": 4}},
        "teachers": [{"name": "llama", "model": "tiny:llama", "dtype": "float32", "max_model_len": 512,
                      "kv_cache_space_gib": 0.25, "num_cpus": 1, "batch_size": 4,
                      "sampling": {"temperature": 0.0, "max_tokens": 16, "seed": 0}}],
        "prompts": {"icl_k": 0},
        # keep every non-empty text: a random tiny teacher rarely states a parsable answer
        "filter": {"drop_empty": True, "drop_unparsable": False},
        "student": {"model": "tiny", "max_input_length": 96, "max_target_length": 16},
        "train": {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0, "micro_batch_size": 4, "max_steps": 2,
                  "eval_every_steps": 2, "checkpoint_every_steps": 2, "eval_max_new_tokens": 4, "eval_limit": 4},
        "runtime": {"storage_path": str(tmp / "runs"), "run_name": "uri", "store_uri": store_uri,
                    "store_shard_size": 4},
    })


def test_generate_then_train_through_a_file_uri_store(ray_session, tiny_cache, tmp_path):
    from tinyllm_ray import jobs
    from tinyllm_ray.store import RationaleStore
    from tinyllm_ray.store.manifest import MANIFEST_VERSION

    cfg = _cfg(tmp_path)
    assert cfg.runtime.resolved_store_uri.startswith("file:///")
    t0 = time.perf_counter()
    gen = jobs.generate(cfg)
    t_gen = time.perf_counter() - t0

    store = RationaleStore(cfg.runtime.resolved_store_uri)
    root = tmp_path / "store"
    assert gen["store_uri"] == cfg.runtime.resolved_store_uri
    assert store.finished_shards("llama") == {0, 1}
    assert sorted(p.name for p in (root / "records/teacher=llama/kind=rationale").iterdir()) == [
        "shard-00000.parquet", "shard-00001.parquet"]  # committed under the URI's path, no temporary leftovers
    assert store.read_manifest()["version"] == MANIFEST_VERSION
    stats = store.read_stats("llama")
    assert stats.prompts == N_TRAIN and stats.outputs == N_TRAIN and stats.failed == 0
    kept = store.row_counts(["llama"])[("llama", "rationale")]
    assert kept == stats.kept > 0
    table = store.read_table("rationale")
    assert table.num_rows == kept and set(table.column("teacher").to_pylist()) == {"llama"}
    assert store.failed_rows("llama").num_rows == 0

    t1 = time.perf_counter()
    res = jobs.train(cfg)
    t_train = time.perf_counter() - t1
    print(f"\nfile:// store: generate {t_gen:.1f}s, train {t_train:.1f}s, {kept} rationales kept")
    assert res["final_step"] == 2
    assert res["data"]["rows_per_task"]["rationale:llama"] == kept
    assert res["data"]["store_uri"] == cfg.runtime.resolved_store_uri
    assert res["model_dir"] and Path(res["model_dir"]).is_dir()

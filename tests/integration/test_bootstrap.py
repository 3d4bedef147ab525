"""A bootstrapped teacher for real: trained through Ray Train + DeepSpeed (a few steps), cached,
then served by vLLM in a Ray actor through the unchanged generation pipeline, with
self-evaluation. Checks that the pipeline parses what it wrote (records, verdicts, stats),
never the teacher's accuracy. Cost here: ~60 s (Ray Train worker start + ~60 steps, one
vLLM engine start); the cached second resolution takes well under a second."""

from __future__ import annotations

import time

import pytest

from tinyllm_ray.config import validate_config
from tinyllm_ray.prompts import parse_answer

pytestmark = pytest.mark.slow


def test_bootstrap_then_serve_through_the_generation_pipeline(ray_session, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLLM_CACHE", str(tiny_cache))
    from tinyllm_ray.teachers import RationaleStore, run_generation
    from tinyllm_ray.teachers.bootstrap import MARKER, bootstrapped_path, ensure_bootstrapped

    cfg = validate_config({
        "data": {"name": "arithmetic", "arithmetic": {"train": 8, "validation": 4, "test": 4, "max_steps": 2}},
        "teachers": [{"name": "boot", "model": "tiny:qwen2?hidden_size=128&num_layers=1&num_heads=2",
                      "bootstrap": {"num_problems": 200, "max_steps": 60, "lr": 0.003, "micro_batch_size": 8,
                                    "warmup_steps": 5},
                      "dtype": "float32", "max_model_len": 1024, "kv_cache_space_gib": 0.25, "num_cpus": 1,
                      "batch_size": 8, "sampling": {"temperature": 0.0, "max_tokens": 48, "seed": 0}}],
        "prompts": {"icl_k": 0, "icl_strategy": "none"},
        "self_eval": {"enabled": True, "max_tokens": 32},
        "filter": {"drop_empty": True, "drop_unparsable": False},
        "runtime": {"store_uri": str(tmp_path / "store"), "storage_path": str(tmp_path / "runs")},
    })
    teacher = cfg.teachers[0]
    t0 = time.perf_counter()
    paths = ensure_bootstrapped(cfg)
    trained = time.perf_counter() - t0
    folder = bootstrapped_path(cfg, teacher)
    assert paths == {"boot": str(folder)} and (folder / MARKER).is_file() and (folder / "tokenizer.json").is_file()
    t1 = time.perf_counter()
    assert ensure_bootstrapped(cfg) == paths  # cached: no training
    cached = time.perf_counter() - t1

    t2 = time.perf_counter()
    report = run_generation(cfg, print_summary=False)
    served = time.perf_counter() - t2
    print(f"\nbootstrap {trained:.1f}s, cached {cached:.2f}s, generation {served:.1f}s")
    assert cached < 5

    store = RationaleStore(str(tmp_path / "store"))
    stats = store.read_stats("boot").to_dict()  # 8 CoT prompts + 8 self-evaluation prompts
    assert stats["prompts"] == 8 + 8 and stats["outputs"] == stats["kept"] + sum(stats["dropped"].values())
    rat = store.read_table("rationale").to_pylist()
    assert rat and all(r["model_revision"].startswith("sha256:") for r in rat)
    assert all(r["model"] == teacher.model for r in rat)
    for r in rat:  # what the pipeline stored is what its parser reads
        parsed = parse_answer(r["rationale"], r["choices"])
        assert r["parsed_answer"] == (parsed.text if parsed else None)
    print("rationale e.g.:", rat[0]["rationale"][:160], "| parsed", sum(r["parsed_answer"] is not None for r in rat),
          "of", len(rat))
    se = store.read_table("self_eval").to_pylist()
    print("self-evaluations kept:", len(se), "e.g.", se[:1] and (se[0]["verdict"], se[0]["critique"][:80]))
    assert all(r["verdict"] is None or r["verdict"] in cfg.self_eval.verdicts for r in se)
    assert report is not None

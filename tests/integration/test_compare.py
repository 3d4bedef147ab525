"""`tinyllm-ray compare --quick` for real: vLLM teachers fill ONE store (the derived Mind's
Mirror CoT entry samples 3 CoTs and self-evaluates them), the teachers' own rows are
measured, Ray Tune runs one trial per setting (Ray Train + DeepSpeed students, seeds inside
the trial), and the table is written as Markdown, JSON and PNG.

What is checked is that the table is produced and well-formed — never an accuracy (the
teachers are tiny random models).
"""

from __future__ import annotations

import json
import time

import pytest

from tinyllm_ray.config import TinyModelConfig, load_config
from tinyllm_ray.models.tiny import tiny_model_path

pytestmark = pytest.mark.slow


def test_compare_quick_writes_a_well_formed_table(ray_session, tiny_cache, tmp_path):
    from tinyllm_ray.compare.run import run_compare
    from tinyllm_ray.compare.table import SCHEMA_VERSION

    llama = tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    qwen = tiny_model_path(TinyModelConfig(family="qwen2"), tiny_cache)
    overrides = [
        "data.synthetic.train=24", "data.synthetic.validation=4", "data.synthetic.test=6",
        f"teachers.0.model={llama}", f"teachers.1.model={qwen}",
        "teachers.0.kv_cache_space_gib=0.25", "teachers.1.kv_cache_space_gib=0.25",
        "teachers.0.sampling.max_tokens=12", "teachers.1.sampling.max_tokens=12",
        "student.max_input_length=192", "student.max_target_length=24",
        "train.micro_batch_size=8", "train.eval_every_steps=2", "train.checkpoint_every_steps=2",
        "train.eval_max_new_tokens=6", "eval.max_new_tokens=6", "self_eval.max_tokens=12",
        "compare.quick_max_steps=4", "compare.seeds=2",
        f"runtime.storage_path={tmp_path / 'runs'}", "runtime.run_name=cmp", "runtime.store_shard_size=8",
    ]
    cfg = load_config("demo_cpu", overrides)
    t0 = time.perf_counter()
    out = run_compare(cfg, mode="quick")
    print(f"compare --quick: {time.perf_counter() - t0:.1f} s; timings {out['timings']}")

    assert out["settings"] == ["label_only", "tinyllm", "mm_cots_selfeval"]
    assert out["failed"] == {}, out["failed"]
    folder = tmp_path / "runs" / "cmp" / "compare"
    doc = json.loads((folder / "compare.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["meta"]["mode"] == "quick"
    assert [s["setting"] for s in doc["settings"]] == out["settings"]
    for s in doc["settings"]:
        assert s["status"] == "ok" and s["n_seeds"] == 2 and [x["seed"] for x in s["seeds"]] == [0, 1]
        assert 0.0 <= s["mean"] <= 1.0 and s["sd"] is not None and s["sd"] >= 0.0
        assert set(s["by_difficulty"]) == {"all"}
        for x in s["seeds"]:
            assert x["total"] == 6 and x["steps"] in (4, 2 * 2)  # two stages share the budget
    by = {s["setting"]: s for s in doc["settings"]}
    assert by["label_only"]["teachers"] == [] and by["mm_cots_selfeval"]["teachers"] == ["llama_cot"]
    assert [t["teacher"] for t in doc["teachers"]] == ["llama", "qwen"]  # llama_cot serves llama's model
    assert all(t["status"] == "ok" and t["total"] == 6 for t in doc["teachers"])
    assert {c["question"] for c in doc["claims"]} >= {
        "TinyLLM: does the multi-teacher student beat label-only fine-tuning?"}
    md = (folder / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(doc["settings"]) + len(doc["teachers"])
    assert len({line.count("|") for line in rows}) == 1
    assert (folder / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # one store: the self-evaluating setting read the stored self-evaluations; TinyLLM left them out
    trials = {n: json.loads((folder / "trials" / f"{n}.json").read_text()) for n in out["settings"]}
    assert trials["mm_cots_selfeval"]["data"]["ignored_kinds"] == {}
    assert trials["mm_cots_selfeval"]["data"]["ignored_teachers"].keys() == {"llama", "qwen"}
    assert trials["tinyllm"]["data"]["ignored_teachers"].keys() == {"llama_cot"}

    # a causal student on the same store (nothing generated again): its rows in the table too
    causal = load_config("demo_cpu", [*overrides, "student.tiny.family=llama", "compare.seeds=1",
                                      "compare.settings=[label_only,tinyllm]"])
    t0 = time.perf_counter()
    out = run_compare(causal, mode="quick")
    print(f"compare --quick, causal student: {time.perf_counter() - t0:.1f} s")
    doc = json.loads((folder / "compare.json").read_text())
    assert out["failed"] == {} and [s["setting"] for s in doc["settings"]] == ["label_only", "tinyllm"]
    assert doc["meta"]["student_kind"] == "causal" and all(s["status"] == "ok" for s in doc["settings"])

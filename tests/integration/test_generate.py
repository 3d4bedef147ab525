"""Generation with real vLLM (CPU build) engines in Ray actors: two tiny teachers of
different families, resume after a kill, determinism, and failure reporting.

Kept small on purpose (2-core CI machine): 16 questions, 16-32 new tokens, one engine per
teacher. The first run is shared by the tests of this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tinyllm_ray.config import TinyModelConfig, dump_config, validate_config
from tinyllm_ray.models.tiny import tiny_model_path
from tinyllm_ray.teachers import GenerationError, GenerationRun, RationaleStore, run_generation

pytestmark = pytest.mark.slow

N_TRAIN = 16
SHARD = 4
EVALS = 2
QWEN_N = 2
KEY = ["teacher", "example_id", "sample_idx", "eval_idx"]
COMPARED = KEY + ["prompt_hash", "rationale", "parsed_answer", "verdict", "critique", "output_tokens", "finish_reason"]


def make_cfg(store: Path, tiny_cache: Path, teachers: tuple[str, ...] = ("llama", "qwen"),
             llama_batches_per_round: int | None = None, **extra):
    llama = tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    qwen = tiny_model_path(TinyModelConfig(family="qwen2"), tiny_cache)
    common = {"dtype": "float32", "max_model_len": 1024, "kv_cache_space_gib": 0.25, "num_cpus": 1,
              "batch_size": 4}
    raw = {
        "data": {"name": "synthetic", "synthetic": {"train": N_TRAIN, "validation": 4, "test": 4}},
        "teachers": [t for t in (
            {"name": "llama", "model": str(llama), **common,
             **({"batches_per_round": llama_batches_per_round} if llama_batches_per_round else {}),
             "sampling": {"temperature": 0.0, "max_tokens": 24, "seed": 0}},
            {"name": "qwen", "model": str(qwen), "prompt_style": "cot", **common,
             "sampling": {"temperature": 0.8, "top_p": 0.95, "n": QWEN_N, "max_tokens": 24, "seed": 1}},
        ) if t["name"] in teachers],
        "self_eval": {"enabled": True, "evals_per_cot": EVALS, "temperature": 0.7, "max_tokens": 16},
        "filter": {"drop_empty": True, "drop_unparsable": False},
        # the record cache (<storage_path>/record_cache) beside the store: shared by the runs of one
        # tmp folder only, so each test's engines generate what it means them to
        "runtime": {"store_uri": str(store), "storage_path": str(store.parent / "runs")},
    }
    raw.update(extra)
    return validate_config(raw)


@pytest.fixture(scope="module")
def first_run(ray_session, tiny_cache, tmp_path_factory):
    store = tmp_path_factory.mktemp("gen") / "store"
    # llama in rounds of 3 batches (4 batches: 2 Ray Data executions, the last partial); qwen in one
    cfg = make_cfg(store, tiny_cache, llama_batches_per_round=3)
    t0 = time.perf_counter()
    report = run_generation(cfg, shard_size=SHARD)
    return cfg, store, report, time.perf_counter() - t0


def _table(store: Path, kind: str):
    return RationaleStore(str(store)).read_table(kind).to_pandas()


def test_two_teachers_every_record_present_and_stats_add_up(first_run):
    _cfg, store, report, seconds = first_run
    print(f"\nfirst run: {seconds:.1f}s, {report.run_tokens_per_s:.0f} tok/s wall, "
          + ", ".join(f"{t}: {s.tokens_per_s:.0f} tok/s engine" for t, s in report.teachers.items()))
    rat, se = _table(store, "rationale"), _table(store, "self_eval")
    ids = {f"syn-train-{i:05d}" for i in range(N_TRAIN)}
    for teacher, n in (("llama", 1), ("qwen", QWEN_N)):
        r = rat[rat.teacher == teacher]
        got = sorted(zip(r.example_id, r.sample_idx))
        assert got == sorted((e, s) for e in ids for s in range(n)), teacher  # exactly once each
        st = report.teachers[teacher]
        kinds = st.kinds
        # every output is kept or dropped, and what is kept is what the store holds
        assert st.outputs == st.kept + sum(st.dropped.values())
        assert kinds["rationale"].outputs == N_TRAIN * n and kinds["rationale"].prompts == N_TRAIN
        assert kinds["rationale"].kept == len(r) and kinds["rationale"].dropped["empty"] == 0
        s = se[se.teacher == teacher]
        judged = r[r.rationale.str.strip() != ""]
        assert kinds["self_eval"].prompts == len(judged)
        assert kinds["self_eval"].outputs == len(judged) * EVALS
        assert kinds["self_eval"].kept == len(s)
        assert not s.duplicated(["example_id", "sample_idx", "eval_idx"]).any()
        assert (s.eval_idx >= 0).all() and (r.eval_idx == -1).all()
        # records carry token counts, prompt hashes and the judged CoT
        assert (r.output_tokens > 0).all() and (r.prompt_tokens > 0).all()
        assert r.prompt_hash.str.len().eq(16).all()
        merged = s.merge(r[["example_id", "sample_idx", "rationale"]], on=["example_id", "sample_idx"],
                         suffixes=("", "_cot"))
        assert (merged.rationale == merged.rationale_cot).all()
        assert st.output_tokens == int(r.output_tokens.sum() + s.output_tokens.sum())
        assert st.tokens_per_s > 0 and st.generation_seconds > 0
        on_disk = RationaleStore(str(store)).read_stats(teacher)
        assert on_disk.to_dict() == st.to_dict()
    assert report.shards_written == {"llama": N_TRAIN // SHARD, "qwen": N_TRAIN // SHARD}
    # prompts were streamed: never more batches handed to the engines than the feed's window
    for teacher in ("llama", "qwen"):
        feed = report.feed[teacher]
        assert feed["batches"] == N_TRAIN // 4 and 1 <= feed["max_unanswered"] <= feed["window"] < feed["batches"]
        # served in rounds of batches_per_round (exactly one record per prompt is checked above)
        assert feed["rounds"] == {"llama": 2, "qwen": 1}[teacher]
    assert "teacher llama: 4 batches served in 2 rounds of <= 3" in report.summary()
    assert "llama" in report.summary() and "tok/s" in report.summary()
    # cross-teacher agreement of the whole store, from its parsed answers, in the report and its summary
    from tinyllm_ray.store.agreement import agreement_stats, answers_by_example

    names = ["llama", "qwen"]
    assert report.agreement == agreement_stats(answers_by_example(rat.to_dict("records"), names), names)
    assert report.agreement["pairs"]["llama~qwen"]["both_answered"] <= N_TRAIN
    assert "llama ~ qwen:" in report.summary() and report.to_dict()["agreement"] == report.agreement


def test_rerun_skips_finished_shards_without_starting_engines(first_run):
    cfg, store, report, _ = first_run
    before = _table(store, "rationale")
    t0 = time.perf_counter()
    again = run_generation(cfg, print_summary=False)  # shard size comes from the manifest
    assert time.perf_counter() - t0 < 30
    assert again.shards_written == {"llama": 0, "qwen": 0}
    assert again.shards_skipped == {"llama": N_TRAIN // SHARD, "qwen": N_TRAIN // SHARD}
    assert {t: s.to_dict() for t, s in again.teachers.items()} == {t: s.to_dict() for t, s in report.teachers.items()}
    assert len(_table(store, "rationale")) == len(before)


def test_record_cache_serves_a_fresh_store_and_regenerates_only_what_changed(first_run, tiny_cache):
    """Issue 13, with the first run's record cache (``<storage_path>/record_cache``): (a) a fresh
    store with the same config is served from it without any engine, record for record; (b) one
    teacher's ``max_tokens`` changed: only that teacher generates, the other's shards stay, the old
    ones are under ``superseded/``; (c) a changed filter re-filters cached outputs, no engine;
    (e) ``record_cache: false`` keeps the refusal. One engine start (llama, in b)."""
    from tinyllm_ray.errors import StoreMismatchError

    _cfg_a, store_a, report_a, _ = first_run
    store = store_a.parent / "store_cached"
    cfg = make_cfg(store, tiny_cache)
    t0 = time.perf_counter()
    rep = run_generation(cfg, shard_size=SHARD, print_summary=False)
    print(f"\nall from the record cache: {time.perf_counter() - t0:.1f}s")
    assert rep.record_cache == {"llama": {"hits": N_TRAIN, "misses": 0}, "qwen": {"hits": N_TRAIN, "misses": 0}}
    assert rep.faults == {} and sum(rep.run_output_tokens.values()) == 0  # no engine pool ever served
    for kind in ("rationale", "self_eval"):
        want, got = _table(store_a, kind), _table(store, kind)
        cols = COMPARED + ["record_key"]
        assert want[cols].sort_values(KEY).reset_index(drop=True).equals(
            got[cols].sort_values(KEY).reset_index(drop=True)), kind
    for t, st in rep.teachers.items():
        assert st.kinds["rationale"].to_dict() == report_a.teachers[t].kinds["rationale"].to_dict()

    llama, qwen = cfg.teachers
    short = llama.model_copy(update={"sampling": llama.sampling.model_copy(update={"max_tokens": 16})})
    changed = cfg.model_copy(update={"teachers": [short, qwen]})
    t0 = time.perf_counter()
    rep_b = run_generation(changed, print_summary=False)
    print(f"one teacher changed: {time.perf_counter() - t0:.1f}s")
    assert rep_b.shards_written == {"llama": N_TRAIN // SHARD, "qwen": 0}
    assert rep_b.record_cache["llama"] == {"hits": 0, "misses": N_TRAIN} and set(rep_b.faults) == {"llama"}
    assert len(list(store.glob("superseded/*/records/teacher=llama/kind=rationale/shard-*.parquet"))) == 4
    assert not list(store.glob("superseded/*/records/teacher=qwen"))
    rat = _table(store, "rationale")
    assert (rat[rat.teacher == "llama"].output_tokens <= 16).all()

    strict = changed.model_copy(update={"filter": changed.filter.model_copy(update={"drop_unparsable": True})})
    rep_c = run_generation(strict, print_summary=False)
    assert rep_c.faults == {} and rep_c.shards_written == {"llama": N_TRAIN // SHARD, "qwen": N_TRAIN // SHARD}
    assert rep_c.record_cache == {"llama": {"hits": N_TRAIN, "misses": 0}, "qwen": {"hits": N_TRAIN, "misses": 0}}
    for t in ("llama", "qwen"):
        assert rep_c.teachers[t].outputs == rep_b.teachers[t].outputs
    assert _table(store, "rationale").parsed_answer.notna().all()

    off = strict.model_copy(update={"runtime": strict.runtime.model_copy(update={"record_cache": False}),
                                    "filter": changed.filter})
    with pytest.raises(StoreMismatchError, match="record_cache: true"):
        run_generation(off, print_summary=False)


SCRIPT = textwrap.dedent("""
    import sys
    from tinyllm_ray.config import load_config
    from tinyllm_ray.teachers import run_generation
    if __name__ == "__main__":
        run_generation(load_config(sys.argv[1]), shard_size=int(sys.argv[2]))
""")


def test_kill_mid_generation_then_rerun_gives_exactly_one_record_each_and_same_outputs(
        first_run, tiny_cache, tmp_path):
    """The sampled teacher with self-evaluation (the most outputs per question) alone, to
    keep engine start-ups down: killed after its first shard, then resumed."""
    _cfg_a, store_a, _, _ = first_run
    store = tmp_path / "store"
    cfg = make_cfg(store, tiny_cache, teachers=("qwen",))
    cfg_file = tmp_path / "cfg.yaml"
    dump_config(cfg, cfg_file)
    script = tmp_path / "gen.py"
    script.write_text(SCRIPT)
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_file), str(SHARD)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shards = store / "records" / "teacher=qwen" / "kind=rationale"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(shards.glob("shard-*.parquet")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "generation subprocess exited before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its process group
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = RationaleStore(str(store)).finished_shards("qwen")
    total = N_TRAIN // SHARD
    print(f"\nafter kill: finished shards {sorted(done)} of {total}")
    assert 1 <= len(done) < total, "the kill came after all shards were written"

    report = run_generation(cfg, print_summary=False)
    assert report.shards_written["qwen"] == total - len(done)
    assert report.shards_skipped["qwen"] == len(done)
    rat, se = _table(store, "rationale"), _table(store, "self_eval")
    assert not rat.duplicated(["teacher", "example_id", "sample_idx"]).any()
    assert not se.duplicated(["teacher", "example_id", "sample_idx", "eval_idx"]).any()
    assert len(rat) == N_TRAIN * QWEN_N
    # fixed seeds: the killed-and-resumed run wrote exactly what the uninterrupted run wrote
    for kind, got in (("rationale", rat), ("self_eval", se)):
        want = _table(store_a, kind)
        a = want[want.teacher == "qwen"][COMPARED].sort_values(KEY).reset_index(drop=True)
        b = got[COMPARED].sort_values(KEY).reset_index(drop=True)
        assert a.equals(b), f"{kind} records differ between runs with the same seed"
    assert report.teachers["qwen"].to_dict() | {"generation_seconds": 0, "tokens_per_s": 0} == \
        RationaleStore(str(store_a)).read_stats("qwen").to_dict() | {"generation_seconds": 0, "tokens_per_s": 0}


def test_bad_models_fail_fast_with_the_teachers_name(ray_session, tiny_cache, tmp_path):
    cfg = make_cfg(tmp_path / "s1", tiny_cache)
    missing = cfg.model_copy(update={"teachers": [cfg.teachers[0].model_copy(update={"name": "ghost",
                                                                                     "model": "/no/such/model"})]})
    t0 = time.perf_counter()
    with pytest.raises(GenerationError, match=r"teacher 'ghost'.*/no/such/model.*does not exist"):
        run_generation(missing)
    assert time.perf_counter() - t0 < 10

    # an engine that starts and then fails (KV cache larger than the machine's RAM)
    t = cfg.teachers[0].model_copy(update={"name": "greedy", "kv_cache_space_gib": 4096.0})
    broken = make_cfg(tmp_path / "s2", tiny_cache)
    broken = broken.model_copy(update={"teachers": [t], "self_eval": broken.self_eval.model_copy(update={"enabled": False})})
    t0 = time.perf_counter()
    with pytest.raises(GenerationError) as err:
        run_generation(broken)
    msg = str(err.value)
    print(f"\nengine failure reported after {time.perf_counter() - t0:.1f}s: {msg}")
    assert "teacher 'greedy'" in msg and "failed to start" in msg
    assert "memory" in msg.lower()  # vLLM's own reason, not just "engine core initialization failed"
    assert time.perf_counter() - t0 < 150
    assert RationaleStore(str(tmp_path / "s2")).finished_shards("greedy") == set()


def test_cancel_stops_after_the_current_batch_and_releases_the_engine(ray_session, tiny_cache, tmp_path):
    """``GenerationRun.cancel()`` from another thread when the first shard is committed
    (8 shards of 2 examples, one batch each): the run ends normally soon after, with the
    shards committed so far, and the engine's actor gives its CPU back."""
    import ray

    cfg = make_cfg(tmp_path / "store", tiny_cache, teachers=("llama",))
    run = GenerationRun(cfg, shard_size=2)
    got: list[int] = []
    cancelled_at = None
    for shard in run:
        got.append(shard.shard)
        if cancelled_at is None:
            cancelled_at = time.perf_counter()
            threading.Thread(target=run.cancel).start()
    stopped = time.perf_counter() - cancelled_at
    total = N_TRAIN // 2
    print(f"\ncancelled after shard {got[0]}: {len(got)} of {total} shards, run ended {stopped:.1f}s later")
    assert run.report is not None and run.report.cancelled
    assert 1 <= len(got) < total and run.report.shards_written == {"llama": len(got)}
    assert RationaleStore(str(tmp_path / "store")).finished_shards("llama") == set(got)
    assert stopped < 60
    deadline = time.time() + 60  # Ray Data kills the actor when the pool closes; the CPU comes back
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


PLACEMENT_SCRIPT = textwrap.dedent('''
    import json, os, time
    import pyarrow as pa
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    from tinyllm_ray.config import TeacherConfig
    from tinyllm_ray.teachers.placement import PlacementError, check_fits, plan_teacher

    class FakeEngine:
        """Stands in for TeacherEngine: reports where Ray put it (no vLLM)."""
        def __init__(self):
            self.gpus = [int(g) for g in ray.get_gpu_ids()]
            pg = ray.util.get_current_placement_group()
            self.bundles = pg.bundle_specs if pg else None
            self.workers = []
            if pg:  # like vLLM's Ray executor: one GPU worker per bundle, num_cpus=0
                @ray.remote(num_cpus=0, num_gpus=1)
                def worker():
                    return [int(g) for g in ray.get_gpu_ids()]
                self.workers = ray.get([worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=i)).remote() for i in range(len(pg.bundle_specs))])
        def __call__(self, batch):
            time.sleep(1.0)  # slow enough that the second replica starts before the work is gone
            n = batch.num_rows
            info = json.dumps({"pid": os.getpid(), "gpus": self.gpus, "bundles": self.bundles,
                               "workers": self.workers})
            return pa.table({"info": [info] * n})

    def run(plan, n_blocks):
        kw = plan.map_batches_kwargs()
        blocks = [pa.table({"x": [i] * 4}) for i in range(n_blocks)]
        rows = ray.data.from_blocks(blocks).map_batches(FakeEngine, batch_format="pyarrow", **kw).take_all()
        factory = kw.get("ray_remote_args_fn")
        groups = len({pg.id for pg in factory.groups}) if factory else 0
        if factory:
            factory.remove_all()
        return {"actors": sorted({r["info"] for r in rows}), "groups": groups}

    if __name__ == "__main__":
        ray.init(num_cpus=6, num_gpus=2, include_dashboard=False)  # 2 logical GPUs, no CUDA
        out = {}
        tp1 = plan_teacher(TeacherConfig(name="a", model="/m", replicas=2), "gpu")
        out["tp1"] = run(tp1, 12)
        deadline = time.time() + 60  # the pool's actors are released asynchronously
        while ray.available_resources().get("GPU", 0) < 2 and time.time() < deadline:
            time.sleep(0.2)
        tp2 = plan_teacher(TeacherConfig(name="b", model="/m", tensor_parallel_size=2), "gpu")
        out["tp2"] = run(tp2, 2)
        out["tp2_bundles"] = [dict(b) for b in tp2.bundles]
        out["pgs_left"] = [v["state"] for v in ray.util.placement_group_table().values() if v["state"] != "REMOVED"]
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        try:
            check_fits([plan_teacher(TeacherConfig(name="huge", model="/m", tensor_parallel_size=4), "gpu")], nodes)
            out["tp4"] = "fits?"
        except PlacementError as e:
            out["tp4"] = str(e)
        print("RESULT " + json.dumps(out))
''')


def test_placement_plan_on_logical_gpus(tmp_path):
    """The GPU plan, run by Ray Data on a cluster with 2 logical GPUs (no CUDA, no vLLM)."""
    import json

    script = tmp_path / "placement.py"
    script.write_text(PLACEMENT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.stdout[-2000:] + res.stderr[-4000:]
    out = json.loads(line[len("RESULT "):])
    tp1 = [json.loads(a) for a in out["tp1"]["actors"]]
    assert len(tp1) == 2 and sorted(g for a in tp1 for g in a["gpus"]) == [0, 1]  # 2 replicas x 1 GPU
    assert all(a["bundles"] is None for a in tp1) and out["tp1"]["groups"] == 0
    (tp2,) = [json.loads(a) for a in out["tp2"]["actors"]]
    assert tp2["gpus"] == [] and out["tp2"]["groups"] == 1  # the actor holds no GPU itself...
    assert tp2["bundles"] == out["tp2_bundles"] == [{"GPU": 1.0, "CPU": 1.0}, {"GPU": 1.0, "CPU": 1.0}]
    assert sorted(g for w in tp2["workers"] for g in w) == [0, 1]  # ...its TP workers get one each
    assert out["pgs_left"] == []
    assert "teacher 'huge'" in out["tp4"] and "GPU: 4" in out["tp4"]

"""Teacher serving without Ray: pool plans from logical resources, and the run/cancel logic
of ``EnginePool`` and ``GenerationRun`` with the Ray Data step replaced by the real
``TeacherEngine.__call__`` over a fake LLM (``EnginePool._serve`` is the only fake)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.test_teacher_engine import FakeLLM, make_engine
from tinyllm_ray.config import JobConfig, SelfEvalConfig, TeacherConfig
from tinyllm_ray.errors import GenerationError, InternalError
from tinyllm_ray.store import RationaleStore
from tinyllm_ray.teachers import pipeline, serving
from tinyllm_ray.teachers.early_start import BackgroundStart
from tinyllm_ray.teachers.pipeline import GenerationRun
from tinyllm_ray.teachers.serving import EnginePool, plan_pools, to_batches

CLUSTER = {"CPU": 8.0}
TWO_NODES = [{"CPU": 4.0}, {"CPU": 4.0}]  # more than one node: local model paths are not prechecked


def job(tmp_path=None, teachers=({"name": "llama", "model": "org/llama"},), **kw) -> JobConfig:
    # the record cache (<storage_path>/record_cache) under tmp_path too: never shared between tests
    runtime = {"store_uri": str(tmp_path / "store"), "storage_path": str(tmp_path / "runs")} \
        if tmp_path is not None else {}
    return JobConfig(data={"name": "synthetic", "synthetic": {"train": 8, "validation": 2, "test": 2}},
                     teachers=[TeacherConfig(**t) for t in teachers], runtime=runtime, **kw)


class Served:
    """What the fake serving step saw: pools started, batches served, pools released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.batches: list[int] = []
        self.released: list[str] = []
        self.specs: dict[str, Any] = {}
        self.events: list[tuple[str, str]] = []  # ("engines", teacher) / ("rows", ...) in the order they happened


def fake_serving(monkeypatch, llm: Callable[[], Any] = FakeLLM,
                 before_batch: Callable[[EnginePool, int], None] | None = None) -> Served:
    """Replace Ray (cluster view + Ray Data actors) by ``TeacherEngine`` on a fake LLM, in-process."""
    served = Served()

    def _serve(self: EnginePool, feed, batch_size, max_batches, replicas):
        served.started.append(self.name)
        served.events.append(("engines", self.name))
        served.specs[self.name] = self.spec
        eng = make_engine(self.spec)
        eng.llm = llm()
        handed: list[Any] = []  # what the feeder actor would hold, in order (None: the end)
        feed.start(lambda seq, block: handed.append(block))
        if isinstance(feed, BackgroundStart):  # Ray Data would wait for the feeder's first block
            feed.join()
        try:
            i = 0
            while handed and handed[0] is not None:
                b = handed.pop(0)
                if before_batch is not None:
                    before_batch(self, i)
                served.batches.append(b.num_rows)
                out = eng(b).to_pylist()
                feed.credit()  # as serving does for every output block
                i += 1
                yield out
        finally:
            served.released.append(self.name)

    def _plan_serving(cfg, teachers, **kw):
        return plan_pools(cfg, teachers, CLUSTER, TWO_NODES, **kw)

    monkeypatch.setattr(EnginePool, "_serve", _serve)
    monkeypatch.setattr(serving, "plan_serving", _plan_serving)
    monkeypatch.setattr(pipeline, "plan_serving", _plan_serving)
    return served


# ----------------------------------------------------------------------------- plans


def test_plan_pools_resolves_models_plans_each_teacher_and_says_why(monkeypatch):
    from tinyllm_ray.models import tiny

    monkeypatch.setattr(tiny, "tiny_model_path", lambda cfg, cache_dir=None: f"/cache/{cfg.family}")
    cfg = job(teachers=({"name": "a", "model": "org/a"}, {"name": "b", "model": "tiny:qwen2", "replicas": 2}),
              self_eval={"enabled": True}, prompts={"cot_trigger": "Think."})
    sp = plan_pools(cfg, cfg.teachers, {"CPU": 16, "GPU": 2}, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}])
    assert sp.accelerator == "gpu" and [p.name for p in sp.pools] == ["a", "b"]
    b = sp.pool("b")
    assert b.model_path == b.plan.model == b.spec.engine_kwargs["model"] == "/cache/qwen2"
    assert b.plan.replicas == 2 and b.plan.num_gpus == 1.0
    # the config models travel to the actors as they are
    assert b.spec.sampling is cfg.teachers[1].sampling and b.spec.self_eval is cfg.self_eval
    assert b.spec.prompts.cot_trigger == "Think."
    assert "2 GPUs" in sp.notes[0] and any(n.startswith("teacher b: GPU") for n in sp.notes)
    off = plan_pools(cfg, cfg.teachers[:1], CLUSTER, TWO_NODES, self_eval=SelfEvalConfig(enabled=False))
    assert off.accelerator == "cpu" and not off.pools[0].spec.self_eval.enabled


def test_plan_pools_fails_fast_naming_the_teacher():
    missing = job(teachers=({"name": "ghost", "model": "/no/such/model"},))
    with pytest.raises(GenerationError, match=r"teacher 'ghost'.*/no/such/model.*does not exist"):
        plan_pools(missing, missing.teachers, CLUSTER, [CLUSTER])  # one node: the path is checked
    huge = job(teachers=({"name": "huge", "model": "org/m", "tensor_parallel_size": 4},))
    with pytest.raises(GenerationError, match=r"teacher 'huge'.*GPU: 4"):
        plan_pools(huge, huge.teachers, {"CPU": 8, "GPU": 2}, [{"CPU": 8, "GPU": 2}])


def test_to_batches_tile_the_rows():
    rows = [{"i": i} for i in range(10)]
    assert [len(b) for b in to_batches(rows, 4)] == [4, 4, 2]
    assert to_batches([], 4) == []


# ----------------------------------------------------------------------------- the pool


def test_pool_runs_batches_and_releases_engines_on_break_and_cancel(monkeypatch):
    served = fake_serving(monkeypatch)
    cfg = job()
    from tests.unit.test_teacher_engine import POOL
    from tinyllm_ray.teachers.prompt_rows import prompt_rows

    rows = prompt_rows(cfg.teachers[0], POOL, 0, 10, POOL, cfg.prompts)
    pool = plan_pools(cfg, cfg.teachers, CLUSTER, TWO_NODES).pool("llama")
    with pool:
        out = [r for batch in pool.run(rows, 4) for r in batch]
    assert served.batches == [4, 4, 2] and len(out) == 10 and served.released == ["llama"]
    with pool:  # leaving the block releases a run the caller did not finish
        next(pool.run(rows, 4))
    assert served.released == ["llama", "llama"]
    pool.cancel()
    assert pool.cancelled and list(pool.run(rows, 4)) == []  # cancelled: nothing starts
    assert served.started == ["llama", "llama"]


def test_pool_pulls_shards_only_as_engines_answer(monkeypatch):
    """The row stream is lazy: with one replica at most WINDOW_PER_REPLICA batches are handed
    over before the first answer, and each answer pulls one more shard, never the whole run."""
    fake_serving(monkeypatch)
    cfg = job()
    from tests.unit.test_teacher_engine import POOL
    from tinyllm_ray.teachers.prompt_rows import prompt_rows

    pulled: list[int] = []

    def shards():  # 5 shards of 2 examples, one batch each
        for s in range(5):
            pulled.append(s)
            yield prompt_rows(cfg.teachers[0], POOL, s, 2, POOL, cfg.prompts)

    pool = plan_pools(cfg, cfg.teachers, CLUSTER, TWO_NODES).pool("llama")
    window = serving.WINDOW_PER_REPLICA * pool.plan.replicas
    seen = []
    with pool:
        for batch in pool.run_stream(shards(), 2, max_rows=10):
            seen.append((len(pulled), {r["shard"] for r in batch}))
    # first answer: the window, plus the one its credit pulled; then one per answer until the end
    assert [n for n, _ in seen] == [min(window + 1 + i, 5) for i in range(5)]
    assert [sh for _, sh in seen] == [{s} for s in range(5)]
    assert pool.feed == {"batches": 5, "window": window, "max_unanswered": window, "rounds": 1,
                         "batches_per_round": 1024}


def test_rounds_of_cuts_consecutive_rounds_lazily():
    from tinyllm_ray.teachers.feed import rounds_of

    pulled: list[int] = []

    def batches(n):
        for i in range(n):
            pulled.append(i)
            yield i

    rounds = rounds_of(batches(5), 2)
    first = next(rounds)
    assert pulled == [] and list(first) == [0, 1] and pulled == [0, 1]  # the next round's batch is not pulled yet
    assert [list(r) for r in rounds] == [[2, 3], [4]]
    assert [list(r) for r in rounds_of(batches(4), 2)] == [[0, 1], [2, 3]]  # no empty last round
    # the first round is not pulled before it is served (an eager start), so it may be empty
    assert [list(r) for r in rounds_of(iter([]), 3)] == [[]] and [list(r) for r in rounds_of(range(3), 5)] == [[0, 1, 2]]
    with pytest.raises(InternalError):
        next(rounds_of(range(3), 0))


def test_pool_serves_in_rounds_of_batches_per_round_with_new_engines_each(monkeypatch):
    """batches_per_round bounds each Ray Data execution: 5 batches by 2 are 3 executions (2, 2, 1
    read tasks), each starting (and releasing) its engines; only the first starts eagerly."""
    served = fake_serving(monkeypatch)
    fake = EnginePool._serve
    calls: list[tuple[int, bool]] = []

    def _serve(self, feed, batch_size, max_batches, replicas):
        calls.append((max_batches, isinstance(feed, BackgroundStart)))
        return fake(self, feed, batch_size, max_batches, replicas)

    monkeypatch.setattr(EnginePool, "_serve", _serve)
    cfg = job(teachers=({"name": "llama", "model": "org/llama", "batches_per_round": 2},))
    from tests.unit.test_teacher_engine import POOL
    from tinyllm_ray.teachers.prompt_rows import prompt_rows

    rows = prompt_rows(cfg.teachers[0], POOL, 0, 10, POOL, cfg.prompts)
    pool = plan_pools(cfg, cfg.teachers, CLUSTER, TWO_NODES).pool("llama")
    with pool:
        out = [r for batch in pool.run_stream([rows], 2, max_rows=10, eager=True) for r in batch]
    assert sorted(r["example_id"] for r in out) == sorted(r["example_id"] for r in rows)  # each prompt once
    assert calls == [(2, True), (2, False), (1, False)]
    assert served.started == served.released == ["llama"] * 3 and served.batches == [2] * 5
    assert pool.feed["rounds"] == 3 and pool.feed["batches"] == 5 and pool.feed["batches_per_round"] == 2
    pool.cancel()  # cancelled between rounds: no further round starts
    assert list(pool.run(rows, 2)) == [] and served.started == ["llama"] * 3


def test_batches_cut_across_lists_as_the_concatenation_and_the_feeder_keeps_order():
    import asyncio

    from tinyllm_ray.teachers.feed import BatchFeeder, batches_of

    lists = [[{"i": i} for i in range(a, b)] for a, b in ((0, 3), (3, 3), (3, 8), (8, 9))]
    flat = [r for rows in lists for r in rows]
    assert list(batches_of(iter(lists), 4)) == to_batches(flat, 4) == [flat[:4], flat[4:8], flat[8:]]

    async def scenario() -> list[Any]:
        f = BatchFeeder()
        await f.put(1, "b")  # out of submission order, as an async actor may run them
        await f.put(2, None)  # the end: 2 batches in all
        reader = asyncio.ensure_future(asyncio.gather(f.next(), f.next(), f.next()))
        await asyncio.sleep(0)
        await f.put(0, "a")
        return await reader

    assert asyncio.run(scenario()) == ["a", "b", None]


def test_the_feed_datasource_has_one_small_read_task_per_batch_and_nothing_per_prompt():
    """Each read task is one fetch holding only the feeder's handle: what Ray Data keeps per
    batch for the whole execution (plan_read_op) is a few hundred bytes, not the batch."""
    import pickle

    from tinyllm_ray.teachers.feed import _datasource, _Fetch

    handle = "feeder-handle"  # stands for the actor handle (pickled the same way: by value)
    tasks = _datasource(handle, 7).get_read_tasks(2)
    assert len(tasks) == 7  # one per batch whatever parallelism Ray Data asks for
    assert all(isinstance(t.read_fn, _Fetch) and t.read_fn.feeder == handle for t in tasks)
    assert len(pickle.dumps(tasks[0])) < 2048


# ----------------------------------------------------------------------------- generation


def test_cancel_stops_every_teacher_after_its_current_batch_then_rerun_resumes(monkeypatch, tmp_path):
    """4 shards of 2 examples per teacher, one batch per shard. Cancelled (from another
    thread) when the first shard arrives: each teacher delivers at most the batch in
    flight, its engines are released, the run ends normally; a rerun writes the rest."""
    both_started = threading.Barrier(2, timeout=10)

    def before_batch(pool: EnginePool, i: int) -> None:
        if i == 0:
            both_started.wait()  # both teachers are serving before anything is cancelled
        else:  # a later batch is only delivered once cancel() has arrived: it is "in flight"
            assert pool._cancel.wait(10)

    served = fake_serving(monkeypatch, before_batch=before_batch)
    cfg = job(tmp_path, teachers=({"name": "a", "model": "org/a", "batch_size": 2},
                                  {"name": "b", "model": "org/b", "batch_size": 2, "prompt_style": "cot"}))
    run = GenerationRun(cfg, shard_size=2)
    got = []
    for shard in run:
        got.append((shard.teacher, shard.shard))
        if len(got) == 1:
            t = threading.Thread(target=run.cancel)
            t.start()
            t.join()
    assert run.cancelled and run.report is not None and run.report.cancelled
    assert sorted(served.released) == ["a", "b"]
    written = run.report.shards_written
    assert all(1 <= written[t] <= 2 for t in ("a", "b")), written  # batch 0, at most the one in flight
    store = RationaleStore(cfg.runtime.resolved_store_uri)
    assert {t: store.finished_shards(t) for t in ("a", "b")} == {t: set(range(written[t])) for t in ("a", "b")}
    assert "cancelled" in run.report.summary()

    served2 = fake_serving(monkeypatch)
    again = GenerationRun(cfg)  # the shard size comes from the manifest
    rest = [(s.teacher, s.shard) for s in again]
    assert sorted(rest) == sorted((t, k) for t in ("a", "b") for k in range(written[t], 4))
    assert again.report.shards_skipped == written and not again.report.cancelled
    assert len(served2.batches) == 8 - sum(written.values())


def test_cancel_before_iteration_starts_no_engine(monkeypatch, tmp_path):
    served = fake_serving(monkeypatch)
    run = GenerationRun(job(tmp_path))
    run.cancel()
    assert list(run) == [] and served.started == []
    assert run.report.cancelled and run.report.shards_written == {"llama": 0}


def test_a_failing_teacher_stops_the_others_and_keeps_its_own_error(monkeypatch, tmp_path):
    class Broken(FakeLLM):
        def generate(self, prompts, params, use_tqdm=False):
            raise KeyError("a bug in the engine")

    served = fake_serving(monkeypatch, llm=Broken)
    with pytest.raises(KeyError, match="a bug in the engine"):  # a bug keeps its type and traceback
        list(GenerationRun(job(tmp_path)))
    assert served.released == ["llama"]


def test_generation_holds_the_writer_lock_and_keys_every_row(monkeypatch, tmp_path):
    from tinyllm_ray.errors import UsageError
    from tinyllm_ray.teachers.prompt_rows import TEMPLATE_VERSION

    fake_serving(monkeypatch)
    cfg = job(tmp_path)
    it = iter(GenerationRun(cfg, shard_size=4))
    next(it)  # mid-generation: the store has a writer
    with pytest.raises(UsageError, match="being written by another generation"):
        list(GenerationRun(cfg))
    assert len(list(it)) == 1  # the first run finishes (and releases the lock)
    rows = RationaleStore(cfg.runtime.resolved_store_uri).read_table("rationale").to_pylist()
    assert len(rows) == 8 and len({r["record_key"] for r in rows}) == 8
    assert {(r["model"], r["model_revision"], r["template_version"]) for r in rows} == {
        ("org/llama", "hub:org/llama", TEMPLATE_VERSION)}
    list(GenerationRun(cfg))  # lock released: a rerun (nothing left to do) may open the store


def test_only_the_teacher_with_its_own_switch_self_evaluates(monkeypatch, tmp_path):
    from tinyllm_ray.store.manifest import teacher_generation_config

    served = fake_serving(monkeypatch)
    cfg = job(tmp_path, teachers=({"name": "tf", "model": "org/a"},
                                  {"name": "mirror", "model": "org/a", "self_eval": True}))
    assert not cfg.self_eval.enabled
    list(GenerationRun(cfg, shard_size=4))
    assert served.specs["mirror"].self_eval.enabled and not served.specs["tf"].self_eval.enabled
    store = RationaleStore(cfg.runtime.resolved_store_uri)
    counts = store.row_counts(None)
    assert counts.get(("mirror", "self_eval"), 0) > 0 and counts.get(("tf", "self_eval"), 0) == 0
    # an unset switch leaves the manifest entry as before the switch existed (old stores still match)
    assert "self_eval" not in teacher_generation_config(cfg.teachers[0])
    assert teacher_generation_config(cfg.teachers[1])["self_eval"] is True


def test_eager_pool_starts_engines_before_any_row_is_built_and_keeps_no_miss_no_engine(monkeypatch):
    """eager: the engines start first and the first batches are built meanwhile (another thread);
    not eager (a record cache that might serve everything): rows first, and no rows, no engine."""
    served = fake_serving(monkeypatch)
    cfg = job()
    from tests.unit.test_teacher_engine import POOL
    from tinyllm_ray.teachers.prompt_rows import prompt_rows

    def shards(tag: str, n: int = 3):
        for s in range(n):
            served.events.append(("rows", f"{tag}{s}"))
            yield prompt_rows(cfg.teachers[0], POOL, s, 2, POOL, cfg.prompts)

    pool = plan_pools(cfg, cfg.teachers, CLUSTER, TWO_NODES).pool("llama")
    with pool:
        out = [r for b in pool.run_stream(shards("e"), 2, max_rows=6, eager=True) for r in b]
    assert len(out) == 6 and served.events[0] == ("engines", "llama")
    assert [e for e in served.events if e[0] == "rows"] == [("rows", f"e{s}") for s in range(3)]
    served.events.clear()
    with pool:
        assert len([r for b in pool.run_stream(shards("p"), 2, max_rows=6) for r in b]) == 6
    assert served.events[:2] == [("rows", "p0"), ("engines", "llama")]  # peeked before starting
    served.events.clear()
    with pool:
        assert list(pool.run_stream(iter([]), 2, max_rows=6)) == []
    assert served.events == []  # nothing to serve: no engine


def test_eager_pool_reports_a_failure_to_build_the_first_batches(monkeypatch):
    fake_serving(monkeypatch)
    cfg = job()
    pool = plan_pools(cfg, cfg.teachers, CLUSTER, TWO_NODES).pool("llama")

    def broken():
        raise GenerationError("prompt template broken")
        yield []

    with pool, pytest.raises(GenerationError, match="prompt template broken"):
        list(pool.run_stream(broken(), 2, max_rows=6, eager=True))


@pytest.mark.parametrize("record_cache", [True, False])
def test_split_loads_while_serving_is_planned_and_engines_start_before_prompts(monkeypatch, tmp_path, record_cache):
    """Order of events of a run with the record cache empty or off: plan_serving (Ray, models)
    runs while the split loads; the engines start before the first shard's prompts are built."""
    served = fake_serving(monkeypatch)
    planned = threading.Event()
    real_load, real_plan, real_rows = pipeline.load_and_spill, pipeline.plan_serving, pipeline.prompt_rows

    def load_and_spill(data, split):
        assert planned.wait(10), "the split was loaded before serving was planned, not meanwhile"
        served.events.append(("split loaded", ""))
        return real_load(data, split)

    def plan_serving(*a, **kw):
        served.events.append(("planning", ""))
        out = real_plan(*a, **kw)
        planned.set()
        return out

    def prompt_rows(*a, **kw):
        served.events.append(("rows", str(a[2])))
        return real_rows(*a, **kw)

    monkeypatch.setattr(pipeline, "load_and_spill", load_and_spill)
    monkeypatch.setattr(pipeline, "plan_serving", plan_serving)
    monkeypatch.setattr(pipeline, "prompt_rows", prompt_rows)
    cfg = job(tmp_path)
    cfg.runtime.record_cache = record_cache
    run = GenerationRun(cfg, shard_size=4)
    assert len(list(run)) == 2
    kinds = [k for k, _ in served.events]
    assert kinds[:4] == ["planning", "split loaded", "engines", "rows"], served.events


def test_a_data_error_wins_over_a_planning_error(monkeypatch, tmp_path):
    from tinyllm_ray.errors import DataLoadError

    def bad_load(data, split):
        raise DataLoadError("no such file: data.jsonl")

    def bad_plan(*a, **kw):
        raise GenerationError("model not found")

    monkeypatch.setattr(pipeline, "load_and_spill", bad_load)
    monkeypatch.setattr(pipeline, "plan_serving", bad_plan)
    with pytest.raises(DataLoadError, match="no such file"):
        list(GenerationRun(job(tmp_path)))

"""Streaming start-up: the early first pass, its shuffle, the timeline the run report keeps."""

from __future__ import annotations

import threading
import time

import pytest

from tinyllm_ray.jobs.report import render_markdown
from tinyllm_ray.jobs.run import overlap_blocker, overlap_timeline
from tinyllm_ray.student.loop import shuffle_args, skip_inference_comm_op
from tinyllm_ray.student.prefetch import EarlyBatches


def test_early_batches_pull_before_the_collator_exists_and_keep_order():
    opened = threading.Event()

    def open_batches():
        opened.set()
        return iter(range(5))

    early = EarlyBatches(open_batches)
    assert opened.wait(5)  # the stream is opened by the thread at once, not on first use
    early.set_collate(lambda b: b * 10)
    assert list(early) == [0, 10, 20, 30, 40]


def test_early_batches_raise_the_readers_error_where_the_batch_would_be():
    def open_batches():
        yield 1
        raise RuntimeError("slice 3 never committed")

    early = EarlyBatches(open_batches)
    early.set_collate(lambda b: b)
    it = iter(early)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="never committed"):
        next(it)


def test_early_batches_close_stops_a_pass_left_unfinished():
    pulled: list[int] = []

    def open_batches():
        for i in range(1000):
            pulled.append(i)
            yield i

    early = EarlyBatches(open_batches, depth=1)
    early.set_collate(lambda b: b)
    it = iter(early)
    assert next(it) == 0
    early.close()
    time.sleep(0.5)
    n = len(pulled)
    time.sleep(0.5)
    assert len(pulled) == n < 1000  # the thread stopped; nothing keeps reading


def test_streaming_first_pass_has_no_shuffle_buffer_later_passes_do():
    assert shuffle_args(0, 16, 0, 0, streaming=True) == {"local_shuffle_buffer_size": None}
    later = shuffle_args(0, 16, 0, 1, streaming=True)
    assert later["local_shuffle_buffer_size"] == 64
    assert shuffle_args(0, 16, 0, 0, streaming=False)["local_shuffle_buffer_size"] == 64
    # each pass of each stage has its own seed, as before
    seeds = {shuffle_args(3, 16, s, e, streaming=False)["local_shuffle_seed"] for s in (0, 1) for e in (0, 1, 2)}
    assert len(seeds) == 6
    # train.local_shuffle=false: rows in the order given, on every pass
    assert all(shuffle_args(0, 16, 0, e, streaming=st, local=False) == {"local_shuffle_buffer_size": None}
               for e in (0, 1) for st in (False, True))


def test_inference_comm_op_is_marked_not_to_build():
    ops = {"deepspeed_shm_comm": True, "cpu_adam": True}
    skip_inference_comm_op(ops)
    assert ops == {"deepspeed_shm_comm": False, "cpu_adam": True}


def _timeline(first_step_at: float) -> dict:
    t0 = 1000.0
    events = [("llama", 0, t0 + 30), ("qwen", 1, t0 + 31), ("qwen", 0, t0 + 33), ("llama", 1, t0 + 34)]
    return overlap_timeline(t0, t0 + 5, t0 + 40, events, ["llama", "qwen"], t0 + 6,
                            {"time": t0 + first_step_at, "step_seconds": 4.0})


def test_overlap_timeline_names_each_point_since_the_run_began():
    o = _timeline(first_step_at=36.0)
    assert o["first_slice_committed_s"] == 33.0  # slice 0: the later of its two teachers' commits
    assert o["training_started_s"] == 6.0
    assert o["trainer_ready_s"] == 32.0  # first step's time minus its step_seconds
    assert o["first_train_step_s"] == 36.0
    assert o["train_started_before_generation_ended"] is True
    assert o["overlap_s"] == 4.0
    assert o["shards_committed_after_first_step"] == 0
    assert o["shards_committed_this_run"] == 4
    late = _timeline(first_step_at=50.0)
    assert late["train_started_before_generation_ended"] is False and late["overlap_s"] == 0.0


def test_overlap_timeline_without_a_complete_slice():
    o = overlap_timeline(0.0, 1.0, 9.0, [("llama", 0, 3.0)], ["llama", "qwen"], 2.0, {"time": 5.0})
    assert o["first_slice_committed_s"] is None
    assert o["trainer_ready_s"] == 5.0


def test_report_lists_the_timeline_in_order():
    report = {"run": "r", "student": "s", "store_uri": "u", "teachers": {}, "evaluation": {}, "seconds": {},
              "training": {"best_step": 6, "total_steps": 6, "best_val_accuracy": 0.6, "task_losses": {}},
              "overlap": _timeline(first_step_at=36.0)}
    md = render_markdown(report)
    assert "training began before generation ended: **True**" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and " s |" not in line]
    order = [r.split("|")[2].strip() for r in rows if r.split("|")[1].strip().replace(".", "").isdigit()]
    assert order[0] == "generation started" and order[-1] == "generation ended"
    assert order.index("first optimizer step") < order.index("generation ended")


def test_overlap_blocker_names_what_training_lacks_while_teachers_run():
    # the README's `ray start` on a 2-core machine: two 1-CPU teachers hold every CPU
    note = overlap_blocker({"CPU": 2.0}, {"CPU": 1.1}, {"CPU": 2.0, "memory": 1e9})
    assert note is not None and "CPU" in note and "no streaming overlap" in note
    assert "runtime.num_cpus" in note and "train.cpus_per_worker" in note
    assert overlap_blocker({"CPU": 2.0}, {"CPU": 1.1}, {"CPU": 16.0}) is None  # demo_cpu: 16 logical CPUs
    # GPUs: teachers on 2 of 2 GPUs leave none for a GPU trainer; CPUs are fine
    gpu = overlap_blocker({"CPU": 2.0, "GPU": 2.0}, {"CPU": 1.1, "GPU": 1.0}, {"CPU": 32.0, "GPU": 2.0})
    assert gpu is not None and "GPU" in gpu and "CPU 1.1" not in gpu
    # custom resources (e.g. a trainer node) count like the others
    assert overlap_blocker({"CPU": 2.0}, {"CPU": 1.1, "trainer_node": 1.0}, {"CPU": 8.0, "trainer_node": 4.0}) is None

"""The train split served by a Ray actor (data/split_server.py): the loader's records, by slices, across processes."""

from __future__ import annotations

import json
import os
import pickle
import time

import psutil
import pytest

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.loader import load_splits
from tinyllm_ray.data.split_server import ITER_CHUNK, serve_split
from tinyllm_ray.errors import DataError
from tinyllm_ray.store.manifest import data_fingerprint

ARITHMETIC = {"name": "arithmetic", "arithmetic": {"train": ITER_CHUNK + 37, "validation": 10, "test": 10}}


def test_a_served_split_is_the_loaded_split_in_any_process(ray_session):
    cfg = DataConfig.model_validate(ARITHMETIC)
    want = load_splits(cfg).require("train")
    served = serve_split(cfg, "train")
    try:
        assert len(served) == len(want) and bool(served)
        assert served[100:200] == want[100:200] and served[-1] == want[-1] and served[5:5] == []
        assert list(served) == want  # iterated in chunks of ITER_CHUNK
        assert data_fingerprint(served) == data_fingerprint(want)  # the manifest's data_hash is unchanged
        assert len(pickle.dumps(served)) < 2_000  # what a Ray task is handed: a handle and a size

        @ray_session.remote(num_cpus=0)
        def slice_in_a_task(split, start, stop):
            return [r.id for r in split[start:stop]]

        assert ray_session.get(slice_in_a_task.remote(served, 300, 310)) == [r.id for r in want[300:310]]
        with pytest.raises(IndexError):
            served[len(want)]
    finally:
        served.close()


def test_a_dead_server_is_restarted_and_loads_the_same_split(ray_session):
    cfg = DataConfig.model_validate(ARITHMETIC)
    served = serve_split(cfg, "train")
    try:
        pid = ray_session.get(served.actor.__ray_call__.remote(lambda self: os.getpid()))
        before = served[40:50]
        ray_session.kill(served.actor, no_restart=False)  # as a crash: Ray restarts it (max_restarts)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(pid) and time.monotonic() < deadline:  # kill is asynchronous: read after the death
            time.sleep(0.1)
        assert served[40:50] == before
        assert ray_session.get(served.actor.__ray_call__.remote(lambda self: os.getpid())) != pid
    finally:
        served.close()


def test_a_bad_split_fails_with_the_loaders_own_error(ray_session, tmp_path):
    rows = [{"id": "1", "question": "q?", "choices": ["a", "b"], "answer": "b"},
            {"id": "2", "question": "q?", "choices": [], "answer": "b"}]  # no choices: malformed
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig.model_validate({"name": "tinyllm", "on_malformed": "error",
                                     "files": {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation")}})
    with pytest.raises(DataError) as want:
        load_splits(cfg)
    with pytest.raises(type(want.value)) as got:
        serve_split(cfg, "train")
    assert str(got.value) == str(want.value) and "\n" not in str(got.value)

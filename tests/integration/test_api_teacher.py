"""API teachers against a real OpenAI-compatible server: vLLM's own, on CPU, with a tiny model.

The module starts ``python -m vllm.entrypoints.openai.api_server`` (tiny Qwen2, key required
through ``VLLM_API_KEY``) and puts a fault-injecting proxy in front of it
(``tests/helpers/fault_proxy.py``: 429 with Retry-After, 500, stalls past the client's
timeout, and one poisoned question that always gets 500). One generation run then mixes a
local vLLM-actor teacher (tiny Llama) with an API teacher (through the proxy, sampling
n = 2 CoTs and self-evaluating each twice) and the test checks the store, the statistics
(every request and retry the proxy saw is accounted for, tokens and cost), the failed
rows of the poisoned question, and that the key appears nowhere it should not.

Cost on the 2-core machine: server start ~20-40 s (in parallel with nothing else), the run
~40-70 s (the vLLM actor's start dominates); ~1 s for the wrong-key check.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.helpers.fault_proxy import FaultProxy
from tinyllm_ray.config import TinyModelConfig, public_dump, validate_config
from tinyllm_ray.data.loader import load_splits
from tinyllm_ray.models.tiny import tiny_model_path
from tinyllm_ray.teachers import RationaleStore, run_generation

pytestmark = pytest.mark.slow

N_TRAIN = 8
SHARD = 4
N = 2
EVALS = 2
KEY_ENV = "TINYLLM_TEST_API_KEY"
SERVED = "tiny-qwen"
RPM = 300.0
MAX_RETRIES = 3
PRICES = (0.5, 1.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tiny_cache, tmp_path_factory):
    """vLLM's OpenAI-compatible server on CPU, in its own process group; stopped at module end."""
    key = "sk-tinyllm-" + secrets.token_hex(16)
    model = tiny_model_path(TinyModelConfig(family="qwen2"), tiny_cache)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("api_server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}  # would override the bytes
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               VLLM_API_KEY=key, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_OMP_THREADS_BIND="nobind",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "1024", "--enforce-eager", "--kv-cache-memory-bytes", str(256 << 20),
           "--seed", "0", "--disable-log-stats"]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.perf_counter() - t0 > 300:
                pytest.fail(f"vLLM server not healthy after 300 s:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        start_s = time.perf_counter() - t0
        print(f"\nvLLM OpenAI server up in {start_s:.1f}s")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", key=key, log=log_path, start_s=start_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(30)


def make_cfg(store: Path, tiny_cache: Path, base_url: str):
    llama = tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    return validate_config({
        "data": {"name": "synthetic", "synthetic": {"train": N_TRAIN, "validation": 4, "test": 4}},
        "prompts": {"icl_k": 0, "icl_strategy": "none"},  # a question appears only in its own prompts
        "teachers": [
            {"name": "llama", "model": str(llama), "dtype": "float32", "max_model_len": 1024,
             "kv_cache_space_gib": 0.25, "num_cpus": 1, "batch_size": 4,
             "sampling": {"temperature": 0.0, "max_tokens": 16, "seed": 0}},
            {"name": "gpt", "model": SERVED, "prompt_style": "cot", "batch_size": 4, "self_eval": True,
             "sampling": {"temperature": 0.8, "top_p": 0.95, "n": N, "max_tokens": 24, "seed": 1},
             "api": {"base_url": base_url, "api_key_env": KEY_ENV, "concurrency": 4, "requests_per_minute": RPM,
                     "max_retries": MAX_RETRIES, "backoff_s": 0.2, "max_backoff_s": 2.0, "timeout_s": 5.0,
                     "prompt_cost_per_1k": PRICES[0], "output_cost_per_1k": PRICES[1]}},
        ],
        "self_eval": {"enabled": False, "evals_per_cot": EVALS, "temperature": 0.7, "max_tokens": 16},
        "filter": {"drop_empty": False, "drop_unparsable": False},  # every output is a record
        "runtime": {"store_uri": str(store), "storage_path": str(store.parent / "runs")},  # its own record cache
    })


def _ray_logs() -> list[Path]:
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return [p for p in Path(node.get_logs_dir_path()).rglob("*") if p.is_file()] if node else []


def test_local_and_api_teachers_mix_with_retries_limits_and_accounting(
        ray_session, api_server, tiny_cache, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(KEY_ENV, api_server.key)
    key = api_server.key
    store = tmp_path / "store"
    train = load_splits(make_cfg(store, tiny_cache, "http://x/v1").data).require("train")
    poisoned = train[1]
    with FaultProxy(api_server.url, seed=0, stall_s=7.0, retry_after="1",
                    poison=lambda text: poisoned.question in text) as proxy:
        cfg = make_cfg(store, tiny_cache, proxy.url)
        t0 = time.perf_counter()
        report = run_generation(cfg, shard_size=SHARD)
        seconds = time.perf_counter() - t0
    st, local = report.teachers["gpt"], report.teachers["llama"]
    api = st.api

    rs = RationaleStore(str(store))
    rat, se = rs.read_table("rationale").to_pandas(), rs.read_table("self_eval").to_pandas()
    failed = rs.failed_rows("gpt").to_pandas()
    ids = [r.id for r in train]
    # one record per (teacher, example, sample); the poisoned question's samples are failed rows
    got = {t: sorted(zip(g.example_id, g.sample_idx)) for t, g in rat.groupby("teacher")}
    assert got["llama"] == sorted((e, 0) for e in ids)
    assert got["gpt"] == sorted((e, s) for e in ids if e != poisoned.id for s in range(N))
    assert sorted(zip(failed.example_id, failed.sample_idx)) == [(poisoned.id, 0), (poisoned.id, 1)]
    assert all(e.startswith("HTTP 500") and f"after {MAX_RETRIES} retries" in e for e in failed.error)
    # the self-evaluation pass ran through the API too, on every non-empty CoT, for gpt only
    g, s = rat[rat.teacher == "gpt"], se[se.teacher == "gpt"]
    judged = g[g.rationale.str.strip() != ""]
    assert len(s) == len(judged) * EVALS and set(se.teacher) <= {"gpt"}
    assert st.kinds["self_eval"].prompts == len(judged)
    # provenance: an API model's revision names its endpoint
    assert set(g.model_revision) == {f"api:{proxy.url}/{SERVED}"}
    assert rat[rat.teacher == "llama"].model_revision.str.startswith("sha256:").all()

    # every request the proxy received is a counted request or a counted retry
    assert proxy.received == api["requests"] + api["retries"]
    assert api["requests"] == N_TRAIN + len(judged)  # one per prompt (n samples each) and per judged CoT
    assert set(proxy.faults) == {"429", "500", "stall"}
    assert api["retries"] >= sum(proxy.faults.values()) + proxy.poisoned - 1
    assert proxy.poisoned == MAX_RETRIES + 1
    assert st.failed == N and api["failed_reasons"] == {"HTTP 500": N} and st.outputs == st.kept
    # tokens and cost: the server's counts, summed once per request
    assert st.output_tokens == int(g.output_tokens.sum() + s.output_tokens.sum()) > 0 and st.prompt_tokens > 0
    assert api["cost"] == pytest.approx((st.prompt_tokens * PRICES[0] + st.output_tokens * PRICES[1]) / 1000,
                                        abs=1e-5)
    assert local.api is None and local.kept == N_TRAIN
    assert rs.read_stats("gpt").to_dict() == st.to_dict()
    # the rate limit holds: sends are at least 60/RPM s apart, so arrivals span at least that
    # (a lower bound: a loaded machine only makes it longer)
    span = max(proxy.arrivals) - min(proxy.arrivals)
    assert span >= 0.8 * (proxy.received - 1) * 60.0 / RPM

    # the key went to the server (which requires it) and nowhere else
    assert proxy.auth == {f"Bearer {key}"}
    written = [p for p in store.rglob("*") if p.is_file()]
    assert written and not [p for p in written if key.encode() in p.read_bytes()]
    assert key not in report.summary() and key not in json.dumps(report.to_dict())
    assert key not in yaml.safe_dump(public_dump(cfg)) and "API" in report.summary()
    out, err = capfd.readouterr()
    assert key not in out and key not in err
    leaked = [p for p in _ray_logs() if key.encode() in p.read_bytes()]
    assert not leaked, leaked
    with capfd.disabled():
        print(f"\nmixed run {seconds:.1f}s; proxy: {proxy.received} requests, faults {dict(proxy.faults)}, "
              f"poisoned {proxy.poisoned}, max in flight {proxy.max_in_flight}; api stats {api}")


def test_a_wrong_key_fails_the_api_teacher_with_one_line(api_server, tiny_cache, tmp_path, monkeypatch):
    import pyarrow as pa

    from tinyllm_ray.errors import TeacherStartupError
    from tinyllm_ray.teachers.api import ApiTeacher, api_plan
    from tinyllm_ray.teachers.prompt_rows import prompt_rows
    from tinyllm_ray.teachers.serving import engine_spec

    wrong = "sk-wrong-" + secrets.token_hex(8)
    monkeypatch.setenv(KEY_ENV, wrong)
    cfg = make_cfg(tmp_path / "store", tiny_cache, api_server.url)
    t = cfg.teachers[1]
    teacher = ApiTeacher(engine_spec(t, api_plan(t, "cpu"), cfg.prompts, cfg.self_eval_for(t.name)))
    records = load_splits(cfg.data).require("train")
    rows = prompt_rows(t, records, 0, 2, records, cfg.prompts)
    with pytest.raises(TeacherStartupError, match="HTTP 401") as exc:
        teacher(pa.Table.from_pylist(rows))
    assert wrong not in str(exc.value) and "'gpt'" in str(exc.value)


def test_chat_endpoint_and_one_sample_requests_on_the_real_server(api_server, tiny_cache, tmp_path, monkeypatch):
    """``endpoint: chat`` (the tiny model's chat template) and ``n_per_request: false``, no Ray (~1 s)."""
    import pyarrow as pa

    from tinyllm_ray.teachers.api import ApiTeacher, api_plan
    from tinyllm_ray.teachers.prompt_rows import prompt_rows
    from tinyllm_ray.teachers.serving import engine_spec

    monkeypatch.setenv(KEY_ENV, api_server.key)
    cfg = make_cfg(tmp_path / "store", tiny_cache, api_server.url)
    t = cfg.teachers[1].model_copy(update={"api": cfg.teachers[1].api.model_copy(
        update={"endpoint": "chat", "n_per_request": False, "requests_per_minute": None})})
    teacher = ApiTeacher(engine_spec(t, api_plan(t, "cpu"), cfg.prompts, cfg.self_eval_for(t.name)))
    records = load_splits(cfg.data).require("train")
    out = teacher(pa.Table.from_pylist(prompt_rows(t, records, 0, 2, records, cfg.prompts))).to_pylist()
    rat = [r for r in out if r["kind"] == "rationale"]
    assert sorted((r["example_id"], r["sample_idx"]) for r in rat) == sorted(
        (r.id, j) for r in records[:2] for j in range(N))
    assert all(not r["error"] for r in out) and sum(r["requests"] for r in rat) == 2 * N
    assert sum(r["output_tokens"] for r in rat) > 0 and all(r["prompt_tokens"] > 0 for r in rat)

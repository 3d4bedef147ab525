"""API teachers without a server: limits, retry policy, responses -> rows, config, secrets.

The HTTP layer is exercised with ``httpx.MockTransport`` (in-process, no socket); the real
server (vLLM's OpenAI-compatible one behind a fault-injecting proxy) is in
``tests/integration/test_api_teacher.py``.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random

import httpx
import pyarrow as pa
import pytest

from tinyllm_ray.config import JobConfig, TeacherConfig, public_dump, validate_config
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import ConfigError, TeacherStartupError
from tinyllm_ray.store.keys import key_context_for
from tinyllm_ray.store.manifest import teacher_generation_config
from tinyllm_ray.teachers.api import ApiTeacher, api_plan, api_spec
from tinyllm_ray.teachers.api_limits import (
    Secret,
    TokenBucket,
    backoff_delay,
    is_fatal,
    is_retryable,
    parse_retry_after,
    response_output,
    scrub,
    split_tokens,
)
from tinyllm_ray.teachers.prompt_rows import prompt_rows
from tinyllm_ray.teachers.records import build_shard_records
from tinyllm_ray.teachers.serving import engine_spec, plan_pools

KEY = "sk-unit-0123456789abcdef"
POOL = [MCQRecord(f"q{i}", f"Question number {i}?", ("red", "green", "blue"), "green") for i in range(6)]
GOOD = "Let's think step by step. Green. Thus, the answer is (b) green."


# ----------------------------------------------------------------------------- pure limits


def test_token_bucket_spaces_requests_and_allows_a_burst():
    b = TokenBucket(60.0)  # one per second
    assert [b.reserve(now=0.0) for _ in range(3)] == [0.0, 1.0, 2.0]
    assert b.reserve(now=10.0) == 0.0  # idle time is not saved up beyond the burst
    burst = TokenBucket(60.0, burst=3)
    assert [burst.reserve(now=0.0) for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert TokenBucket(None).reserve(now=0.0) == 0.0


def test_token_bucket_never_exceeds_its_rate_in_any_window():
    b = TokenBucket(120.0)  # 2 per second
    rng = random.Random(0)
    now, sends = 0.0, []
    for _ in range(200):
        now += rng.random() * 0.3
        sends.append(now + b.reserve(now=now))
    sends.sort()
    assert all(later - earlier >= 0.5 - 1e-9 for earlier, later in itertools.pairwise(sends))


def test_backoff_doubles_with_jitter_caps_and_honours_retry_after():
    rng = random.Random(1)
    for retry in range(8):
        d = min(10.0, 0.5 * 2**retry)
        delay = backoff_delay(retry, 0.5, 10.0, rng=rng)
        assert d / 2 <= delay <= d
    assert backoff_delay(0, 0.5, 10.0, retry_after_s=3.0) == 3.0
    assert backoff_delay(0, 0.5, 10.0, retry_after_s=600.0) == 10.0  # capped


def test_retry_after_seconds_and_http_dates():
    assert parse_retry_after("2") == 2.0 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == 5.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_which_statuses_retry_and_which_fail_the_teacher():
    assert all(is_retryable(s) for s in (408, 409, 429, 500, 502, 503, 504))
    assert not any(is_retryable(s) for s in (400, 401, 403, 404, 422))
    assert all(is_fatal(s) for s in (401, 403, 404)) and not is_fatal(400)


def test_split_tokens_adds_up_and_follows_length():
    assert split_tokens(7, ["abc"]) == [7]
    shares = split_tokens(10, ["a" * 30, "b" * 10, ""])
    assert sum(shares) == 10 and shares[0] > shares[1] >= shares[2]
    assert sum(split_tokens(5, ["", ""])) == 5


def test_response_to_samples_with_tokens_and_cost():
    body = {"choices": [{"index": 1, "text": "bb", "finish_reason": "length"},
                        {"index": 0, "text": "a", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
    out = response_output(body, "completions", 2, retries=2, prices=(1.0, 2.0))
    assert [c.text for c in out.outputs] == ["a", "bb"] and len(out.prompt_token_ids) == 10
    assert [c.finish_reason for c in out.outputs] == ["stop", "length"]
    assert sum(len(c.token_ids) for c in out.outputs) == 3
    assert [c.requests for c in out.outputs] == [1, 0] and [c.retries for c in out.outputs] == [2, 0]
    assert sum(c.cost for c in out.outputs) == pytest.approx(10 * 1.0 / 1000 + 3 * 2.0 / 1000)
    chat = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {}}
    assert response_output(chat, "chat", 1, 0, (0, 0)).outputs[0].text == "hi"
    with pytest.raises(ValueError, match="choices"):
        response_output({"choices": []}, "completions", 1, 0, (0, 0))


def test_secrets_never_print_and_errors_are_scrubbed():
    s = Secret(KEY)
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in repr([s])
    assert pickle.loads(pickle.dumps(s)).value() == KEY
    assert KEY not in scrub(f"Incorrect API key provided: {KEY}", KEY)
    assert "sk-abc***wxyz" not in scrub("Incorrect API key provided: sk-abc***wxyz", None)


# ----------------------------------------------------------------------------- config, plan, keys


def api_teacher(**api) -> dict:
    return {"name": "gpt", "model": "gpt-3.5-turbo", "prompt_style": "cot", "batch_size": 4,
            "sampling": {"temperature": 0.7, "n": 2, "max_tokens": 32, "seed": 3},
            "api": {"base_url": "http://api.test/v1", "api_key_env": "TEST_KEY", "max_retries": 2,
                    "backoff_s": 0.001, "max_backoff_s": 0.01, **api}}


def job(teacher: dict | None = None, **kw) -> JobConfig:
    return validate_config({"data": {"name": "synthetic"}, "teachers": [teacher or api_teacher()],
                            "prompts": {"icl_k": 0, "icl_strategy": "none"}, **kw})


def test_config_names_the_key_variable_never_the_key(monkeypatch):
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:
        job(api_teacher(api_key_env=KEY))
    assert KEY not in str(err.value)
    with pytest.raises(ConfigError, match="api teacher"):
        job({**api_teacher(), "model": "tiny:llama"})
    cfg = job()
    monkeypatch.setenv("TEST_KEY", KEY)
    assert KEY not in json.dumps(public_dump(cfg)) and public_dump(cfg)["teachers"][0]["api"]["api_key_env"] == "TEST_KEY"
    spec = engine_spec(cfg.teachers[0], api_plan(cfg.teachers[0], "cpu"), cfg.prompts, cfg.self_eval)
    assert spec.api.key.value() == KEY and KEY not in repr(spec)
    monkeypatch.delenv("TEST_KEY")
    with pytest.raises(ConfigError, match="export TEST_KEY="):
        api_spec(cfg.teachers[0])


def test_api_plan_is_light_and_limits_are_split_over_replicas(monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    cfg = job({**api_teacher(concurrency=8, requests_per_minute=120), "replicas": 2})
    plan = plan_pools(cfg, cfg.teachers, {"CPU": 2.0, "GPU": 4.0}, [{"CPU": 2.0, "GPU": 4.0}])
    p = plan.pools[0]
    assert p.plan.num_gpus == 0 and p.plan.num_cpus == 0.25 and not p.plan.bundles and p.model_path == "gpt-3.5-turbo"
    assert p.spec.api.concurrency == 4 and p.spec.api.requests_per_minute == 60
    assert any("API teacher" in n for n in plan.notes)


def test_api_revision_and_manifest_ignore_how_an_endpoint_is_asked():
    cfg = job()
    key = key_context_for(cfg.teachers[0], "gpt-3.5-turbo", cfg, "v1")
    assert key.model_revision == "api:http://api.test/v1/gpt-3.5-turbo"
    slower = TeacherConfig.model_validate(api_teacher(concurrency=1, requests_per_minute=5, timeout_s=9,
                                                      api_key_env="OTHER"))
    assert teacher_generation_config(slower) == teacher_generation_config(cfg.teachers[0])
    moved = TeacherConfig.model_validate(api_teacher(base_url="http://other/v1"))
    assert teacher_generation_config(moved) != teacher_generation_config(cfg.teachers[0])
    assert "api" not in teacher_generation_config(TeacherConfig(name="t", model="/m"))


# ----------------------------------------------------------------------------- the actor with a mock transport


class Server:
    """A scripted OpenAI-compatible endpoint: ``faults[(prompt marker, attempt)]`` -> status."""

    def __init__(self, faults: dict | None = None, always: dict | None = None):
        self.faults, self.always = faults or {}, always or {}
        self.bodies: list[dict] = []
        self.seen: dict[str, int] = {}
        self.auth: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.auth.add(request.headers.get("authorization", ""))
        prompt = body.get("prompt") or body["messages"][0]["content"]
        attempt = self.seen.get(prompt, 0)
        self.seen[prompt] = attempt + 1
        for (m, a), status in self.faults.items():
            if m in prompt and a == attempt:
                return self._fail(status)
        for m, status in self.always.items():
            if m in prompt:
                return self._fail(status)
        if "Critique" in prompt or "Verdict" in prompt:
            texts = [f"Step 1 is fine.\nVerdict: {'correct' if j == 0 else 'wrong'}" for j in range(body["n"])]
        else:
            texts = [f"{GOOD} sample {j}" for j in range(body["n"])]
        return httpx.Response(200, json={
            "choices": [{"index": j, "text": t, "finish_reason": "stop"} for j, t in enumerate(texts)],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5 * body["n"]}})

    @staticmethod
    def _fail(status):
        if status == "timeout":
            raise httpx.ReadTimeout("stalled")
        if status == "refused":
            raise httpx.ConnectError("refused")
        return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {},
                              json={"error": {"message": f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}"}})


def make_teacher(cfg: JobConfig, server: Server, monkeypatch) -> ApiTeacher:
    monkeypatch.setenv("TEST_KEY", KEY)
    t = cfg.teachers[0]
    teacher = ApiTeacher(engine_spec(t, api_plan(t, "cpu"), cfg.prompts, cfg.self_eval_for(t.name)))
    teacher.transport = httpx.MockTransport(server)
    return teacher


def run_batch(cfg: JobConfig, teacher: ApiTeacher) -> list[dict]:
    rows = prompt_rows(cfg.teachers[0], POOL, 0, 3, POOL, cfg.prompts)
    return teacher(pa.Table.from_pylist(rows)).to_pylist()


def test_api_teacher_rows_match_the_engine_shape_with_self_evaluation(monkeypatch):
    cfg = job(self_eval={"enabled": True, "evals_per_cot": 2, "temperature": 0.5})
    server = Server()
    out = run_batch(cfg, make_teacher(cfg, server, monkeypatch))
    rat = [r for r in out if r["kind"] == "rationale"]
    se = [r for r in out if r["kind"] == "self_eval"]
    assert sorted((r["example_id"], r["sample_idx"]) for r in rat) == [(f"q{i}", j) for i in range(3) for j in range(2)]
    assert len(se) == 3 * 2 * 2 and all(r["n_evals"] == 2 for r in rat)
    assert all(r["error"] == "" for r in out) and all("the answer is (b) green" in r["text"] for r in rat)
    # one request per prompt (n samples each), seeded per request, key only in the header
    cot_bodies = [b for b in server.bodies if "Verdict" not in b["prompt"]]
    assert len(cot_bodies) == 3 and {b["n"] for b in cot_bodies} == {2} and len({b["seed"] for b in cot_bodies}) == 3
    assert server.auth == {f"Bearer {KEY}"} and all(KEY not in json.dumps(b) for b in server.bodies)
    assert sum(r["requests"] for r in out) == 3 + 6 and sum(r["output_tokens"] for r in out) == 5 * (6 + 12)
    records = build_shard_records(out, {r.id: r for r in POOL}, "gpt", cfg.filter, cfg.self_eval.verdicts,
                                  key=key_context_for(cfg.teachers[0], "gpt-3.5-turbo", cfg, "v1"))
    st = records.stats
    assert len(records.rationale) == 6 and st.api["requests"] == 9 and st.api["retries"] == 0
    assert st.kind("self_eval").prompts == 6


def test_retries_then_success_and_exhausted_retries_become_failed_rows(monkeypatch):
    cfg = job(teacher=api_teacher(max_stops=1), filter={"drop_unparsable": False})
    server = Server(faults={("number 0?", 0): 429, ("number 0?", 1): 503, ("number 2?", 0): "timeout"},
                    always={"number 1?": 500})
    out = run_batch(cfg, make_teacher(cfg, server, monkeypatch))
    ok = [r for r in out if not r["error"]]
    failed = [r for r in out if r["error"]]
    assert {r["example_id"] for r in ok} == {"q0", "q2"} and len(ok) == 4
    assert {r["example_id"] for r in failed} == {"q1"} and [r["sample_idx"] for r in failed] == [0, 1]
    assert failed[0]["error"].startswith("HTTP 500") and "after 2 retries" in failed[0]["error"]
    assert KEY[-4:] + '"' not in failed[0]["error"] and "***" not in failed[0]["error"]  # masked key scrubbed
    assert sum(r["retries"] for r in out) == 2 + 1 + 2 and len(server.bodies) == 3 + 5
    assert all(len(b["stop"]) == 1 for b in server.bodies)
    rec = build_shard_records(out, {r.id: r for r in POOL}, "gpt", cfg.filter, cfg.self_eval.verdicts,
                              key=key_context_for(cfg.teachers[0], "gpt-3.5-turbo", cfg, "v1"))
    st = rec.stats
    assert st.failed == 2 and st.kind("rationale").failed_reasons == {"HTTP 500": 2} and len(rec.failed) == 2
    assert st.api["requests"] == 3 and st.api["retries"] == 5 and st.outputs == 4
    assert st.to_dict()["api"]["failed_reasons"] == {"HTTP 500": 2}


def test_n_requests_mode_and_chat_endpoint(monkeypatch):
    cfg = job(teacher=api_teacher(n_per_request=False, endpoint="chat"))
    server = Server()
    out = run_batch(cfg, make_teacher(cfg, server, monkeypatch))
    assert len(server.bodies) == 6 and {b["n"] for b in server.bodies} == {1}
    assert all("messages" in b and "prompt" not in b for b in server.bodies)
    seeds = sorted(b["seed"] for b in server.bodies)
    assert len(set(seeds)) == 6 and sum(r["requests"] for r in out) == 6


@pytest.mark.parametrize("status", [401, 404])
def test_a_wrong_key_or_model_fails_the_teacher_with_one_line(monkeypatch, status):
    cfg = job()
    teacher = make_teacher(cfg, Server(always={"Question": status}), monkeypatch)
    with pytest.raises(TeacherStartupError, match=f"HTTP {status}") as err:
        run_batch(cfg, teacher)
    assert KEY not in str(err.value) and "gpt" in str(err.value)


def test_an_endpoint_never_reached_fails_the_teacher(monkeypatch):
    cfg = job()
    teacher = make_teacher(cfg, Server(always={"Question": "refused"}), monkeypatch)
    with pytest.raises(TeacherStartupError, match="cannot reach http://api.test/v1"):
        run_batch(cfg, teacher)


def test_the_readme_example_is_a_valid_config():
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### API teachers"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    cfg = validate_config(yaml.safe_load(block[:block.index("```")]))
    gpt = cfg.teachers[1]
    assert gpt.api is not None and gpt.api.api_key_env == "OPENAI_API_KEY" and cfg.teachers[0].api is None

"""Teacher actor batch logic with a fake engine, prompt rows, error extraction (no Ray, no vLLM)."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest

from tinyllm_ray.config import JobConfig, PromptConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.teachers.engine import EngineSpec, TeacherEngine, _time_shares, root_cause_from_log
from tinyllm_ray.teachers.models import precheck_model, resolve_model
from tinyllm_ray.teachers.placement import plan_teacher
from tinyllm_ray.teachers.prompt_rows import (
    PROMPT_COLUMNS,
    aligned_batch_size,
    num_shards,
    prompt_rows,
    request_seed,
)
from tinyllm_ray.teachers.records import RAW_COLUMNS
from tinyllm_ray.teachers.report import GenerationError
from tinyllm_ray.teachers.serving import describe_error, engine_spec

POOL = [MCQRecord(f"q{i}", f"Question number {i}?", ("red", "green", "blue"), "green") for i in range(10)]


class FakeParams(dict):
    def __init__(self, **kw):
        super().__init__(**kw)


class FakeLLM:
    """Returns n completions per prompt; text says which prompt/sample it answers."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((list(prompts), params))
        outs = []
        for k, p in enumerate(prompts):
            sp = params[k] if isinstance(params, list) else params
            comps = []
            for j in range(sp["n"]):
                if "Critique:" in p:
                    text = f"critique {j}\nVerdict: {'wrong' if j else 'correct'}"
                elif "Question number 1?" in p.rsplit("Q:", 1)[-1]:
                    text = "   "  # empty CoT: must not be self-evaluated
                else:
                    text = f"Rationale: Let's think step by step. Sample {j}. Thus, the answer is (b) green.\n\nQ: junk"
                comps.append(SimpleNamespace(text=text, token_ids=[1] * (3 + j), finish_reason="stop"))
            outs.append(SimpleNamespace(outputs=comps, prompt_token_ids=[0] * 7))
        return outs


def make_engine(spec: EngineSpec) -> TeacherEngine:
    eng = TeacherEngine.__new__(TeacherEngine)  # skip __init__: no vLLM here
    eng.spec = spec
    eng.llm = FakeLLM()
    eng._configure_sampling(FakeParams)
    return eng


def spec_for(cfg: JobConfig) -> EngineSpec:
    t = cfg.teachers[0]
    return engine_spec(t, plan_teacher(t, "cpu", self_eval=cfg.self_eval), cfg.prompts, cfg.self_eval)


def job(**kw) -> JobConfig:
    t = TeacherConfig(name="llama", model="/m", **kw.pop("teacher", {}))
    return JobConfig(data={"name": "synthetic"}, teachers=[t], **kw)


def batch_for(cfg: JobConfig, shard: int = 0, shard_size: int = 3) -> pa.Table:
    rows = prompt_rows(cfg.teachers[0], POOL, shard, shard_size, POOL, cfg.prompts)
    return pa.Table.from_pylist(rows)


def test_engine_returns_n_cots_and_self_evals_per_nonempty_cot():
    cfg = job(teacher={"sampling": {"temperature": 0.7, "n": 2, "seed": 3}},
              self_eval={"enabled": True, "evals_per_cot": 2, "temperature": 0.5})
    spec = spec_for(cfg)
    assert spec.sampling is cfg.teachers[0].sampling and spec.self_eval is cfg.self_eval  # the models travel
    eng = make_engine(spec)
    assert eng._cot_base == {"n": 2, "temperature": 0.7, "top_p": 1.0, "max_tokens": 128,
                             "stop": cfg.teachers[0].sampling.stop}
    assert eng._se_base == {"n": 2, "temperature": 0.5, "top_p": 1.0, "max_tokens": 128,
                            "stop": cfg.teachers[0].sampling.stop}
    out = eng(batch_for(cfg))  # q0, q1 (empty CoTs), q2
    assert tuple(sorted(out.column_names)) == tuple(sorted((*RAW_COLUMNS, "error")))
    assert out.column("error").null_count == out.num_rows  # nothing failed
    rows = out.to_pylist()
    rat = [r for r in rows if r["kind"] == "rationale"]
    se = [r for r in rows if r["kind"] == "self_eval"]
    assert len(rat) == 6 and len(se) == 2 * 2 * 2  # 2 non-empty questions x 2 CoTs x 2 evals
    assert {r["n_evals"] for r in rat if r["example_id"] == "q1"} == {0}
    assert {r["n_evals"] for r in rat if r["example_id"] != "q1"} == {2}
    r0 = next(r for r in rat if r["example_id"] == "q0" and r["sample_idx"] == 1)
    assert r0["text"] == "Sample 1. Thus, the answer is (b) green."  # cleaned: label, trigger, run-on cut
    assert r0["output_tokens"] == 4 and r0["prompt_tokens"] == 7 and r0["eval_idx"] == -1
    assert {(r["example_id"], r["sample_idx"], r["eval_idx"]) for r in se} == {
        (q, s, e) for q in ("q0", "q2") for s in (0, 1) for e in (0, 1)}
    assert all(r["prompt_hash"] != r0["prompt_hash"] for r in se)
    # seeds: one SamplingParams per request, derived from (seed, teacher, example, kind, sample)
    (_, cot_params), (se_prompts, se_params) = eng.llm.calls
    assert [p["seed"] for p in cot_params] == [request_seed(3, "llama", q, "cot") for q in ("q0", "q1", "q2")]
    assert len(se_prompts) == 4 and all("Proposed reasoning: Sample" in p for p in se_prompts)
    assert se_params[1]["seed"] == request_seed(3, "llama", "q0", "self_eval", 1)
    assert sum(out.column("gen_seconds").to_pylist()) >= 0


def test_greedy_engine_shares_one_params_object():
    cfg = job()
    eng = make_engine(spec_for(cfg))
    out = eng(batch_for(cfg))
    assert out.num_rows == 3 and set(out.column("kind").to_pylist()) == {"rationale"}
    assert isinstance(eng.llm.calls[0][1], FakeParams)


def test_time_shares_split_by_tokens():
    outs = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1, 1, 1])]),
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1])])]
    share = _time_shares(outs, 2.0)
    assert share(3) + share(1) == pytest.approx(2.0)
    zero = _time_shares([SimpleNamespace(outputs=[SimpleNamespace(token_ids=[])])] * 2, 1.0)
    assert zero(0) == 0.5


def test_prompt_rows_are_deterministic_and_shared_across_teachers():
    p = PromptConfig(icl_k=2, seed=5)
    a = TeacherConfig(name="a", model="/m")
    b = TeacherConfig(name="b", model="/m")
    rows_a = prompt_rows(a, POOL, 1, 4, POOL, p)
    assert [r["example_id"] for r in rows_a] == ["q4", "q5", "q6", "q7"]
    assert tuple(rows_a[0]) == PROMPT_COLUMNS and rows_a[0]["shard"] == 1
    assert rows_a == prompt_rows(a, POOL, 1, 4, POOL, p)
    assert [r["prompt"] for r in rows_a] == [r["prompt"] for r in prompt_rows(b, POOL, 1, 4, POOL, p)]
    assert rows_a[0]["prompt"].endswith("Answer: (b) green\nRationale: Let's think step by step.")
    cot = TeacherConfig(name="c", model="/m", prompt_style="cot")
    assert "Answer: (b) green\nRationale" not in prompt_rows(cot, POOL, 1, 4, POOL, p)[0]["prompt"]
    assert prompt_rows(a, POOL, 2, 4, POOL, p)[-1]["example_id"] == "q9"  # short last shard
    assert num_shards(10, 4) == 3 and num_shards(8, 4) == 2
    with pytest.raises(ValueError):
        num_shards(3, 0)


def test_request_seed_depends_only_on_what_is_generated():
    assert request_seed(None, "t", "q", "cot") is None
    s = request_seed(0, "t", "q", "cot")
    assert s == request_seed(0, "t", "q", "cot") and 0 <= s < 2**31 - 1024
    assert len({s, request_seed(1, "t", "q", "cot"), request_seed(0, "u", "q", "cot"),
                request_seed(0, "t", "q", "self_eval"), request_seed(0, "t", "q", "cot", 1)}) == 5


def test_root_cause_skips_generic_wrappers():
    log = (
        "(Worker pid=1) ERROR   File x\n"
        "ValueError: Available memory on node 0 is less than requested memory for kv (1024.0 GiB).\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n"
    )
    assert root_cause_from_log(log).startswith("ValueError: Available memory")
    assert root_cause_from_log("all fine\n") is None


def test_describe_error_prefers_the_startup_message():
    exc = RuntimeError("The actor died ...\n  File y\ntinyllm_ray.teachers.engine.TeacherStartupError: "
                       "teacher 'bad': vLLM engine for model '/x' failed to start: OSError: nope\n")
    assert describe_error("bad", exc) == "teacher 'bad': vLLM engine for model '/x' failed to start: OSError: nope"
    assert describe_error("t", KeyError("k")).startswith("teacher 't' failed: KeyError")


def test_precheck_model_paths(tmp_path):
    with pytest.raises(GenerationError, match="teacher 'x': model path '/does/not/exist' does not exist"):
        precheck_model("x", "/does/not/exist", same_filesystem=True)
    precheck_model("x", "/does/not/exist", same_filesystem=False)  # cluster: the engine reports it
    precheck_model("x", "Qwen/Qwen2.5-7B-Instruct", same_filesystem=True)  # hub names untouched
    with pytest.raises(GenerationError, match="no config.json"):
        precheck_model("x", str(tmp_path), same_filesystem=True)
    assert resolve_model("/some/path") == "/some/path"


def test_batches_tile_shards():
    assert aligned_batch_size(64, 16) == 16
    assert aligned_batch_size(64, 48) == 32
    assert aligned_batch_size(10, 16) == 10
    assert aligned_batch_size(7, 4) == 1
    with pytest.raises(ValueError):
        aligned_batch_size(0, 4)


def test_report_summary_warns_when_a_teacher_loses_most_outputs():
    from tinyllm_ray.store.stats import KindStats, TeacherStats
    from tinyllm_ray.teachers.report import GenerationReport

    good = TeacherStats("good", generation_seconds=1.0)
    good.kinds["rationale"] = KindStats(prompts=4, outputs=4, kept=4, output_tokens=40)
    bad = TeacherStats("bad", generation_seconds=1.0)
    bad.kinds["rationale"] = KindStats(prompts=4, outputs=4, kept=0, output_tokens=40,
                                       dropped={"empty": 1, "unparsable": 3, "answer_mismatch": 0, "verdict_wrong": 0})
    rep = GenerationReport(store_uri="/s", split="train", shard_size=4, num_shards=1,
                           teachers={"good": good, "bad": bad}, shards_written={"good": 1, "bad": 1},
                           shards_skipped={"good": 0, "bad": 0}, run_output_tokens={"good": 40, "bad": 40},
                           wall_seconds=2.0)
    text = rep.summary()
    assert "WARNING teacher bad: 4/4 outputs dropped (mostly unparsable)" in text
    assert "WARNING teacher good" not in text
    assert rep.run_tokens_per_s == 40.0 and rep.to_dict()["teachers"]["bad"]["kept"] == 0


def test_resolve_tiny_model_spec(monkeypatch):
    from tinyllm_ray.models import tiny

    seen = []
    monkeypatch.setattr(tiny, "tiny_model_path", lambda cfg, cache_dir=None: seen.append(cfg) or f"/cache/{cfg.family}")
    assert resolve_model("tiny:qwen2?seed=3&hidden_size=256") == "/cache/qwen2"
    assert (seen[0].family, seen[0].seed, seen[0].hidden_size, seen[0].num_layers) == ("qwen2", 3, 256, 2)


def test_engine_cleans_rationales_with_the_configured_cot_trigger():
    """The trigger travels in ``spec.prompts``; the actor never re-defaults it."""
    default = make_engine(spec_for(job()))(batch_for(job())).to_pylist()
    assert default[0]["text"].startswith("Sample 0.")
    custom = job(prompts={"cot_trigger": "Reason it out."})
    rows = make_engine(spec_for(custom))(batch_for(custom)).to_pylist()
    assert rows[0]["text"].startswith("Let's think step by step. Sample 0.")  # not this config's trigger

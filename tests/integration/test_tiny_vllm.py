"""Real vLLM (CPU build) serves the tiny Llama and Qwen2 folders, greedily and repeatably.

vLLM spawns an engine-core process, so it runs in a child ``python`` (never inside
pytest's process). One child loads both models one after the other, which pays vLLM's
import (~8 s) once; each engine then starts in ~15-20 s on 2 idle CPUs (several times
that on a loaded machine, hence the generous child timeout).

Also here, because they start fresh interpreters: two processes racing on a cold
``tiny_model_path`` cache, and byte-identical tokenizer/weights across processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach a hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.models import tiny

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Question: Which is a mammal? Answer Choices: (a) shark (b) whale", "Thus, the answer is"]
MAX_TOKENS = 8

# Run by a child interpreter: argv[1] is a JSON list of [model folder, dtype].
VLLM_SCRIPT = r"""
import gc, json, sys, time
if __name__ == "__main__":
    t0 = time.time()
    from vllm import LLM, SamplingParams
    print("RESULT " + json.dumps({"import_s": time.time() - t0}), flush=True)
    prompts, max_tokens = json.loads(sys.argv[2]), int(sys.argv[3])
    for path, dtype in json.loads(sys.argv[1]):
        t0 = time.time()
        llm = LLM(model=path, dtype=dtype, enforce_eager=True, max_model_len=512, seed=0)
        t1 = time.time()
        greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        first = llm.generate(prompts, greedy)
        second = llm.generate(prompts, greedy)
        chat = llm.chat([{"role": "user", "content": "Which is a mammal?"}], greedy)
        t2 = time.time()
        print("RESULT " + json.dumps({
            "path": path, "dtype": dtype, "load_s": t1 - t0, "generate_s": t2 - t1,
            "model_dtype": str(llm.llm_engine.model_config.dtype),
            "first": [list(o.outputs[0].token_ids) for o in first],
            "second": [list(o.outputs[0].token_ids) for o in second],
            "text": [o.outputs[0].text for o in first],
            "prompt_ids": [list(o.prompt_token_ids) for o in first],
            "chat_prompt_ids": list(chat[0].prompt_token_ids),
            "chat_tokens": len(chat[0].outputs[0].token_ids),
        }), flush=True)
        del llm
        gc.collect()
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        TOKENIZERS_PARALLELISM="false",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    return env


def _hf_greedy(path: Path, prompt: str) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False)
    return out[0, enc.input_ids.shape[1] :].tolist()


def test_vllm_serves_tiny_llama_and_qwen2(tiny_cache, tmp_path):
    llama = tiny.tiny_model_path(TinyModelConfig(family="llama"), tiny_cache)
    qwen2 = tiny.tiny_model_path(TinyModelConfig(family="qwen2"), tiny_cache)
    # float32 lets us compare token for token with transformers; bfloat16 is what
    # dtype="auto" picks on CPU (vLLM downcasts float32 checkpoints), so it must work too.
    plan = [[str(llama), "float32"], [str(qwen2), "bfloat16"]]
    script = tmp_path / "run_vllm.py"
    script.write_text(VLLM_SCRIPT)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(plan), json.dumps(PROMPTS), str(MAX_TOKENS)],
        check=False,
        cwd=tmp_path,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.time() - t0
    results = [
        json.loads(line[len("RESULT ") :]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
    ]
    assert proc.returncode == 0 and len(results) == 3, (
        f"vLLM child failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    timing = {"wall_s": round(wall, 1), "import_s": round(results[0]["import_s"], 1)}
    for r in results[1:]:
        timing[Path(r["path"]).name.split("-")[0]] = {k: round(r[k], 1) for k in ("load_s", "generate_s")}
    print(f"\nvLLM timing: {timing}")

    from transformers import AutoTokenizer

    for r, (path, dtype) in zip(results[1:], plan, strict=True):
        assert r["model_dtype"] == f"torch.{dtype}"
        assert r["first"] == r["second"], "temperature 0 must repeat exactly"
        assert all(len(ids) == MAX_TOKENS for ids in r["first"])  # a random model never emits eos here
        assert all(isinstance(t, str) and t for t in r["text"])
        tok = AutoTokenizer.from_pretrained(path)
        assert r["prompt_ids"] == [tok(p).input_ids for p in PROMPTS], "vLLM tokenizes like transformers"
        chat_text = tok.apply_chat_template(
            [{"role": "user", "content": "Which is a mammal?"}], tokenize=False, add_generation_prompt=True
        )
        assert r["chat_prompt_ids"] == tok(chat_text, add_special_tokens=False).input_ids
        assert r["chat_tokens"] == MAX_TOKENS

    llama_run = results[1]
    assert llama_run["prompt_ids"][0][0] == 1  # Llama folders prepend <s>
    assert llama_run["chat_prompt_ids"][0] == 1  # ... and so does their chat template
    # float32 vLLM and float32 transformers read the same weights the same way
    assert llama_run["first"] == [_hf_greedy(llama, p) for p in PROMPTS]


RACE_SCRIPT = r"""
import json, sys
from tinyllm_ray.models import tiny
from tinyllm_ray.config import TinyModelConfig
p = tiny.tiny_model_path(TinyModelConfig(family="llama", num_layers=1, seed=11), sys.argv[1])
print("PATH " + str(p), flush=True)
"""


def test_cache_race_between_processes(tmp_path):
    """Two processes on a cold cache: both get the same complete folder, nothing left over."""
    cache = tmp_path / "cache"
    env = _child_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, str(cache)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {line[5:] for out, _ in outs for line in out.splitlines() if line.startswith("PATH ")}
    assert len(paths) == 1
    (path,) = paths
    assert [p.name for p in cache.iterdir()] == [Path(path).name]
    assert (Path(path) / tiny.MARKER).is_file()
    ref = tiny.build_tiny_model("llama", tmp_path / "ref", num_layers=1, seed=11)
    assert (Path(path) / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tokenizer_and_weights_identical_in_a_fresh_process(tmp_path):
    """Rust hash maps are seeded per process: byte-identity must hold across processes."""
    code = (
        "import sys; from tinyllm_ray.models import tiny;"
        "tiny.build_tokenizer(sys.argv[1] + '/tok');"
        "tiny.build_tiny_model('llama', sys.argv[1] + '/llama')"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO, env=_child_env(), timeout=180
    )
    here_llama = tiny.build_tiny_model("llama", tmp_path / "llama_here")
    here = tiny.build_tokenizer(tmp_path / "tok_here")
    assert len(here) == 2000
    assert sha(tmp_path / "tok" / "tokenizer.json") == sha(tmp_path / "tok_here" / "tokenizer.json")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert sha(tmp_path / "llama" / name) == sha(here_llama / name), name

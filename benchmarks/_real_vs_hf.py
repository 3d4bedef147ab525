"""``real_teacher.py --vs-hf``: the pipeline vs batched Hugging Face ``generate`` on SmolLM2-135M.

Why a separate module: ``real_teacher.py`` owns the real-teacher run and its report; this
adds one comparison on the same model (issue 12, item 3) without pushing either file past
the project's module size. Nothing here re-implements the pipeline: the prompts come from
``prompt_rows.build_prompt`` (checked against the store's prompt hashes), the pipeline side
is ``run_generation`` itself, the per-batch timing is ``teacher_throughput``'s
``TimedTeacherEngine`` and the process-tree CPU sampler its ``TreeCpu``.

Both sides, same work: the first ``--n`` ARC-Challenge train questions' teacher-forcing
prompts, greedy, the same ``max_tokens``, the teacher's stop strings and EOS, the same
dtype (the converted folder's, as vLLM loads it), the same number of threads (the actor's
``num_cpus``: Ray sets ``OMP_NUM_THREADS``; HF gets ``torch.set_num_threads``). Generated
tokens are counted on vLLM's terms on both sides (:func:`generated_until_stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import generated_until_stop, loadavg, log, machine_facts, run_child
from benchmarks._real_vs_hf_report import VS_HF_MAX_TOKENS, vs_hf_key, vs_hf_section

VS_HF_N = 128


def add_vs_hf_args(ap: argparse.ArgumentParser) -> None:
    """The ``--vs-hf`` options of ``real_teacher.py``."""
    ap.add_argument("--vs-hf", action="store_true",
                    help=f"pipeline vs batched HF generate on the same prompts (defaults: --n {VS_HF_N}, "
                         f"--max-tokens {VS_HF_MAX_TOKENS}); adds a section to the results, keeps the rest")
    ap.add_argument("--hf-batch-sizes", default="16,32", help="HF generate batch sizes tried (--vs-hf)")
    ap.add_argument("--pipeline-batch-sizes", default="16,64,128",
                    help="pipeline batch sizes tried (--vs-hf; prompts per engine call: a vLLM user hands the "
                         "engine every prompt, continuous batching does the rest)")
    ap.add_argument("--hf-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rate(tokens: float, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- HF side (child process)


def hf_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Batched ``generate``: left padding, greedy, KV cache, ``inference_mode``, stop strings.

    Runs in a fresh process (``run_child``) so one batch size's allocator and thread
    state cannot help the next.
    """
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=getattr(torch, spec["dtype"])).eval()
    eos = model.generation_config.eos_token_id
    eos_ids = list(eos) if isinstance(eos, list) else [eos]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    startup = time.perf_counter() - t0
    prompts, bs = spec["prompts"], spec["batch_size"]
    secs, toks, raw, ends, cpu_ends, counts = [], [], [], [], [], []
    cpu_start = _cpu()
    for i in range(0, len(prompts), bs):
        tb = time.perf_counter()
        enc = tok(prompts[i:i + bs], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=spec["max_tokens"], do_sample=False, num_beams=1,
                                 pad_token_id=pad, eos_token_id=eos_ids, stop_strings=spec["stop"] or None,
                                 tokenizer=tok)
        secs.append(time.perf_counter() - tb)
        ends.append(time.perf_counter())
        cpu_ends.append(_cpu())
        rows = out[:, enc["input_ids"].shape[1]:].tolist()
        n = [generated_until_stop(r, eos_ids, spec["stop"], lambda x: tok.decode(x, skip_special_tokens=True))
             for r in rows]
        counts += n
        toks.append(sum(n))
        raw.append(len(rows) * len(rows[0]) if rows else 0)
    steady_s, steady_t = ends[-1] - ends[0], sum(toks[1:])
    multi = len(secs) > 1  # a steady state needs a batch after the first
    return {"batch_size": bs, "threads": torch.get_num_threads(), "dtype": str(model.dtype),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "startup_seconds": startup, "e2e_seconds": time.time() - spec["launched_at"],
            "batch_seconds": [round(s, 3) for s in secs], "batch_tokens": toks, "batch_padded_tokens": raw,
            "output_tokens": sum(toks), "e2e_tok_s": _rate(sum(toks), time.time() - spec["launched_at"]),
            "steady_seconds": steady_s, "steady_tokens": steady_t,
            "steady_tok_s": _rate(steady_t, steady_s) if multi else None,
            "steady_cpu_seconds": cpu_ends[-1] - cpu_ends[0],
            "steady_cpu_ms_per_token": 1000 * (cpu_ends[-1] - cpu_ends[0]) / steady_t if multi and steady_t else None,
            "busy_seconds": sum(secs), "busy_tok_s": _rate(sum(toks), sum(secs)),
            "busy_cpu_ms_per_token": 1000 * (cpu_ends[-1] - cpu_start) / sum(toks) if toks and sum(toks) else None,
            "cpu_seconds": _cpu(), "per_request_tokens": counts}


def padding_factor(lengths: list[int], batch_size: int) -> float:
    """Positions a left-padded batched prefill computes per real prompt token (1.0 = no padding).

    Why: HF pads every prompt of a batch to the longest one; vLLM packs prompts without
    padding, so this factor is prefill work only HF does.
    """
    padded = sum(len(lengths[i:i + batch_size]) * max(lengths[i:i + batch_size])
                 for i in range(0, len(lengths), batch_size))
    return padded / sum(lengths) if lengths else float("nan")


def hf_worker_main(spec_file: str, out_file: str) -> int:
    """Entry of the ``--hf-worker`` child: one HF run, its result to ``out_file``."""
    Path(out_file).write_text(json.dumps(hf_worker(json.loads(Path(spec_file).read_text()))))
    return 0


def run_hf(spec: dict[str, Any], batch_size: int, workdir: Path) -> dict[str, Any]:
    """One HF run with ``batch_size`` in a fresh ``real_teacher.py --hf-worker`` process."""
    threads = str(spec["threads"])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    spec_file, out_file = workdir / f"hf{batch_size}-spec.json", workdir / f"hf{batch_size}-out.json"
    spec_file.write_text(json.dumps({**spec, "batch_size": batch_size, "launched_at": time.time()}))
    script = Path(__file__).resolve().parent / "real_teacher.py"
    l0 = loadavg()
    res = run_child([sys.executable, str(script), "--hf-worker", str(spec_file), str(out_file)],
                    what=f"HF generate, batch {batch_size}", env=env, result_file=out_file,
                    log_file=workdir / f"hf{batch_size}.log").result
    res["load_start_end"] = [l0, loadavg()]
    return res


# ----------------------------------------------------------------------------- pipeline side


def run_pipeline(cfg: Any, workdir: Path) -> dict[str, Any]:
    """``run_generation`` with the per-call timing engine; Ray started here (timed separately)."""
    import ray

    import tinyllm_ray.teachers.engine as engine_mod
    from benchmarks.teacher_throughput import TreeCpu, timed_engine_class
    from tinyllm_ray.runtime import init_ray
    from tinyllm_ray.teachers import run_generation

    calls_log = workdir / "calls.jsonl"
    tree = TreeCpu().start()
    l0 = loadavg()
    t_ray = time.time()
    init_ray(cfg.runtime, include_dashboard=False)
    ray_start = time.time() - t_ray
    ray.data.DataContext.get_current().enable_progress_bars = False
    plain = engine_mod.TeacherEngine
    # the pipeline imports it at run time; restored after, so the next run's class wraps the plain engine once
    engine_mod.TeacherEngine = timed_engine_class(str(calls_log))
    try:
        t0 = time.time()
        report = run_generation(cfg, print_summary=False)
        e2e = time.time() - t0
    finally:
        engine_mod.TeacherEngine = plain
    time.sleep(2 * tree.every)
    tree.stop()
    calls = sorted((json.loads(x) for x in calls_log.read_text().splitlines()), key=lambda c: c["t1"])
    toks = [c["tokens"] for c in calls]
    multi = len(calls) > 1  # a steady state needs a call after the first
    steady_s, steady_t = calls[-1]["t1"] - calls[0]["t1"], sum(toks[1:])
    steady_cpu = calls[-1]["cpu1"] - calls[0]["cpu1"]
    # busy: every call, the cold first included (HF's side: every generate batch)
    busy_s = sum(c["t1"] - c["t0"] for c in calls)
    busy_cpu = sum(c["cpu1"] - c["cpu0"] for c in calls)
    tree_cpu = tree.between(calls[0]["t1"], calls[-1]["t1"], calls[0]["pid"])
    per_s = tree_cpu["all"] / tree_cpu["window_seconds"] if tree_cpu["window_seconds"] > 0 else float("nan")
    tree_busy = tree.between(calls[0]["t0"], calls[-1]["t1"], calls[0]["pid"])
    busy_per_s = tree_busy["all"] / tree_busy["window_seconds"] if tree_busy["window_seconds"] > 0 else float("nan")
    total = sum(toks)
    return {"ray_start_seconds": ray_start, "e2e_seconds": e2e, "output_tokens": total,
            "report_output_tokens": report.teachers[cfg.teachers[0].name].output_tokens,
            "e2e_tok_s": _rate(total, e2e), "e2e_with_ray_start_tok_s": _rate(total, e2e + ray_start),
            "engine_startup_seconds": calls[0]["startup_seconds"], "first_call_start_seconds": calls[0]["t0"] - t0,
            "calls": len(calls), "batch_tokens": toks, "batch_seconds": [round(c["gen_seconds"], 3) for c in calls],
            "engine_busy_tok_s": _rate(total, sum(c["gen_seconds"] for c in calls)),
            "steady_seconds": steady_s, "steady_tokens": steady_t,
            "steady_tok_s": _rate(steady_t, steady_s) if multi else None,
            "steady_cpu_seconds": steady_cpu,
            "steady_cpu_ms_per_token": 1000 * steady_cpu / steady_t if multi else None,
            "busy_seconds": busy_s, "busy_tok_s": _rate(total, busy_s), "busy_cpu_ms_per_token": 1000 * busy_cpu / total,
            "steady_cpu_all_processes": tree_cpu,
            "steady_cpu_all_ms_per_token": 1000 * per_s * steady_s / steady_t if multi else None,
            "busy_cpu_all_ms_per_token": 1000 * busy_per_s * (calls[-1]["t1"] - calls[0]["t0"]) / total,
            "load_start_end": [l0, loadavg()]}


# ----------------------------------------------------------------------------- the comparison


def _with_batch_size(cfg: Any, batch_size: int) -> Any:
    """``cfg`` whose teacher sends ``batch_size`` prompts per engine call (a fresh store each)."""
    t = cfg.teachers[0].model_copy(update={"batch_size": batch_size})
    return cfg.model_copy(update={"teachers": [t]})


def _best(runs: list[dict[str, Any]], key: str, low: bool = False) -> dict[str, Any]:
    """The run with the best ``key`` (highest, or lowest with ``low``) among those that have it ({} if none)."""
    have = [r for r in runs if r.get(key) is not None]
    return (min if low else max)(have, key=lambda r: r[key]) if have else {}


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def compare(cfg: Any, model_path: Path, batch_sizes: list[int], command: str,
            pipeline_batch_sizes: list[int] | None = None) -> dict[str, Any]:
    """One pipeline run per batch size, then one HF run per batch size, all in this (locked) command."""
    import shutil

    from transformers import AutoTokenizer

    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.prompts import prompt_hash
    from tinyllm_ray.teachers import RationaleStore
    from tinyllm_ray.teachers.prompt_rows import build_prompt

    teacher = cfg.teachers[0]
    train = load_splits(cfg.data).require("train")
    prompts = [build_prompt(teacher, r, train, cfg.prompts) for r in train]
    threads = max(1, int(teacher.num_cpus))
    tok = AutoTokenizer.from_pretrained(str(model_path))
    prompt_tokens = [len(tok(p)["input_ids"]) for p in prompts]
    load0, t_all = loadavg(), time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="tinyllm-real-vs-hf-"))

    pipes: list[dict[str, Any]] = []
    hashes = [prompt_hash(p) for p in prompts]
    for pbs in pipeline_batch_sizes or [teacher.batch_size]:
        log(f"pipeline, batches of {pbs}: {len(prompts)} prompts, max_tokens {teacher.sampling.max_tokens}, "
            f"{threads} thread(s)")
        pcfg = _with_batch_size(cfg, pbs)
        shutil.rmtree(pcfg.runtime.resolved_store_uri, ignore_errors=True)
        (workdir / f"pipe{pbs}").mkdir()
        pipe = run_pipeline(pcfg, workdir / f"pipe{pbs}")
        pipe["batch_size"] = pbs
        log(f"pipeline, batches of {pbs}: {pipe['output_tokens']} tokens, busy {pipe['busy_tok_s']:.1f} tok/s, "
            f"CPU {pipe['busy_cpu_ms_per_token']:.1f} ms/token, e2e {pipe['e2e_seconds']:.0f}s")
        rows = RationaleStore(pcfg.runtime.resolved_store_uri).read_table("rationale", [teacher.name]).to_pylist()
        by_id = {r["example_id"]: r for r in rows}
        pipe["prompts_equal_store_prompt_hash"] = sum(by_id.get(r.id, {}).get("prompt_hash") == h
                                                      for r, h in zip(train, hashes))
        pipe["per_request_tokens"] = [by_id[r.id]["output_tokens"] if r.id in by_id else None for r in train]
        pipes.append(pipe)
    pipe = pipes[0]  # the reference for per-request token counts
    same_prompts = min(p["prompts_equal_store_prompt_hash"] for p in pipes)
    pipe_counts = pipe["per_request_tokens"]
    for p in pipes:
        p["requests_same_token_count_as_first_pipeline"] = sum(a == b for a, b in zip(p.pop("per_request_tokens"),
                                                                                       pipe_counts))

    spec = {"model": str(model_path), "prompts": prompts, "max_tokens": teacher.sampling.max_tokens,
            "stop": list(teacher.sampling.stop), "dtype": teacher.dtype, "threads": threads}
    hf: list[dict[str, Any]] = []
    for bs in batch_sizes:
        log(f"HF generate, batch {bs} ...")
        res = run_hf(spec, bs, workdir)
        counts = res.pop("per_request_tokens")
        res["requests_same_token_count_as_pipeline"] = sum(a == b for a, b in zip(counts, pipe_counts))
        hf.append(res)
        log(f"HF batch {bs}: {res['output_tokens']} tokens, steady {res['steady_tok_s']:.1f} tok/s, "
            f"CPU {res['steady_cpu_ms_per_token']:.1f} ms/token, e2e {res['e2e_seconds']:.0f}s")
    best = _best(hf, "steady_tok_s")
    best_cpu = _best(hf, "steady_cpu_ms_per_token", low=True)
    pipe_steady = _best(pipes, "steady_tok_s")  # runs of one call have no steady state
    pipe_steady_cpu = _best(pipes, "steady_cpu_ms_per_token", low=True)
    pipe_busy, hf_busy = _best(pipes, "busy_tok_s"), _best(hf, "busy_tok_s")
    pipe_busy_cpu, hf_busy_cpu = _best(pipes, "busy_cpu_ms_per_token", low=True), _best(hf, "busy_cpu_ms_per_token",
                                                                                      low=True)
    pipe_e2e = _best(pipes, "e2e_tok_s")
    ratios = {
        # best pipeline batch size vs best HF batch size, every batch (the cold first included)
        "busy_wall": pipe_busy["busy_tok_s"] / hf_busy["busy_tok_s"],
        "busy_cpu_engine_process": hf_busy_cpu["busy_cpu_ms_per_token"] / pipe_busy_cpu["busy_cpu_ms_per_token"],
        "busy_cpu_all_pipeline_processes": (hf_busy_cpu["busy_cpu_ms_per_token"]
                                            / pipe_busy_cpu["busy_cpu_all_ms_per_token"]),
        # steady state (after the first batch): only runs of more than one batch
        # (None when no pipeline run had more than one batch)
        "steady_wall": _ratio(pipe_steady.get("steady_tok_s"), best.get("steady_tok_s")),
        "steady_cpu_engine_process": _ratio(best_cpu.get("steady_cpu_ms_per_token"),
                                            pipe_steady_cpu.get("steady_cpu_ms_per_token")),
        "steady_cpu_all_pipeline_processes": _ratio(best_cpu.get("steady_cpu_ms_per_token"),
                                                    pipe_steady_cpu.get("steady_cpu_all_ms_per_token")),
        "e2e_wall": pipe_e2e["e2e_tok_s"] / max(r["e2e_tok_s"] for r in hf),
        "e2e_wall_with_ray_start": pipes[0]["e2e_with_ray_start_tok_s"] / max(r["e2e_tok_s"] for r in hf),
    }
    best_of = {"pipeline_busy": pipe_busy["batch_size"], "pipeline_busy_cpu": pipe_busy_cpu["batch_size"],
               "pipeline_steady": pipe_steady.get("batch_size"), "pipeline_steady_cpu": pipe_steady_cpu.get("batch_size"),
               "pipeline_e2e": pipe_e2e["batch_size"], "hf_busy": hf_busy["batch_size"],
               "hf_busy_cpu": hf_busy_cpu["batch_size"]}
    return {
        "command": command, "target": 5.0, "ratios": ratios,
        "met": {k: v >= 5.0 for k, v in ratios.items() if v is not None},
        "settings": {"n": len(prompts), "max_tokens": teacher.sampling.max_tokens, "stop": list(teacher.sampling.stop),
                     "dtype": teacher.dtype, "threads": threads, "pipeline_batch_size": pipe_steady.get("batch_size", pipes[0]["batch_size"]),
                     "pipeline_batch_sizes": [p["batch_size"] for p in pipes],
                     "kv_cache_space_gib": teacher.kv_cache_space_gib,
                     "hf_batch_sizes": batch_sizes, "prompt_tokens_mean": statistics.mean(prompt_tokens),
                     "prompt_tokens_min_max": [min(prompt_tokens), max(prompt_tokens)],
                     "hf_prefill_padding": {str(b): padding_factor(prompt_tokens, b) for b in batch_sizes}},
        "checks": {"prompts_equal_store_prompt_hash": same_prompts, "n": len(prompts),
                   "pipeline_tokens": pipe["output_tokens"], "pipeline_stats_tokens": pipe["report_output_tokens"]},
        "pipeline": pipe_steady or pipes[0], "pipelines": pipes, "best_of": best_of, "hf": hf,
        "hf_best_batch_size": best["batch_size"],
        "hf_best_cpu_batch_size": best_cpu["batch_size"],
        "load_start_end": [load0, loadavg()], "total_seconds": time.perf_counter() - t_all,
        "machine": machine_facts(("vllm", "torch", "transformers", "ray")),
    }


def run_vs_hf(args: argparse.Namespace, cfg: Any, model_path: Path,
              render_markdown: Callable[[dict[str, Any]], str]) -> int:
    """``--vs-hf``: run the comparison and add it to the existing results (the rest is kept)."""
    command = (f"python benchmarks/real_teacher.py --vs-hf --n {args.n} --max-tokens {args.max_tokens} "
               f"--hf-batch-sizes {args.hf_batch_sizes} --pipeline-batch-sizes {args.pipeline_batch_sizes}"
               + (f" --kv-cache-gib {args.kv_cache_gib:g}" if args.kv_cache_gib != 1.0 else ""))
    v = compare(cfg, model_path, [int(x) for x in args.hf_batch_sizes.split(",")], command,
                [int(x) for x in args.pipeline_batch_sizes.split(",")])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "real_teacher.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res[vs_hf_key(args.max_tokens)] = v
    path.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    md = render_markdown(res) if "stats" in res else "\n".join(vs_hf_section(res))
    (out / "real_teacher.md").write_text(md + "\n")
    print("\n".join(vs_hf_section(res)), flush=True)
    return 0

"""The Markdown of ``real_teacher.py --vs-hf`` (``_real_vs_hf.py`` measures, this renders).

Split out only to keep both modules under the project's size limit; every figure comes from
the JSON that ``_real_vs_hf.compare`` wrote.
"""

from __future__ import annotations

import math
from typing import Any

VS_HF_MAX_TOKENS = 32  # the recorded setting (the default of --vs-hf)


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None or math.isnan(x) else format(x, fmt)


def render(v: dict[str, Any]) -> list[str]:
    """The Markdown section appended to ``real_teacher.md``."""
    s, r = v["settings"], v["ratios"]
    pipes = v.get("pipelines") or [v["pipeline"]]  # results written before pipeline batch sizes were tried
    b = v.get("best_of", {})

    def verdict(x: float) -> str:
        return f"**{x:.2f}x** ({'meets' if x >= v['target'] else 'misses'} >= {v['target']:.0f}x)"

    lines = [
        (f"## Pipeline vs batched Hugging Face `generate`, max_tokens {s['max_tokens']} (same model, prompts and "
         "sampling)"),
        "",
        (f"Command: `{v['command']}` (total {v['total_seconds']:.0f} s; load average {v['load_start_end'][0][0]:.1f} "
         f"at start, {v['load_start_end'][1][0]:.1f} at end, on {v['machine']['nproc']} shared cores). "
         f"{s['n']} teacher-forcing prompts (the pipeline's own, {s['prompt_tokens_mean']:.0f} tokens on average, "
         f"{v['checks']['prompts_equal_store_prompt_hash']} of {s['n']} equal to the store's prompt hashes), greedy, "
         f"max_tokens {s['max_tokens']}, stop strings {s['stop']!r} + EOS, {s['dtype']}, {s['threads']} thread(s) on "
         f"both sides; pipeline KV cache {s.get('kv_cache_space_gib', 1):g} GiB. Generated tokens counted on vLLM's "
         "terms on both sides (up to and including the EOS or the token that completes a stop string). The batch "
         "size is chosen per side the same way: each size tried, the best compared."),
        "",
        ("| setup | tokens | end-to-end s | end-to-end tok/s | busy tok/s | steady-state tok/s | CPU ms/token (busy) "
         "| CPU ms/token (steady) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pipes:
        lines.append(
            f"| pipeline (`run_generation`, vLLM actor), batches of {p.get('batch_size', s['pipeline_batch_size'])} "
            f"| {p['output_tokens']} | {p['e2e_seconds']:.1f} | {p['e2e_tok_s']:.1f} | {_f(p.get('busy_tok_s'))} "
            f"| {_f(p.get('steady_tok_s'))} | {_f(p.get('busy_cpu_ms_per_token'))} (all processes "
            f"{_f(p.get('busy_cpu_all_ms_per_token'))}) | {_f(p.get('steady_cpu_ms_per_token'))} |")
    for h in v["hf"]:
        lines.append(f"| HF `generate`, batch {h['batch_size']} | {h['output_tokens']} | {h['e2e_seconds']:.1f} "
                     f"| {h['e2e_tok_s']:.1f} | {_f(h.get('busy_tok_s'))} | {_f(h.get('steady_tok_s'))} "
                     f"| {_f(h.get('busy_cpu_ms_per_token'))} | {_f(h.get('steady_cpu_ms_per_token'))} |")
    lines.append("")
    if "busy_wall" in r:
        lines += [
            (f"- best pipeline (batches of {b['pipeline_busy']}) / best HF (batch {b['hf_busy']}), every batch by "
             f"wall clock (busy): {verdict(r['busy_wall'])}; by CPU time per token (load-robust; best pipeline "
             f"{b['pipeline_busy_cpu']}, best HF {b['hf_busy_cpu']}): engine process "
             f"{verdict(r['busy_cpu_engine_process'])}, every pipeline process (driver, Ray daemons, actor) "
             f"{verdict(r['busy_cpu_all_pipeline_processes'])}."),
        ]
    if r.get("steady_wall") is not None:
        lines.append(
        f"- steady state (runs of more than one batch; best pipeline batches of "
         f"{b.get('pipeline_steady', s['pipeline_batch_size'])}, best HF batch {v['hf_best_batch_size']}), by wall "
         f"clock: {verdict(r['steady_wall'])}; by CPU time per token (best HF batch by CPU "
         f"{v['hf_best_cpu_batch_size']}): engine process {verdict(r['steady_cpu_engine_process'])}, every pipeline "
         f"process {verdict(r['steady_cpu_all_pipeline_processes'])}.")
    lines += [
        (f"- end-to-end by wall clock: {r['e2e_wall']:.2f}x (best pipeline run, Ray already running; "
         f"{r['e2e_wall_with_ray_start']:.2f}x for the first pipeline run counting Ray's start, "
         f"{pipes[0]['ray_start_seconds']:.1f} s); the first batch reached the actor "
         + ", ".join(f"{p['first_call_start_seconds']:.1f} s" for p in pipes)
         + " into `run_generation` (vLLM engine start-up "
         + ", ".join(f"{p['engine_startup_seconds']:.1f} s" for p in pipes)
         + "); HF's end-to-end counts process launch, imports and model load."),
        ("- busy: every batch including the cold first one (pipeline: each actor call, i.e. the engine's row "
         "building and `LLM.generate`; HF: tokenizing and `generate`); steady state: from the end of the first "
         "batch to the end of the last (undefined with one batch). CPU ms/token: getrusage of the generating "
         "process over the same window (pipeline: the actor; 'all processes' adds the driver and Ray's daemons)."),
        (f"- where the time goes: a request is {s['prompt_tokens_mean']:.0f} prompt tokens and "
         f"{pipes[0]['output_tokens'] / s['n']:.1f} generated ones "
         f"({s['prompt_tokens_mean'] / (s['prompt_tokens_mean'] + pipes[0]['output_tokens'] / s['n']):.0%} of the "
         "tokens a forward pass sees are prompt tokens), so prefill is most of the work on both sides, done by "
         "the same kind of matrix products, and the ratio is far from decode-only speed-ups. Batched HF also "
         "computes work vLLM does not: "
         + "; ".join(f"batch {h['batch_size']}: prefill x{s.get('hf_prefill_padding', {}).get(str(h['batch_size']), float('nan')):.2f} "
                     f"(left padding to the longest prompt), decode x{sum(h['batch_padded_tokens']) / h['output_tokens']:.2f} "
                     f"(finished rows keep decoding until the batch's last stops)" for h in v["hf"])
         + ". vLLM packs prompts unpadded and frees a finished request's slot at once (continuous batching)."),
        (f"- same work: pipeline tokens {', '.join(str(p['output_tokens']) for p in pipes)} (statistics of the "
         f"first: {v['checks']['pipeline_stats_tokens']}); "
         + "; ".join(f"HF batch {h['batch_size']}: {h['output_tokens']} tokens, "
                     f"{h['requests_same_token_count_as_pipeline']} of {s['n']} requests with the first pipeline "
                     "run's count" for h in v["hf"]) + " (greedy in bf16: padding and batch shape change the "
         "rounding, so some requests diverge; rates use each side's own count)."),
        "",
    ]
    return lines


def vs_hf_key(max_tokens: int) -> str:
    """Where a comparison is kept in ``real_teacher.json``: ``vs_hf`` (the recorded setting) or one per max_tokens."""
    return "vs_hf" if max_tokens == VS_HF_MAX_TOKENS else f"vs_hf_max_tokens_{max_tokens}"


def vs_hf_section(res: dict[str, Any]) -> list[str]:
    """The comparisons' Markdown lines for ``real_teacher.md`` (none before one was run)."""
    keys = sorted((k for k in res if k.startswith("vs_hf") and res[k]), key=lambda k: (k != "vs_hf", k))
    return [line for k in keys for line in render(res[k])]

"""vLLM's CPU launch advice, measured: tcmalloc / Intel OpenMP preloaded or not.

Run:  .venv/bin/python benchmarks/vllm_preload.py [--quick]
Writes ``benchmarks/results/vllm_preload.json`` and ``.md`` and prints the Markdown.

vLLM's CPU build warns at every start that neither tcmalloc nor Intel OpenMP is
preloaded (the first advice of its CPU performance guide). This measures what that
advice is worth here, in the same run: plain ``vllm.LLM.generate`` (the teacher
benchmark's worker (a): same tiny Llama, the pipeline's own prompts and engine settings,
1 thread) in a fresh process per run, with ``LD_PRELOAD`` set to each variant, variants
interleaved round by round so machine load hits them alike. Reported per variant: engine
start-up seconds, steady-state tokens/s and CPU ms per token (medians over rounds), and
the ratio to the no-preload baseline of the same round.

Libraries: ``libtcmalloc_minimal.so.4`` (Debian ``libtcmalloc-minimal4``, installed by
``scripts/install.sh`` when it can) and ``libiomp5.so`` (the ``intel-openmp`` wheel that
comes with the CPU stack, in ``<venv>/lib``); a variant whose library is missing is
skipped and said so. ``tinyllm_ray.teachers.placement.cpu_preload_libs`` finds them the
same way for the teacher actors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import teacher_throughput as tt
from benchmarks._common import loadavg, log, machine_facts
from tinyllm_ray.teachers.placement import find_preload_libs

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vllm_preload.json"
QUICK = {"n": 128, "max_tokens": 32, "batch_size": 32, "rounds": 2, "hidden": 256, "layers": 4}
FULL = {"n": 512, "max_tokens": 64, "batch_size": 128, "rounds": 3, "hidden": 256, "layers": 4}


def variants() -> dict[str, str | None]:
    """Variant name -> LD_PRELOAD value (None: a library is missing, skipped)."""
    libs = find_preload_libs()
    tc, iomp = libs.get("tcmalloc"), libs.get("iomp")
    return {"none": "", "tcmalloc": tc, "iomp": iomp,
            "tcmalloc+iomp": f"{tc}:{iomp}" if tc and iomp else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (~3 minutes)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        setattr(args, k, v)
    t_all, load0 = time.perf_counter(), loadavg()
    inp = tt.build_inputs(args)
    workdir = Path(tempfile.mkdtemp(prefix="tinyllm-preload-bench-"))
    spec = {"model": inp["model"], "prompts": inp["prompts"][: args.n], "ids": inp["ids"][: args.n],
            "batch_size": args.batch_size, "engine_kwargs": inp["engine_kwargs"], "sampling": inp["sampling"],
            "workdir": str(workdir)}
    base_env = {**inp["vllm_env"], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    vs = variants()
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k, v in vs.items() if v is not None}
    for r in range(1, args.rounds + 1):
        for name, done in runs.items():
            env = tt.worker_env({**base_env, **({"LD_PRELOAD": vs[name]} if vs[name] else {})}, inp["vllm_unset"])
            res = tt.run_worker("vllm", spec, env, workdir)
            res.pop("token_ids", None)
            res["round"] = r
            done.append(res)
            log(f"round {r}: {name}: start-up {res['startup_seconds']:.1f}s, steady {res['steady_tok_s']:.0f} tok/s, "
                f"{1000 * res['steady_cpu_seconds'] / res['steady_tokens']:.3f} CPU ms/token")
    summary = {}
    for name, rs in runs.items():
        base = runs["none"]
        summary[name] = {
            "ld_preload": vs[name],
            "startup_seconds": statistics.median(x["startup_seconds"] for x in rs),
            "steady_tok_s": statistics.median(x["steady_tok_s"] for x in rs),
            "cpu_ms_per_token": statistics.median(1000 * x["steady_cpu_seconds"] / x["steady_tokens"] for x in rs),
            "steady_vs_none": statistics.median(x["steady_tok_s"] / b["steady_tok_s"] for x, b in zip(rs, base)),
            "cpu_vs_none": statistics.median((b["steady_cpu_seconds"] / b["steady_tokens"])
                                             / (x["steady_cpu_seconds"] / x["steady_tokens"]) for x, b in zip(rs, base)),
            "startup_vs_none": statistics.median(x["startup_seconds"] / b["startup_seconds"] for x, b in zip(rs, base)),
        }
    result = {"benchmark": "vllm_preload", "args": {k: getattr(args, k) for k in QUICK},
              "skipped": [k for k, v in vs.items() if v is None], "summary": summary, "runs": runs,
              "machine": machine_facts(["vllm", "torch"]), "load_start_end": [load0, loadavg()],
              "seconds": time.perf_counter() - t_all}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return result


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    lines = [
        "# vLLM CPU preloads (tcmalloc, Intel OpenMP)", "",
        (f"Plain `vllm.LLM.generate`, tiny Llama h{a['hidden']} L{a['layers']}, {a['n']} prompts x {a['max_tokens']} "
        f"tokens, batches of {a['batch_size']}, 1 thread, {a['rounds']} interleaved round(s); load "
        f"{r['load_start_end'][0]} -> {r['load_start_end'][1]}. Ratios: each round against its own no-preload run "
        "(median over rounds); > 1 is better (for start-up: < 1 is faster)."), "",
        "| LD_PRELOAD | start-up s | steady tok/s | CPU ms/token | steady vs none | CPU/token vs none | start-up vs none |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in r["summary"].items():
        lines.append(f"| {name} | {s['startup_seconds']:.1f} | {s['steady_tok_s']:.0f} | {s['cpu_ms_per_token']:.3f} | "
                     f"{s['steady_vs_none']:.3f} | {s['cpu_vs_none']:.3f} | {s['startup_vs_none']:.3f} |")
    if r["skipped"]:
        lines += ["", f"Skipped (library not found): {', '.join(r['skipped'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

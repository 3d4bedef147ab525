"""Driver and object-store memory against the number of prompts (issue 11, item 3).

What it measures: ``tinyllm-ray generate`` run as the user runs it (the CLI in a fresh
process, a fresh store each time) on the demo's two tiny teachers at growing prompt
counts. The driver's RSS is sampled from outside with psutil every 0.2 s (peak and end);
the object store's usage is sampled inside the driver (``TINYLLM_MEMORY_PROBE``, see
``tinyllm_ray/memory_probe.py``: a second process would have to join the job's Ray to
ask the raylets). The slope between sizes (KB per prompt) is the figure that matters:
flat means memory does not grow with the prompt count.

The input data itself (the split as a list of ``MCQRecord``, loaded by ``data/loader.py``)
is measured separately in this process (``input_data_mb``): it is the dataset, not state
the pipeline keeps per prompt.

``--slow-trainer``: ``tinyllm-ray run`` (streaming) with a student whose steps are slower
than the teachers' shards, sampled the same way: the store on disk is the buffer between
them, so neither the driver nor the object store may grow while the trainer lags.

Where a growth comes from: each row's ``generation_growth_mb`` splits the driver's growth
during generation into anonymous RSS, object-store pages, glibc's heap in use and free but
kept, Arrow's pool and (``--tracemalloc``) the traced Python heap, whose top lines go to
``results/<out>_tracemalloc_<label>_<prompts>.txt``; ``--env MALLOC_ARENA_MAX=2`` or
``--env TINYLLM_MALLOC_TRIM_S=20`` test the allocator (``results/load_diag.md``).

    flock /tmp/tinyllm-ray.lock timeout 1500 python benchmarks/load.py --label after
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import QUIET_OFFLINE_ENV, REPO, loadavg, log, machine_facts

RESULTS = REPO / "benchmarks" / "results"
MB = 1024 * 1024
#: The checkout whose ``tinyllm_ray`` the measured CLI runs (``--code``: an older commit's worktree, for a before/after).
CODE = {"root": REPO}

#: (key in the results, field, title) of the slopes reported between consecutive sizes.
SLOPES = (("slope_driver_peak", "driver_rss_peak_mb", "driver RSS peak"),
          ("slope_driver_generation_peak", "driver_rss_generation_peak_mb", "driver RSS peak after loading"),
          ("slope_driver_end", "driver_rss_end_mb", "driver RSS end"),
          ("slope_store_peak", "store_used_peak_mb", "object store peak"))

#: (prompts, max_tokens) of the default run: real generation, then one token per prompt.
DEFAULT_SIZES = ((1000, 16), (5000, 16), (20000, 16), (100000, 1))


def teacher(name: str, model: str, max_tokens: int, batch: int, rounds: int | None = None) -> dict[str, Any]:
    """One of the demo's teachers (``configs/demo_cpu.yaml``), with the benchmark's token budget.

    ``rounds``: ``batches_per_round`` (None: the config's default); below the run's batch
    count it shows the object store bounded by the rounds (Ray Data's read tasks per execution).
    """
    return {"name": name, "model": model, "dtype": "float32", "max_model_len": 1024, "kv_cache_space_gib": 1,
            "replicas": 1, "num_cpus": 1, "batch_size": batch,
            **({"batches_per_round": rounds} if rounds else {}),
            "sampling": {"temperature": 0.0, "max_tokens": max_tokens, "seed": 0}}


def job_config(work: Path, prompts: int, max_tokens: int, *, shard: int, batch: int,
               rounds: int | None = None) -> dict[str, Any]:
    """The demo's teachers and prompts (2 in-context examples) on ``prompts`` synthetic questions."""
    return {
        "data": {"name": "synthetic", "synthetic": {"train": prompts, "validation": 32, "test": 32}, "seed": 0},
        "teachers": [teacher("llama", "tiny:llama", max_tokens, batch, rounds),
                     teacher("qwen", "tiny:qwen2", max_tokens, batch, rounds)],
        "prompts": {"icl_k": 2, "icl_strategy": "random", "seed": 0},
        "filter": {"drop_empty": False, "drop_unparsable": False},
        "runtime": {"num_cpus": 16, "storage_path": str(work / "runs"), "run_name": "load",
                    "store_uri": str(work / "store"), "store_shard_size": shard},
    }


class RssSampler:
    """Peak and last RSS of one process, sampled every ``period`` s in a thread."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
                if rss == 0:  # a zombie (exited, not yet reaped) reports 0: not a measurement
                    return
                self.samples.append((time.time(), rss))
            except Exception:  # noqa: BLE001 - the process ended
                return
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def summarize(rss: list[tuple[float, int]], probe: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak/end driver RSS (MB) and peak/end object store usage (MB) of one child run."""
    store = [p for p in probe if "store_used" in p]
    # memory_probe.mark("generation"): the split is loaded and spilled; peaks before/after it
    gen_t = next((p["t"] for p in probe if p.get("phase") == "generation"), None)
    load = [r for t, r in rss if gen_t is not None and t < gen_t]
    gen = [r for t, r in rss if gen_t is not None and t >= gen_t]
    return {
        "driver_rss_peak_mb": round(max(r for _, r in rss) / MB, 1) if rss else None,
        "driver_rss_load_peak_mb": round(max(load) / MB, 1) if load else None,
        "driver_rss_generation_peak_mb": round(max(gen) / MB, 1) if gen else None,
        "driver_rss_end_mb": round(rss[-1][1] / MB, 1) if rss else None,
        "store_used_peak_mb": round(max(p["store_used"] for p in store) / MB, 2) if store else None,
        "store_used_end_mb": round(store[-1]["store_used"] / MB, 2) if store else None,
        "store_objects_peak": max(p["store_objects"] for p in store) if store else None,
        "spilled_mb": round(max(p["spilled"] for p in store) / MB, 2) if store else None,
        "probe_samples": len(store),
        "generation_growth_mb": generation_growth(probe, gen_t,
                                                  next((p["t"] for p in probe if p.get("phase") == "generated"), None)),
    }


#: Probe fields whose change during generation says where the driver's growth is (``memory_probe.py``).
GROWTH_FIELDS = ("rss", "rss_anon", "rss_shmem", "malloc_used", "malloc_free", "arrow", "traced")
#: Seconds after loading ends before the growth's start: engines started, first batches in flight.
GROWTH_FROM_S = 40.0


def generation_growth(probe: list[dict[str, Any]], gen_t: float | None,
                      end_t: float | None) -> dict[str, float] | None:
    """Change (MB) of each :data:`GROWTH_FIELDS` from :data:`GROWTH_FROM_S` s into generation to its
    end (``memory_probe.mark("generated")``: every shard written, before statistics and shutdown):
    RSS split into anonymous and shared (the object store's pages), glibc's heap in use and
    free-but-kept, Arrow's pool, the traced Python heap."""
    if gen_t is None or end_t is None:
        return None
    rows = [p for p in probe if "store_used" in p and gen_t + GROWTH_FROM_S <= p["t"] <= end_t]
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return {k: round((b[k] - a[k]) / MB, 1) for k in GROWTH_FIELDS if k in a and k in b}


def run_cli(command: str, cfg: dict[str, Any], work: Path, timeout: float,
            extra_env: dict[str, str] | None = None, keep_probe: Path | None = None) -> dict[str, Any]:
    """``tinyllm-ray <command> --config <cfg>`` in a fresh process; RSS and store sampled throughout.

    ``extra_env``: more of the driver's environment (e.g. ``TINYLLM_TRACEMALLOC``, ``MALLOC_ARENA_MAX``);
    ``keep_probe``: where to copy the probe's samples (JSON lines) before the work folder goes.
    """
    cfg_path = work / "config.json"  # JSON is YAML
    cfg_path.write_text(json.dumps(cfg))
    probe_path = work / "probe.jsonl"
    env = {**os.environ, **QUIET_OFFLINE_ENV, "PYTHONPATH": str(CODE["root"]), "TINYLLM_MEMORY_PROBE": str(probe_path),
           "TINYLLM_MEMORY_PROBE_S": "0.5", **(extra_env or {})}
    cmd = [sys.executable, "-m", "tinyllm_ray.cli", command, "--config", str(cfg_path)]
    t0 = time.perf_counter()
    with open(work / "cli.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = RssSampler(proc.pid)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        sampler.stop()
    wall = time.perf_counter() - t0
    probe = [json.loads(line) for line in probe_path.read_text().splitlines()] if probe_path.exists() else []
    if keep_probe is not None and probe_path.exists():
        keep_probe.write_text(probe_path.read_text())
    res = {"rc": rc, "wall_s": round(wall, 1), **summarize(sampler.samples, probe)}
    if rc != 0:
        res["tail"] = (work / "cli.out").read_text()[-2000:]
    res["timeline"] = [(round(t - sampler.samples[0][0], 1), round(r / MB, 1)) for t, r in sampler.samples[::25]]
    res["store_timeline"] = [(round(p["t"] - probe[0]["t"], 1), round(p["store_used"] / MB, 2))
                             for p in probe[::10] if "store_used" in p]
    return res


def input_data_mb(prompts: int) -> float:
    """Heap the loaded split itself takes (the dataset, not pipeline state), measured by tracemalloc."""
    import tracemalloc

    from tinyllm_ray.config import validate_config
    from tinyllm_ray.data.loader import load_splits

    cfg = validate_config({"data": {"name": "synthetic", "synthetic": {"train": prompts, "validation": 32,
                                                                       "test": 32}, "seed": 0}})
    tracemalloc.start()
    loaded = load_splits(cfg.data)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del loaded
    return round(size / MB, 1)


def slopes(rows: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """KB per prompt of ``field`` between consecutive sizes.

    Between a 16-token and a 1-token run too: what the driver keeps is per prompt or per
    shard (outputs are parsed and written shard by shard), not per generated token.
    """
    out = []
    for a, b in itertools.pairwise(rows):
        if a.get(field) is None or b.get(field) is None or a["prompts"] == b["prompts"]:
            continue
        out.append({"from": a["prompts"], "to": b["prompts"], "tokens": [a["max_tokens"], b["max_tokens"]],
                    "kb_per_prompt": round((b[field] - a[field]) * 1024 / (b["prompts"] - a["prompts"]), 3)})
    return out


def sizes(text: str) -> list[tuple[int, int]]:
    """``--sizes`` / ``--run-sizes``: comma-separated ``prompts:max_tokens`` (empty: none)."""
    return [(int(n), int(t)) for n, t in (spec.split(":") for spec in text.split(",") if spec)]


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=CODE["root"], capture_output=True,
                          text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after", help="key of this run in the results (e.g. before, after)")
    ap.add_argument("--sizes", default=",".join(f"{n}:{t}" for n, t in DEFAULT_SIZES),
                    help="comma-separated prompts:max_tokens")
    ap.add_argument("--shard", type=int, default=256, help="runtime.store_shard_size")
    ap.add_argument("--batch", type=int, default=128, help="teachers' batch_size")
    ap.add_argument("--batches-per-round", type=int, default=None,
                    help="teachers' batches_per_round (default: the config's); one Ray Data execution per round")
    ap.add_argument("--slow-trainer", action="store_true", help="also run `run` with a trainer slower than the teachers")
    ap.add_argument("--slow-prompts", type=int, default=3000)
    ap.add_argument("--slow-steps", type=int, default=300)
    ap.add_argument("--run-sizes", default="",
                    help="comma-separated prompts:max_tokens for `tinyllm-ray run` (streaming generation into the "
                         "default tiny student, --run-steps steps): the driver's memory with a student reading the split")
    ap.add_argument("--run-steps", type=int, default=20)
    ap.add_argument("--code", default=None, metavar="PATH",
                    help="run the CLI of this tinyllm-ray checkout (e.g. a worktree of an older commit), not this one's")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default="load")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="run the driver under tracemalloc; its top growth by line goes to "
                         "results/<out>_tracemalloc_<label>_<prompts>.txt (slows the driver: memory only)")
    ap.add_argument("--keep-probe", action="store_true",
                    help="copy each run's probe samples to results/<out>_probe_<label>_<prompts>.jsonl")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the driver's environment (e.g. MALLOC_ARENA_MAX=2); repeatable")
    args = ap.parse_args()
    if args.code:
        CODE["root"] = Path(args.code).resolve()
    extra_env = dict(kv.split("=", 1) for kv in args.env)

    t_start = time.perf_counter()
    load0 = loadavg()
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "command": "flock /tmp/tinyllm-ray.lock timeout 1500 python benchmarks/load.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(), "machine": machine_facts(), "shard_size": args.shard, "batch_size": args.batch,
        "batches_per_round": args.batches_per_round, "driver_env": extra_env, "tracemalloc": args.tracemalloc,
        "generate": rows,
    }
    for n, tokens in sizes(args.sizes):
        with tempfile.TemporaryDirectory(prefix="tinyllm-load-") as tmp:
            work = Path(tmp)
            log(f"generate: {n} prompts, {tokens} new tokens")
            env = dict(extra_env)
            if args.tracemalloc:
                env["TINYLLM_TRACEMALLOC"] = str(RESULTS / f"{args.out}_tracemalloc_{args.label}_{n}.txt")
            res = run_cli("generate", job_config(work, n, tokens, shard=args.shard, batch=args.batch,
                                                 rounds=args.batches_per_round), work, args.timeout, env,
                          RESULTS / f"{args.out}_probe_{args.label}_{n}.jsonl" if args.keep_probe else None)
        res.update(prompts=n, max_tokens=tokens, input_data_mb=input_data_mb(n))
        log(f"  -> rc {res['rc']} {res['wall_s']} s, driver peak {res['driver_rss_peak_mb']} MB (load "
            f"{res['driver_rss_load_peak_mb']}, after loading {res['driver_rss_generation_peak_mb']}, end "
            f"{res['driver_rss_end_mb']}), store peak {res['store_used_peak_mb']} MB")
        rows.append(res)
        result["total_s"] = round(time.perf_counter() - t_start, 1)
        result["load_start_end"] = [load0, loadavg()]
        write(result, args.label, args.out)  # after each size: a long run that is stopped keeps what it measured
    if args.run_sizes:
        result["run"] = []
        for n, tokens in sizes(args.run_sizes):
            result["run"].append(run_size(args, n, tokens))
            result["total_s"] = round(time.perf_counter() - t_start, 1)
            result["load_start_end"] = [load0, loadavg()]
            write(result, args.label, args.out)
    if args.slow_trainer:
        result["slow_trainer"] = slow_trainer(args)
    result["load_start_end"] = [load0, loadavg()]
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    write(result, args.label, args.out)
    return 0


def slow_trainer_config(base: dict[str, Any], steps: int) -> dict[str, Any]:
    """``base`` plus the demo's student made slower than the teachers (a wider T5, batches of 32).

    The teachers commit a slice every few seconds; each student step takes longer than that,
    so committed slices pile up in the store (on disk) while the trainer lags behind.
    """
    return {**base,
            "student": {"model": "tiny", "tiny": {"family": "t5", "hidden_size": 256, "num_layers": 4, "num_heads": 4},
                        "max_input_length": 256, "max_target_length": 48},
            "loss": {"form": "additive", "alpha": {"llama": 0.5, "qwen": 0.5}},
            "train": {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 2, "precision": "fp32",
                      "micro_batch_size": 32, "lr": 0.001, "scheduler": "constant", "max_steps": steps,
                      "eval_every_steps": steps, "checkpoint_every_steps": steps},
            "eval": {"split": "test", "max_new_tokens": 12}}


def run_size(args: argparse.Namespace, prompts: int, tokens: int) -> dict[str, Any]:
    """``tinyllm-ray run`` on ``prompts`` prompts: generation streamed into a short student run, sampled like ``generate``.

    Why: ``run``'s driver also feeds the student's slice readers the train split; it must
    not hold it (``data/split_server.py``) any more than ``generate`` holds the prompts.
    """
    steps = args.run_steps
    with tempfile.TemporaryDirectory(prefix="tinyllm-load-run-") as tmp:
        work = Path(tmp)
        log(f"run: {prompts} prompts, {tokens} new tokens, {steps} student steps")
        cfg = {**job_config(work, prompts, tokens, shard=args.shard, batch=args.batch, rounds=args.batches_per_round),
               "loss": {"form": "additive", "alpha": {"llama": 0.5, "qwen": 0.5}},
               "train": {"num_workers": 1, "cpus_per_worker": 1, "micro_batch_size": 16, "max_steps": steps,
                         "eval_every_steps": steps, "checkpoint_every_steps": steps, "eval_limit": 32},
               "eval": {"split": "test", "max_new_tokens": 12}}
        res = run_cli("run", cfg, work, args.timeout)
    res.update(prompts=prompts, max_tokens=tokens, steps=steps)
    log(f"  -> rc {res['rc']} {res['wall_s']} s, driver peak {res['driver_rss_peak_mb']} MB, "
        f"store peak {res['store_used_peak_mb']} MB")
    return res


def slow_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """``tinyllm-ray run`` (streaming) with a trainer slower than the teachers, sampled like ``generate``."""
    with tempfile.TemporaryDirectory(prefix="tinyllm-load-run-") as tmp:
        work = Path(tmp)
        log(f"run (slow trainer): {args.slow_prompts} prompts, {args.slow_steps} steps")
        cfg = slow_trainer_config(job_config(work, args.slow_prompts, 16, shard=args.shard, batch=args.batch,
                                             rounds=args.batches_per_round), args.slow_steps)
        res = run_cli("run", cfg, work, args.timeout)
        report = work / "runs" / "load" / "report.json"
        if report.exists():
            res["overlap"] = json.loads(report.read_text()).get("overlap")
    res.update(prompts=args.slow_prompts, steps=args.slow_steps)
    log(f"  -> rc {res['rc']} {res['wall_s']} s, driver peak {res['driver_rss_peak_mb']} MB, "
        f"store peak {res['store_used_peak_mb']} MB")
    return res


def write(result: dict[str, Any], label: str, out: str) -> None:
    """Merge this run under ``label`` into ``results/<out>.json`` and rewrite the Markdown table."""
    path = RESULTS / f"{out}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[label] = result
    lines = ["# Driver and object-store memory vs prompt count", ""]
    for lab, r in data.items():
        head = (f"Command: `{r['command']}` ({r['total_s']} s; load {r['load_start_end'][0][0]} -> "
                f"{r['load_start_end'][1][0]}). Two tiny teachers (tiny:llama, tiny:qwen2), 2 in-context examples, "
                f"shard {r['shard_size']}, batch {r['batch_size']}"
                + (f", batches_per_round {r['batches_per_round']}" if r.get("batches_per_round") else "")
                + "".join(f", {k}={v}" for k, v in (r.get("driver_env") or {}).items())
                + (", driver under tracemalloc" if r.get("tracemalloc") else "") + ".")
        cols = ("| prompts | new tokens | rc | wall s | driver RSS peak MB | while loading MB | after loading MB "
                "| driver RSS end MB | object store peak MB | store objects peak | input data MB |")
        lines += [f"## {lab} (commit {r['commit']})", "", head, "", *([r["note"], ""] if r.get("note") else []), cols,
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for g in r["generate"]:
            lines.append(f"| {g['prompts']:,} | {g['max_tokens']} | {g['rc']} | {g['wall_s']} | "
                         f"{g['driver_rss_peak_mb']} | {g.get('driver_rss_load_peak_mb', '-')} | "
                         f"{g.get('driver_rss_generation_peak_mb', '-')} | "
                         f"{g['driver_rss_end_mb']} | {g['store_used_peak_mb']} | "
                         f"{g['store_objects_peak']} | {g['input_data_mb']} |")
        growth = [(g["prompts"], g["generation_growth_mb"]) for g in r["generate"] if g.get("generation_growth_mb")]
        if growth:
            lines += ["", (f"Driver growth during generation ({GROWTH_FROM_S:.0f} s after loading -> every shard written, MB; "
                      "rss_shmem: object-store pages the driver touched, malloc_used/free: glibc heap in use / "
                      "free but kept, traced: Python heap under tracemalloc):"), ""]
            lines += [f"- {n:,} prompts: " + ", ".join(f"{k} {v:+}" for k, v in gr.items()) for n, gr in growth]
        lines.append("")
        for key, field, title in SLOPES:
            r[key] = slopes(r["generate"], field)
            parts = [f"{s['from']:,}->{s['to']:,}: {s['kb_per_prompt']} KB/prompt" for s in r[key]]
            lines.append(f"- slope of {title}: " + ("; ".join(parts) or "-"))
        if r.get("run"):
            lines += ["", "`tinyllm-ray run` (generation streamed into the default tiny student):", "",
                      ("| prompts | new tokens | student steps | rc | wall s | driver RSS peak MB "
                       "| driver RSS end MB | object store peak MB |"), "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {g['prompts']:,} | {g['max_tokens']} | {g['steps']} | {g['rc']} | {g['wall_s']} | "
                      f"{g['driver_rss_peak_mb']} | {g['driver_rss_end_mb']} | "
                      f"{g['store_used_peak_mb']} |" for g in r["run"]]
            parts = [f"{x['from']:,}->{x['to']:,}: {x['kb_per_prompt']} KB/prompt"
                     for x in slopes(r["run"], "driver_rss_peak_mb")]
            lines.append("\n- slope of `run`'s driver RSS peak: " + ("; ".join(parts) or "-"))
        if "slow_trainer" in r:
            s = r["slow_trainer"]
            ov = s.get("overlap") or {}
            text = (f"Slow trainer (`run`, {s['prompts']:,} prompts, {s['steps']} student steps): rc {s['rc']}, "
                    f"{s['wall_s']} s (generation ended at {ov.get('generation_ended_s')} s, first step at "
                    f"{ov.get('first_train_step_s')} s), driver RSS peak {s['driver_rss_peak_mb']} MB (end "
                    f"{s['driver_rss_end_mb']}), object store peak {s['store_used_peak_mb']} MB. Driver RSS "
                    f"(s, MB): {s['timeline']}; object store (s, MB): {s['store_timeline']}")
            lines += ["", text]
        lines.append("")
    path.write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / f"{out}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())

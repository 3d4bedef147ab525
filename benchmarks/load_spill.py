"""Driver memory of loading + spilling the generation split, whole-list vs streamed (issue 11, item 3).

What it measures, without Ray or engines: the peak RSS of a fresh process that loads a
``synthetic`` or ``arithmetic`` split of N prompts, or (``--task jsonl``) a JSON Lines train
file of N rows written beforehand (with small validation and test files, so nothing is
carved: ``data.name: tinyllm``), and spills it (and the train pool) to the local Arrow file
the generation phase reads, the way ``generate`` does it:

* ``list``: ``split_file.spill_splits(load_splits(cfg.data), split)`` (every split built
  as a ``list[MCQRecord]`` first, what ``generate`` did before);
* ``stream``: ``split_file.load_and_spill(cfg.data, split)`` (``data.loader.iter_split``:
  the split goes from its generator, or the file row by row, to the Arrow file in batches).

Each (path, size) runs in its own process; the figure is ``ru_maxrss`` after the spill
minus ``ru_maxrss`` after the imports (same process, same run): what loading adds.

    python benchmarks/load_spill.py [--sizes 1000,10000,100000,1000000] [--task synthetic|arithmetic|jsonl]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, loadavg, log, machine_facts

RESULTS = REPO / "benchmarks" / "results"


def write_jsonl_task(folder: Path, n: int) -> None:
    """``train.jsonl`` of ``n`` distinct TinyLLM-layout rows, and 32-row ``valid.jsonl`` / ``test.jsonl``."""
    for name, start, rows in (("train", 0, n), ("valid", n, 32), ("test", n + 32, 32)):
        with (folder / f"{name}.jsonl").open("w") as fh:
            for i in range(start, start + rows):
                choices = [str(i + 1), str(i + 2), str(i + 3), str(i + 4)]
                fh.write(json.dumps({"id": f"q{i}", "question": f"Which number comes right after {i}?",
                                     "choices": choices, "answer": choices[0]}) + "\n")


def child(path: str, task: str, n: int, folder: str = "") -> dict[str, float]:
    """One measurement in this (fresh) process: MB that load + spill add to the peak RSS."""
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.data.split_file import load_and_spill, spill_splits

    if task == "jsonl":
        cfg = DataConfig(name="tinyllm", files={s: f"{folder}/{f}.jsonl" for s, f in
                                                (("train", "train"), ("validation", "valid"), ("test", "test"))})
    else:
        cfg = DataConfig(name=task, seed=0, **{task: {"train": n, "validation": 32, "test": 32}})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    records, _pool = spill_splits(load_splits(cfg), "train") if path == "list" else load_and_spill(cfg, "train")
    seconds = time.perf_counter() - t0
    assert len(records) == n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"base_mb": round(base, 1), "peak_mb": round(peak, 1), "added_mb": round(peak - base, 1),
            "seconds": round(seconds, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--task", default="synthetic", choices=["synthetic", "arithmetic", "jsonl"])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.child[3])))
        return 0
    load0 = loadavg()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        row: dict[str, object] = {"prompts": n}
        with tempfile.TemporaryDirectory(prefix="load-spill-") as folder:
            if args.task == "jsonl":
                write_jsonl_task(Path(folder), n)
                row["file_mb"] = round((Path(folder) / "train.jsonl").stat().st_size / 2**20, 1)
            for path in ("list", "stream"):
                out = subprocess.run([sys.executable, __file__, "--child", path, args.task, str(n), folder],
                                     check=True, capture_output=True, text=True, cwd=REPO).stdout
                row[path] = json.loads(out.strip().splitlines()[-1])
                log(f"{args.task} {n}: {path} {row[path]}")
        rows.append(row)
    result = {"command": "python benchmarks/load_spill.py " + " ".join(sys.argv[1:]), "task": args.task,
              "machine": machine_facts(), "load_start_end": [load0, loadavg()], "rows": rows}
    out = RESULTS / f"load_spill_{args.task}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    what = "a JSON Lines train file (data.name: tinyllm)" if args.task == "jsonl" else args.task
    lines = [f"# Load + spill of the generation split: whole list vs streamed ({what})", "",
             (f"Command: `{result['command']}` (load {load0[0]} -> {loadavg()[0]}). MB added to the peak RSS "
              "of a fresh process by loading and spilling (seconds in brackets)."), "",
             "| prompts | list MB | streamed MB | streamed / list |", "|---:|---:|---:|---:|"]
    for r in rows:
        a, b = r["list"], r["stream"]
        lines.append(f"| {r['prompts']:,} | {a['added_mb']} ({a['seconds']} s) | {b['added_mb']} ({b['seconds']} s) "
                     f"| {b['added_mb'] / a['added_mb']:.2f} |" if a["added_mb"] else "| - |")
    if args.task == "jsonl":
        lines += ["", "Train file sizes: " + ", ".join(f"{r['prompts']:,} rows {r['file_mb']} MB" for r in rows)
                  + ". Streamed: the train file is read row by row (a first pass for its columns, then the "
                  "records); validation and test (32 rows each) are loaded whole."]
    (RESULTS / f"load_spill_{args.task}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

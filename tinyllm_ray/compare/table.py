"""The comparison table: per-seed results -> mean ± sd per setting and difficulty (pure).

Why pure and separate from the runner: what the table claims must follow from the numbers
alone, and be testable without Ray. Inputs are plain dicts (what each trial writes to its
JSON file, and the teachers' cached rows); the outputs are the JSON document, its Markdown
rendering and a PNG.

A setting's result (from the runner)::

    {"setting": str, "description": str, "group": str, "teachers": [str], "status": "ok" | "failed",
     "error": str | None,
     "seeds": [{"seed": int, "accuracy": float, "correct": int, "total": int,
                "by_difficulty": {difficulty: [correct, total]}, ...timings...}]}

A teacher row::

    {"teacher": str, "model": str, "accuracy": float, "correct": int, "total": int,
     "by_difficulty": {difficulty: [correct, total]}} (or "status": "failed", "error": str)

Claims (the papers' own questions) are answered in words computed from the means
("higher" / "not higher", "lower" / "not lower"); a difference not larger than the larger
of the two standard deviations, or with a single seed, is flagged as not conclusive. No
outcome is ever written in advance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "aggregate",
    "claims",
    "contributions",
    "mean_sd",
    "plot_table",
    "render_markdown",
]

SCHEMA_VERSION = 1


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    vals = [float(v) for v in values]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) >= 2 else None)


def _sort_difficulties(keys: Any) -> list[str]:
    def key(k: str) -> tuple[int, Any]:
        return (0, int(k)) if str(k).lstrip("-").isdigit() else (1, str(k))
    return sorted({str(k) for k in keys}, key=key)


def _setting_summary(res: Mapping[str, Any]) -> dict[str, Any]:
    seeds = [s for s in res.get("seeds") or [] if s.get("accuracy") is not None]
    mean, sd = mean_sd([s["accuracy"] for s in seeds])
    diffs = _sort_difficulties(k for s in seeds for k in (s.get("by_difficulty") or {}))
    per_diff = {}
    for d in diffs:
        accs = [c / t for s in seeds for c, t in [(s.get("by_difficulty") or {}).get(d, (0, 0))] if t]
        m, v = mean_sd(accs)
        per_diff[d] = {"mean": m, "sd": v, "n": len(accs)}
    status = res.get("status", "ok")
    if status == "ok" and not seeds:
        status = "failed"
    return {
        "setting": res["setting"], "description": res.get("description", ""), "group": res.get("group", ""),
        "teachers": list(res.get("teachers") or []), "status": status, "error": res.get("error"),
        "n_seeds": len(seeds), "mean": mean, "sd": sd, "by_difficulty": per_diff,
        "seeds": list(res.get("seeds") or []),
    }


def _teacher_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    by = {str(d): {"mean": (c / t if t else None), "sd": None, "n": 1}
          for d, (c, t) in (row.get("by_difficulty") or {}).items()}
    ok = row.get("status", "ok") == "ok" and row.get("accuracy") is not None
    return {"teacher": row["teacher"], "model": row.get("model", ""), "status": "ok" if ok else "failed",
            "error": row.get("error"), "mean": row.get("accuracy") if ok else None, "sd": None,
            "total": row.get("total"), "by_difficulty": by, "prompt": row.get("prompt", "answer")}


#: Settings trained with TinyLLM's additive loss, so "all teachers minus one" may be any of them.
_SAME_LOSS_GROUPS = ("leave_one_out", "dss", "label_only")


def contributions(settings: Sequence[Mapping[str, Any]], all_name: str = "tinyllm") -> list[dict[str, Any]]:
    """Each teacher's contribution: all teachers minus leave-that-one-out (mean accuracy).

    "Without t" is the setting whose teachers are exactly TinyLLM's minus t: ``loo_t`` with
    three or more teachers, the other teacher's ``dss`` with two, ``label_only`` with one
    (all use the same additive loss)."""
    by = {s["setting"]: s for s in settings}
    full = by.get(all_name)
    if not full:
        return []
    out = []
    for t in full.get("teachers") or []:
        rest = set(full["teachers"]) - {t}
        without = next((s for s in settings if s.get("group") in _SAME_LOSS_GROUPS
                        and set(s.get("teachers") or []) == rest), None)
        if without is None:
            continue
        delta = None
        if full.get("mean") is not None and without.get("mean") is not None:
            delta = full["mean"] - without["mean"]
        out.append({"teacher": t, "all": full.get("mean"), "without_setting": without["setting"],
                    "without": without.get("mean"), "contribution": delta})
    return out


def _fmt(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def _compare(a_name: str, a: Mapping[str, Any] | None, b_name: str, b: Mapping[str, Any] | None,
             word: str = "higher") -> dict[str, Any] | None:
    """One claim: is ``a`` ``word`` (higher / lower) than ``b``? Computed from the means."""
    if a is None or b is None:
        return None
    am, bm = a.get("mean"), b.get("mean")
    if am is None or bm is None:
        text = f"{a_name} {_fmt(am, a.get('sd'))} vs {b_name} {_fmt(bm, b.get('sd'))}: not measured"
        return {"a": a_name, "b": b_name, "answer": None, "conclusive": False, "text": text}
    yes = am > bm if word == "higher" else am < bm
    sds = [x for x in (a.get("sd"), b.get("sd")) if x is not None]
    conclusive = bool(sds) and abs(am - bm) > max(sds)  # one seed on both sides: no spread to judge by
    verdict = word if yes else f"not {word}"
    note = "" if conclusive else " (difference within the seeds' spread or one seed: not conclusive)"
    text = f"{a_name} {_fmt(am, a.get('sd'))} vs {b_name} {_fmt(bm, b.get('sd'))}: {verdict}{note}"
    return {"a": a_name, "b": b_name, "answer": bool(yes), "conclusive": conclusive, "difference": am - bm,
            "text": text}


def claims(settings: Sequence[Mapping[str, Any]], teachers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The papers' claims, each answered from the numbers (see the module docstring)."""
    by = {s["setting"]: s for s in settings}
    out: list[dict[str, Any]] = []

    def add(question: str, c: dict[str, Any] | None) -> None:
        if c is not None:
            out.append({"question": question, **c})

    tiny = by.get("tinyllm")
    add("TinyLLM: does the multi-teacher student beat label-only fine-tuning?",
        _compare("TinyLLM (all teachers)", tiny, "label-only", by.get("label_only")))
    for s in settings:
        if s.get("group") == "dss":
            add(f"TinyLLM: does it beat the single-teacher student ({s['setting']})?",
                _compare("TinyLLM (all teachers)", tiny, s["setting"], s))
    for t in teachers:
        add(f"TinyLLM: does the student beat teacher {t['teacher']} itself?",
            _compare("TinyLLM (all teachers)", tiny, f"teacher {t['teacher']}", dict(t, teacher=True)))
    add("Mind's Mirror: do several CoTs beat one?",
        _compare("several CoTs (mm_cots)", by.get("mm_cots"), "one CoT (mm_1cot)", by.get("mm_1cot")))
    add("Mind's Mirror: does self-evaluation add to several CoTs?",
        _compare("CoTs + self-evaluation (mm_cots_selfeval)", by.get("mm_cots_selfeval"),
                 "CoTs (mm_cots)", by.get("mm_cots")))
    for s in settings:
        if s.get("group") == "prefix":
            other = s["setting"].rsplit("_", 1)[-1]
            this = "decoder" if other == "encoder" else "encoder"
            add(f"Layout: does the {this}-side task prefix cost accuracy against the {other} side?",
                _compare(f"TinyLLM, {this} side", tiny, f"{other} side ({s['setting']})", s, word="lower"))
    return out


def aggregate(results: Sequence[Mapping[str, Any]], teacher_rows: Sequence[Mapping[str, Any]],
              meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The comparison document (what compare.json holds)."""
    settings = [_setting_summary(r) for r in results]
    teachers = [_teacher_summary(r) for r in teacher_rows]
    diffs = _sort_difficulties([d for s in settings for d in s["by_difficulty"]]
                               + [d for t in teachers for d in t["by_difficulty"]])
    return {
        "schema_version": SCHEMA_VERSION, "meta": dict(meta or {}), "difficulties": diffs,
        "settings": settings, "teachers": teachers, "contributions": contributions(settings),
        "claims": claims(settings, teachers),
    }


def render_markdown(doc: Mapping[str, Any]) -> str:
    """compare.md: the table (settings, then the teachers' own rows), contributions, claims."""
    meta = doc.get("meta") or {}
    diffs = list(doc.get("difficulties") or [])
    lines = ["# tinyllm-ray compare", ""]
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))), ""]
    head = ["setting", "teachers", "test accuracy (mean ± sd)", "seeds",
            *[f"difficulty {d}" for d in diffs], "status"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in doc["settings"]:
        cells = [f"{s['setting']}: {s['description']}", ", ".join(s["teachers"]) or "-", _fmt(s["mean"], s["sd"]),
                 str(s["n_seeds"]),
                 *[_fmt(s["by_difficulty"].get(d, {}).get("mean"), s["by_difficulty"].get(d, {}).get("sd"))
                   for d in diffs],
                 s["status"] if s["status"] == "ok" else f"failed: {str(s.get('error') or '')[:120]}"]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    for t in doc["teachers"]:
        cells = [f"teacher {t['teacher']} ({t.get('prompt', 'answer')} prompt, served by vLLM)", t.get("model", ""), _fmt(t["mean"], None), "-",
                 *[_fmt(t["by_difficulty"].get(d, {}).get("mean"), None) for d in diffs],
                 t["status"] if t["status"] == "ok" else f"failed: {str(t.get('error') or '')[:120]}"]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    if doc.get("contributions"):
        lines += ["", "## Each teacher's contribution (all teachers minus leave-that-one-out)", "",
                  "| teacher | all (tinyllm) | without it | contribution |", "|---|---|---|---|"]
        for c in doc["contributions"]:
            delta = "n/a" if c["contribution"] is None else f"{c['contribution']:+.3f}"
            lines.append(f"| {c['teacher']} | {_fmt(c['all'], None)} | {_fmt(c['without'], None)} "
                         f"({c['without_setting']}) | {delta} |")
    lines += ["", "## The papers' claims, answered by these numbers", ""]
    lines += [f"- {c['question']} {c['text']}." for c in doc.get("claims") or []] or ["- (no claim applies)"]
    return "\n".join(lines) + "\n"


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def plot_table(doc: Mapping[str, Any], path: str | Path) -> str:
    """compare.png: mean ± sd per setting (and teacher), and accuracy by difficulty."""
    from tinyllm_ray import plots

    rows = [(s["setting"], s["mean"], s["sd"] or 0.0, "C0") for s in doc["settings"]]
    rows += [(f"teacher {t['teacher']}", t["mean"], 0.0, "C1") for t in doc["teachers"]]
    diffs = list(doc.get("difficulties") or [])
    panels = 2 if len(diffs) > 1 else 1
    fig, axes = plots.subplots(panels, (6.0 * panels, 0.45 * len(rows) + 1.8))
    ax = axes[0][0]
    ys = list(range(len(rows)))
    ax.barh(ys, [0.0 if m is None or math.isnan(m) else m for _, m, _, _ in rows],
            xerr=[sd for _, _, sd, _ in rows], color=[c for *_, c in rows], capsize=3)
    for y, (_, m, sd, _) in zip(ys, rows):  # the numbers themselves: a bar of 0 is still readable
        label = "n/a" if m is None else (f"{m:.3f} ± {sd:.3f}" if sd else f"{m:.3f}")
        ax.text(0.01 if m is None else min(m + sd, 0.8) + 0.01, y, label, va="center", fontsize=8)
    ax.set_yticks(ys, [n for n, *_ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (mean ± sd over seeds)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    if panels == 2:
        ax2 = axes[0][1]
        xs = list(range(len(diffs)))
        for s in doc["settings"]:
            ax2.plot(xs, [_nan(s["by_difficulty"].get(d, {}).get("mean")) for d in diffs], marker="o",
                     label=s["setting"])
        for t in doc["teachers"]:
            ax2.plot(xs, [_nan(t["by_difficulty"].get(d, {}).get("mean")) for d in diffs], marker="s",
                     linestyle="--", label=f"teacher {t['teacher']}")
        ax2.set_xticks(xs, diffs)
        ax2.set_xlabel("difficulty")
        ax2.set_ylabel("test accuracy")
        ax2.set_ylim(0, 1)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    return plots.save(fig, path, title="tinyllm-ray compare")

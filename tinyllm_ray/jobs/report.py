"""The run report: ``report.json`` (every figure) and ``report.md`` (for people).

Why here and not in a stage: the report joins what several stages produced (teacher
statistics, training, evaluation, the streaming overlap) and says where the run's
outputs are (:class:`tinyllm_ray.paths.RunPaths`), which only the job knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyllm_ray.paths import RunPaths
from tinyllm_ray.store.record_cache import format_cache_counts
from tinyllm_ray.store.stats import TeacherStats

__all__ = ["plot_training", "render_markdown", "write_report"]


def write_report(report: dict[str, Any], paths: RunPaths, markdown: str) -> dict[str, str]:
    """Write ``report.json`` + ``report.md`` into the run folder; returns their paths.

    A run folder on a URI gets its report through pyarrow's filesystem layer, so the
    report always sits beside the run's artifacts.
    """
    body = json.dumps(report, indent=2, default=str)
    if paths.local:
        Path(paths.run).mkdir(parents=True, exist_ok=True)
        Path(paths.report_json).write_text(body)
        Path(paths.report_md).write_text(markdown)
    else:
        from tinyllm_ray.store import resolve_filesystem

        for target, text in ((paths.report_json, body), (paths.report_md, markdown)):
            fs, path, _ = resolve_filesystem(target)
            with fs.open_output_stream(path) as f:
                f.write(text.encode())
    return {"json": paths.report_json, "markdown": paths.report_md}


def render_markdown(r: dict[str, Any]) -> str:
    """The human-readable run report."""
    where = r.get("paths") or {"student": r["student"], "store": r["store_uri"]}
    lines = [f"# tinyllm-ray run `{r['run']}`", "", f"Student: `{where['student']}`  ", f"Store: `{where['store']}`"]
    if where.get("report"):
        lines[-1] += "  "
        lines.append(f"Report: `{where['report']}`")
    lines.append("")
    if r["teachers"]:
        lines += ["## Teachers", "",
                  ("| teacher | prompts | outputs | kept | dropped | cut at max_tokens | degenerate | agrees with gold "
                   "| output tokens | tokens/s |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        warnings: list[str] = []
        for name, s in r["teachers"].items():
            dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "0"
            h = s.get("health") or {}
            lines.append(f"| {name} | {s.get('prompts')} | {s.get('outputs')} | {s.get('kept')} | {dropped} | "
                         f"{_share(h.get('cut_at_max_tokens'))} | {_share(h.get('degenerate'))} | "
                         f"{_share(h.get('gold_agreement'))} | {s.get('output_tokens')} | "
                         f"{s.get('tokens_per_s', 0):.0f} |")
            warnings += TeacherStats.from_dict(s).health_warnings()
        lines.append("")
        lines += [f"> **Warning:** {w}" for w in warnings]
        if warnings:
            lines.append("")
        cache = format_cache_counts((r.get("generation") or {}).get("record_cache"))
        lines += [f"Record cache: {c}  " for c in cache] + ([""] if cache else [])
    agreement = (r.get("generation") or {}).get("agreement")
    if agreement and len(agreement.get("teachers") or []) > 1:
        lines += _agreement_markdown(agreement, (r.get("training") or {}).get("data") or {})
    t = r["training"]
    lines += ["## Training", ""]
    if t.get("plot"):
        lines += [f"![per-task losses and validation accuracy]({Path(t['plot']).name})", ""]
    if t.get("tensorboard"):
        lines += [f"TensorBoard: `tensorboard --logdir {t['tensorboard']}`", ""]
    lines += [(f"Best step {t['best_step']} of {t['total_steps']} "
              f"(validation accuracy {t['best_val_accuracy']})."), "", "| loss | first | last |", "|---|---|---|"]
    lines += [f"| {k} | {v['first']} | {v['last']} |" for k, v in t["task_losses"].items()]
    lines += ["", "## Evaluation (answer-only, normalised exact match)", "", "| split | accuracy | correct/total |",
              "|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.4f} | {v['correct']}/{v['total']} |" for k, v in r["evaluation"].items()]
    s = r["seconds"]
    lines += ["", "## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    if r.get("overlap"):
        o = r["overlap"]
        lines += ["", "## Streaming overlap", "",
                  (f"Generation ran {o['generation_started_s']}–{o['generation_ended_s']} s; the first training step "
                  f"finished at {o['first_train_step_s']} s; training began before generation ended: "
                  f"**{o['train_started_before_generation_ended']}** (overlap {o['overlap_s']} s, "
                  f"{o['shards_committed_after_first_step']} of {o['shards_committed_this_run']} shards committed "
                  "after the first step).")]
        timeline = [("generation started", "generation_started_s"),
                    ("first slice committed by every teacher", "first_slice_committed_s"),
                    ("training started (Ray Train fit)", "training_started_s"),
                    ("trainer ready (imports, model, DeepSpeed engine, baseline validation)", "trainer_ready_s"),
                    ("first optimizer step", "first_train_step_s"), ("generation ended", "generation_ended_s")]
        points = sorted(((o[k], name) for name, k in timeline if o.get(k) is not None), key=lambda p: p[0])
        if len(points) > 3:  # reports written before the timeline had these points show the sentence only
            lines += ["", "| seconds since the run began | event |", "|---|---|"]
            lines += [f"| {t} | {name} |" for t, name in points]
        if o.get("resources"):
            lines += ["", f"Warning: {o['resources']}."]
    return "\n".join(lines) + "\n"


def _agreement_markdown(a: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Cross-teacher agreement (``store.agreement.agreement_stats``) as a table per teacher pair,
    then what ``filter.cross_teacher`` did to the student's data (``data``: the training data stats)."""
    lines = ["## Cross-teacher agreement", "",
             (f"Parsed answers of {a['examples']} examples; {a['unanimous']} answered alike by every teacher. "
              "Rate: same answer, over the examples both teachers answered."), "",
             "| teachers | agree | both answered | rate |", "|---|---|---|---|"]
    lines += [f"| {pair.replace('~', ' ~ ')} | {p['agree']} | {p['both_answered']} | {_share(p['rate'])} |"
              for pair, p in a["pairs"].items()]
    if len(a["teachers"]) > 2:
        lines += ["", "| teacher | gives the majority answer | examples with a majority |", "|---|---|---|"]
        lines += [f"| {t} | {_share(m['rate'])} | {m['with_majority']} |" for t, m in a["majority"].items()]
    if "cross_teacher_dropped" in data:
        lines += ["", f"Student data (`filter.cross_teacher`): CoTs left out per teacher "
                  f"{data['cross_teacher_dropped'] or 'none'}"
                  + (f"; CoTs per teacher@agreeing share (loss weight factor) {data['cross_teacher_weights']}"
                     if data.get("cross_teacher_weights") else "") + "."]
    return [*lines, ""]


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def plot_training(history: list[dict[str, Any]], path: str) -> str | None:
    """Per-task losses (left) and validation accuracy (right) against the optimizer step.

    Why a PNG in the report: the losses of the answer and of each teacher's rationale task
    are the first thing to look at when a method does not help (one task not falling, or
    the answer loss rising when a rationale weight is high). Returns None when there is
    nothing to plot (no reports) or ``path`` is not local.
    """
    if not history or "://" in path:
        return None
    from tinyllm_ray import plots

    losses = sorted({k for rec in history for k in rec if k.startswith("loss_")}) or ["loss"]
    fig, axes = plots.subplots(2, (10, 3.6))
    ax_l, ax_a = axes[0]
    for key in losses:
        pts = [(rec["step"], rec[key]) for rec in history if rec.get(key) is not None and "step" in rec]
        if pts:
            ax_l.plot(*zip(*pts), label=key.removeprefix("loss_"), lw=1.2)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss (per task)")
    ax_l.set_yscale("log")
    ax_l.legend(fontsize=7)
    ax_l.grid(alpha=0.3)
    acc = [(rec["step"], rec["val_accuracy"]) for rec in history if rec.get("val_accuracy") is not None]
    if acc:
        ax_a.plot(*zip(*acc), marker="o")
    ax_a.set_xlabel("step")
    ax_a.set_ylabel("validation accuracy")
    ax_a.set_ylim(0, 1)
    ax_a.grid(alpha=0.3)
    return plots.save(fig, path, dpi=100)

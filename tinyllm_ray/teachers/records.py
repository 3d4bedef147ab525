"""Raw teacher outputs of one shard -> stored records + statistics (parse, then filter).

Why per shard and not per batch: a rationale can only be dropped as "verdict wrong" once
all self-evaluations of that CoT are known, and a shard is the unit that is written and
counted atomically. Doing the parse/filter step on a complete shard keeps "kept" and
"dropped" consistent with what the shard file holds.

Rules (first matching reason wins, so every output is counted exactly once):

rationale rows
    ``empty``            text shorter than ``max(1, filter.min_rationale_chars)`` (drop_empty)
    ``unparsable``       ``parse_answer`` finds no answer (drop_unparsable)
    ``answer_mismatch``  parsed answer != gold after ``normalize_answer``
                         (require_answer_match; an unparsed answer is a mismatch too)
    ``verdict_wrong``    the "wrong" verdict has strictly more votes than any other among
                         the CoT's parsed self-evaluations (drop_verdict_wrong)
self_eval rows
    ``empty``            no critique text at all (drop_empty)
    ``unparsable``       ``parse_verdict`` finds no configured verdict (drop_unparsable)

failed rows (a raw row with a non-empty ``error``: the engine could not generate it)
    not an output: counted under ``failed`` of its kind (and under ``failed_reasons`` by
    :func:`failure_reason`) and stored as a ``failed`` row (with the error, and the record
    key of the generation that failed) for a retry

API teachers' rows also carry ``requests``, ``retries`` and ``cost`` (``api.py``), summed
into the statistics.

Self-evaluations are kept independently of their CoT: a wrong CoT correctly judged
"wrong" is exactly the training signal Mind's Mirror's self-evaluation stage needs.
For ``self_eval`` rows ``rationale``/``parsed_answer``/``answer_match`` describe the CoT
that was judged. Pure: no Ray, no vLLM.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.config import FilterConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.evaluate import normalize_answer
from tinyllm_ray.prompts import is_degenerate, parse_answer, parse_verdict
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.schema import FAILED_KIND
from tinyllm_ray.store.stats import KindStats, TeacherStats

#: Columns the engine returns for every generated output (see ``engine.py``); an optional
#: ``error`` column (non-empty: the generation failed) makes that row a ``failed`` record.
RAW_COLUMNS: tuple[str, ...] = (
    "kind", "example_id", "split", "shard", "sample_idx", "eval_idx", "prompt_hash", "text",
    "prompt_tokens", "output_tokens", "finish_reason", "gen_seconds", "n_evals",
)


def wrong_verdict(verdicts: Sequence[str]) -> str:
    """The verdict that means "this CoT is wrong": ``wrong`` if configured, else the second one."""
    for v in verdicts:
        if v.lower() == "wrong":
            return v
    return verdicts[1]


def judged_wrong(votes: Sequence[str], wrong: str) -> bool:
    """Strict plurality of ``wrong`` among parsed verdicts (a tie is not a judgement)."""
    if not votes:
        return False
    counts = Counter(votes)
    w = counts.get(wrong, 0)
    return w > 0 and all(w > n for v, n in counts.items() if v != wrong)


@dataclass
class ShardRecords:
    """What one shard contributes to the store: kept rows per kind, failed rows and the statistics."""

    stats: TeacherStats
    rationale: list[dict[str, Any]] = field(default_factory=list)
    self_eval: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def _answers_match(parsed: str | None, gold: str) -> bool | None:
    if parsed is None:
        return None
    return normalize_answer(parsed) == normalize_answer(gold)


def build_shard_records(
    raw: Sequence[Mapping[str, Any]],
    examples: Mapping[str, MCQRecord],
    teacher: str,
    filt: FilterConfig,
    verdicts: Sequence[str],
    *,
    key: KeyContext,
    self_eval_prompts: int | None = None,
) -> ShardRecords:
    """Parse, filter and count one shard's raw outputs.

    ``examples`` maps example id -> record (the gold answer never travels through the
    engine). ``key`` (from ``store.keys.key_context_for``) fills every row's provenance
    columns (``record_key``, ``model``, ``model_revision``, ``template_version``); without
    it they stay null (callers that know no model, e.g. unit tests of the filters).
    ``self_eval_prompts`` defaults to the number of CoTs that asked for self-evaluations
    (one request with ``n = evals_per_cot`` each).
    """
    raw = [_storable(r) for r in raw]
    stats = TeacherStats(teacher=teacher, shards=1)
    out = ShardRecords(stats=stats)
    wrong = wrong_verdict(verdicts)
    min_chars = max(1, filt.min_rationale_chars)

    rat_rows = [r for r in raw if r["kind"] == "rationale" and not r.get("error")]
    se_rows = [r for r in raw if r["kind"] == "self_eval" and not r.get("error")]

    # --- self-evaluations first: their verdicts feed the rationale filter.
    votes: dict[tuple[str, int], list[str]] = {}
    parsed_se: list[tuple[Mapping[str, Any], str | None, str | None]] = []
    for r in se_rows:
        pv = parse_verdict(r["text"], verdicts) if r["text"] else None
        if pv is not None:
            votes.setdefault((r["example_id"], int(r["sample_idx"])), []).append(pv.verdict)
        parsed_se.append((r, pv.verdict if pv else None, pv.critique if pv else None))

    # --- rationales
    cot_info: dict[tuple[str, int], tuple[str, str | None, bool | None]] = {}
    rs = stats.kind("rationale")
    rs.prompts = len({r["example_id"] for r in raw if r["kind"] == "rationale"})
    for r in rat_rows:
        ex = examples[r["example_id"]]
        text: str = r["text"] or ""
        parsed = parse_answer(text, ex.choices) if text else None
        parsed_text = parsed.text if parsed else None
        match = _answers_match(parsed_text, ex.answer)
        cot = (r["example_id"], int(r["sample_idx"]))
        cot_info[cot] = (text, parsed_text, match)
        reason = None
        if len(text) < min_chars and filt.drop_empty:
            reason = "empty"
        elif parsed is None and filt.drop_unparsable:
            reason = "unparsable"
        elif filt.require_answer_match and match is not True:
            reason = "answer_mismatch"
        elif filt.drop_verdict_wrong and judged_wrong(votes.get(cot, []), wrong):
            reason = "verdict_wrong"
        if parsed is not None:
            rs.answer_parsed += 1
            rs.answer_matches += int(match is True)
        if not _tally(stats, "rationale", r, reason, text):
            continue
        out.rationale.append(_record(r, teacher, ex, key, rationale=text, parsed=parsed_text, match=match))

    # --- self-evaluations
    ss = stats.kind("self_eval")
    ss.prompts = (
        self_eval_prompts if self_eval_prompts is not None
        else sum(1 for r in rat_rows if int(r.get("n_evals") or 0) > 0)
    )
    for r, verdict, critique in parsed_se:
        text = r["text"] or ""
        reason = None
        if not text.strip() and filt.drop_empty:
            reason = "empty"
        elif verdict is None and filt.drop_unparsable:
            reason = "unparsable"
        if not _tally(stats, "self_eval", r, reason, text):
            continue
        ex = examples[r["example_id"]]
        cot, parsed_text, match = cot_info.get((r["example_id"], int(r["sample_idx"])), ("", None, None))
        out.self_eval.append(_record(
            r, teacher, ex, key, rationale=cot, parsed=parsed_text, match=match,
            verdict=verdict, critique=critique if critique is not None else text,
        ))
    # --- generations that failed: no output, one row each for a later retry
    for r in raw:
        if r.get("error"):
            k = stats.kind(r["kind"])
            k.failed += 1
            reason = failure_reason(str(r["error"]))
            k.failed_reasons[reason] = k.failed_reasons.get(reason, 0) + 1
            _count_api(k, r)
            if r["kind"] == "rationale":
                stats.failed_cots.append((r["example_id"], int(r["sample_idx"])))
            cot, parsed_text, match = cot_info.get((r["example_id"], int(r["sample_idx"])), (None, None, None))
            if r["kind"] == "rationale":
                cot, parsed_text, match = None, None, None
            row = _record(r, teacher, examples[r["example_id"]], key, rationale=cot, parsed=parsed_text, match=match)
            out.failed.append({**row, "kind": FAILED_KIND, "error": str(r["error"])})
    stats.generation_seconds = float(sum(float(r.get("gen_seconds") or 0.0) for r in raw))
    stats.check()
    return out


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _storable(r: Mapping[str, Any]) -> Mapping[str, Any]:
    """``r`` with its text and error as valid UTF-8: each lone surrogate becomes U+FFFD.

    Why: an API's JSON may escape one (``"\\ud800"``), and Parquet, the statistics JSON and
    the reports need UTF-8; left in, it failed the shard's write inside pyarrow.
    """
    bad = [c for c in ("text", "error") if isinstance(r.get(c), str) and _SURROGATE_RE.search(r[c])]
    return {**r, **{c: _SURROGATE_RE.sub("\ufffd", r[c]) for c in bad}} if bad else r


def _tally(stats: TeacherStats, kind: str, r: Mapping[str, Any], reason: str | None, text: str) -> bool:
    """Count one output of ``kind`` as kept (True) or dropped for ``reason`` (False): exactly once."""
    k = stats.kind(kind)
    _count(k, r)
    if reason:
        k.dropped[reason] += 1
        stats.note_drop(f"{kind}:{reason}", text)
        return False
    k.kept += 1
    return True


def _count(k: KindStats, r: Mapping[str, Any]) -> None:
    k.outputs += 1
    k.output_tokens += int(r["output_tokens"])
    # a request with n samples is one prompt: count its prompt tokens once (sample 0 / eval 0)
    first = int(r["eval_idx"]) <= 0 if r["kind"] == "self_eval" else int(r["sample_idx"]) == 0
    if first:
        k.prompt_tokens += int(r["prompt_tokens"])
    if r.get("finish_reason") == "length":
        k.truncated += 1
    if is_degenerate(str(r.get("text") or "")):
        k.degenerate += 1
    _count_api(k, r)


def _count_api(k: KindStats, r: Mapping[str, Any]) -> None:
    """An API teacher's request accounting (columns absent for vLLM teachers: nothing added)."""
    k.requests += int(r.get("requests") or 0)
    k.retries += int(r.get("retries") or 0)
    k.cost += float(r.get("cost") or 0.0)


def failure_reason(error: str) -> str:
    """What a failed generation is counted under: its error's text before the first ':' (e.g. ``HTTP 500``)."""
    return error.split(":", 1)[0].strip()[:40] or "error"


def _record(
    r: Mapping[str, Any],
    teacher: str,
    ex: MCQRecord,
    key: KeyContext,
    *,
    rationale: str | None,
    parsed: str | None,
    match: bool | None,
    verdict: str | None = None,
    critique: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": r["kind"],
        "teacher": teacher,
        "example_id": ex.id,
        "split": r["split"],
        "sample_idx": int(r["sample_idx"]),
        "eval_idx": int(r["eval_idx"]),
        "prompt_hash": r["prompt_hash"],
        "question": ex.question,
        "context": ex.context,
        "choices": list(ex.choices),
        "answer": ex.answer,
        "rationale": rationale,
        "parsed_answer": parsed,
        "answer_match": match,
        "verdict": verdict,
        "critique": critique,
        "prompt_tokens": int(r.get("prompt_tokens") or 0),
        "output_tokens": int(r.get("output_tokens") or 0),
        "finish_reason": r.get("finish_reason"),
        "record_key": key.record_key(r["prompt_hash"], r["kind"], int(r["sample_idx"]), int(r["eval_idx"])),
        **key.columns(),
    }

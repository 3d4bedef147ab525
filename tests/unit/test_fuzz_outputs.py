"""Fuzzing teacher outputs with hypothesis: every output is counted exactly once, and storable.

The promise under test (issue 11): whatever an engine or an API returns — nothing, binary
junk, control characters, a lone surrogate (an API's ``"\\ud800"`` escape), endless text,
letters that are no choice, verdicts in other words, case or languages — goes through
:func:`~tinyllm_ray.teachers.records.build_shard_records` without an exception, and

* per kind ``outputs == kept + sum(dropped)``; over the shard ``outputs + failed`` equals
  the raw rows (nothing lost, nothing counted twice), and the kept/failed row lists have
  exactly the counted lengths;
* with ``filter.drop_unparsable`` every kept rationale parses to one of its choices (or
  a number for free-form examples) and every kept self-evaluation has a configured verdict;
  with ``require_answer_match`` every kept rationale matches the gold answer;
* the shard can be written to a store and read back, row for row.

Also: ``parse_answer`` / ``parse_verdict`` / ``clean_rationale`` never raise on any text.
Found here: a lone surrogate in a teacher's text (valid JSON from an API) made the store
writer fail with pyarrow's ``UnicodeEncodeError``; a 400-digit number in a free-form
answer raised ``OverflowError`` in ``format_number``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinyllm_ray.config import FilterConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.prompts import clean_rationale, parse_answer, parse_verdict
from tinyllm_ray.prompts.answers import normalize_number
from tinyllm_ray.store import RationaleStore
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.schema import FAILED_KIND
from tinyllm_ray.teachers.records import build_shard_records

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
VERDICTS = ["correct", "wrong", "uncertain"]
CTX = KeyContext("t", "tiny:llama", "sha256:" + "0" * 32, "v1", '{"seed":0}', '{"temperature":0}')
EXAMPLES = {
    "q1": MCQRecord("q1", "Which is a mammal?", ("shark", "whale", "trout"), "whale"),
    "q2": MCQRecord("q2", "What is 3 plus 4?", (), "7"),
    "q3": MCQRecord("q3", "Yes or no?", ("yes", "no"), "no"),
}

outputs = st.one_of(
    st.sampled_from([
        "", " ", "\n\n", "\x00\x01\x02", "\ufffd\ufffd", "a\ud800b", "\udcff" * 3, "The answer is (z).",
        "The answer is (B)", "(e)", "Answer: Q", "Thus, the answer is (b) whale.", "Thus, the answer is 7.",
        "Thus, the answer is " + "9" * 400 + ".", "the answer is no", "So the answer is: (a) shark (b) whale",
        "VERDICT: CORRECT", "verdict - Incorrect", "Verdict: richtig", "Verdict: 正确", "Urteil: falsch",
        "Verdict: true", "veredicto: correcto", "My verdict is WRONG.", "Critique: fine.\nVerdict: uncertain",
        "verdict:" * 50, "The answer is (b). " * 2000, "a" * 100_000, "ll " * 5000, "(" * 3000,
        "answer is answer is answer is " * 500,
    ]),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60).map(lambda t: f"Thus, the answer is {t}."),
)


@st.composite
def shards(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Raw engine rows of one shard: CoTs per example, self-evaluations per CoT, some failed."""
    rows: list[dict[str, Any]] = []
    for ex in EXAMPLES:
        for s in range(draw(st.integers(0, 3))):
            n_evals = draw(st.integers(0, 2))
            error = draw(st.sampled_from([None, None, None, None, "HTTP 500: boom", "engine died", ":"]))
            rows.append(_row("rationale", ex, s, -1, draw(outputs), n_evals, error))
            for e in range(n_evals if error is None else 0):
                e_error = draw(st.sampled_from([None, None, None, "timeout: 30 s"]))
                rows.append(_row("self_eval", ex, s, e, draw(outputs), 0, e_error))
    return rows


def _row(kind: str, ex: str, s: int, e: int, text: str, n_evals: int, error: str | None) -> dict[str, Any]:
    return {"kind": kind, "example_id": ex, "split": "train", "shard": 0, "sample_idx": s, "eval_idx": e,
            "prompt_hash": f"{kind[0]}{ex}", "text": "" if error else text, "prompt_tokens": 40,
            "output_tokens": len(text) // 4, "finish_reason": "error" if error else "length" if len(text) > 999 else "stop",
            "gen_seconds": 0.1, "n_evals": n_evals, **({"error": error} if error else {})}


filters = st.builds(FilterConfig, drop_empty=st.booleans(), drop_unparsable=st.booleans(),
                    require_answer_match=st.booleans(), drop_verdict_wrong=st.booleans(),
                    min_rationale_chars=st.sampled_from([0, 1, 20]))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzout")


@SETTINGS
@given(shards(), filters)
def test_every_teacher_output_is_counted_once_and_the_shard_is_storable(store_dir, raw, filt):
    out = build_shard_records(raw, EXAMPLES, "t", filt, VERDICTS, key=CTX)
    stats = out.stats
    assert stats is not None
    for kind, rows in (("rationale", out.rationale), ("self_eval", out.self_eval)):
        k = stats.kind(kind)
        ok = [r for r in raw if r["kind"] == kind and not r.get("error")]
        assert k.outputs == len(ok) == k.kept + sum(k.dropped.values())
        assert len(rows) == k.kept
        assert k.failed == sum(1 for r in raw if r["kind"] == kind and r.get("error"))
    assert stats.outputs + stats.failed == len(raw) and len(out.failed) == stats.failed
    for r in out.rationale:
        ex = EXAMPLES[r["example_id"]]
        if filt.drop_unparsable:
            assert r["parsed_answer"] is not None
            assert r["parsed_answer"] in ex.choices if ex.choices else normalize_number(r["parsed_answer"])
        if filt.require_answer_match:
            assert r["answer_match"] is True
    for r in out.self_eval:
        if filt.drop_unparsable:
            assert r["verdict"] in VERDICTS
    event(f"some kept: {stats.kept > 0}, some dropped: {sum(stats.dropped.values()) > 0}, some failed: {stats.failed > 0}")

    store = RationaleStore(str(store_dir / "store"))
    store.write_shard("t", 0, out.rationale, out.self_eval, stats, failed=out.failed)
    assert store.finished_shards("t") == {0}
    back = store.read_shard("t", "rationale", 0).to_pylist()
    assert [r["rationale"] for r in back] == [r["rationale"] for r in out.rationale]
    assert store.read_shard("t", "self_eval", 0).num_rows == len(out.self_eval)
    assert store.read_shard("t", FAILED_KIND, 0).num_rows == len(out.failed)
    assert store.shard_stats("t")[0].to_dict() == stats.to_dict()


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.data_too_large])
@given(outputs, st.lists(st.text(min_size=1, max_size=12), max_size=5),
       st.lists(st.sampled_from(["correct", "wrong", "uncertain", "yes", "no", "Correct", "WRONG", "ja"]),
                min_size=2, max_size=3, unique=True))
def test_parsers_never_raise_on_any_text(text, choices, verdicts):
    choices = list(dict.fromkeys(c.strip() for c in choices if c.strip()))
    parsed = parse_answer(text, choices if len(choices) != 1 else [])
    assert parsed is None or not choices or len(choices) == 1 or parsed.text in choices
    v = parse_verdict(text, verdicts)
    assert v is None or v.verdict in verdicts
    assert isinstance(clean_rationale(text, ["\n\nQ:"], "Let's think step by step."), str)


@pytest.mark.parametrize("text", ["9" * 400, "-" + "9" * 400, "$" + "9" * 400 + ".5"])
def test_a_number_too_large_for_a_float_is_no_number(text):
    assert normalize_number(text) is None
    parse_answer(f"Thus, the answer is {text}.", [])  # was OverflowError


def test_a_lone_surrogate_from_an_api_is_stored_as_a_replacement_character(tmp_path):
    raw = [_row("rationale", "q1", 0, -1, "Whales \ud800 breathe. Thus, the answer is (b) whale.", 1, None),
           _row("self_eval", "q1", 0, 0, "Fine \udcff.\nVerdict: correct", 0, None)]
    out = build_shard_records(raw, EXAMPLES, "t", FilterConfig(), VERDICTS, key=CTX)
    assert out.stats.kept == 2
    store = RationaleStore(str(tmp_path / "store"))
    store.write_shard("t", 0, out.rationale, out.self_eval, out.stats)
    assert store.read_shard("t", "rationale", 0).to_pylist()[0]["rationale"].startswith("Whales \ufffd breathe.")
    assert store.read_shard("t", "self_eval", 0).to_pylist()[0]["critique"] == "Fine \ufffd."


@pytest.mark.parametrize("unit", ["The answer is (a). ", "answer:\n", "so blue sky is correct. "])
def test_a_long_output_of_repeated_statements_parses_as_its_last_one(unit):
    """Answer statements read a bounded window around them (each used to slice the rest of the
    text: 9 s on 1 MB); the result is what the last statement says, as on a short text."""
    choices = ["red apple", "blue sky", "green grass", "yellow sun"]
    long_text = unit * (300_000 // len(unit)) + "Therefore, the answer is (c)."
    short_text = unit * 3 + "Therefore, the answer is (c)."
    assert parse_answer(long_text, choices) == parse_answer(short_text, choices)
    assert parse_answer(long_text, choices).letter == "c"
    assert parse_answer(unit * (300_000 // len(unit)), []) == parse_answer(unit * 3, [])

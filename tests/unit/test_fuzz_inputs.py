"""Fuzzing the three input boundaries with hypothesis: configs, dataset rows, teacher outputs.

The promise under test: bad input ends in a clear user error (a ``UserError`` the CLI
prints as one line) or a counted drop — never another exception type from inside the
library, never a silent acceptance of nonsense (NaN weights, negative counts).
"""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyllm_ray.config import validate_config
from tinyllm_ray.data.adapters import ADAPTERS
from tinyllm_ray.data.schema import MCQRecord, RowError
from tinyllm_ray.errors import ConfigError, UserError
from tinyllm_ray.prompts import clean_rationale, cut_at_stop, parse_answer, parse_verdict

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
SECTIONS = ["data", "teachers", "prompts", "self_eval", "filter", "student", "loss", "train", "tune", "eval",
            "runtime"]


@SETTINGS
@given(st.dictionaries(st.sampled_from([*SECTIONS, "unknown_section"]), values, max_size=4))
def test_any_config_mapping_validates_or_raises_config_error(raw):
    try:
        validate_config(raw)
    except ConfigError as exc:
        assert str(exc).strip()
        assert isinstance(exc, UserError)


@SETTINGS
@given(st.sampled_from(["loss.default_alpha", "loss.convex_alpha", "loss.self_eval_weight", "train.lr",
                        "tune.trial_cpus", "data.validation_fraction"]),
       st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-9]))
def test_nan_infinite_or_negative_weights_are_refused(field, value):
    section, key = field.split(".")
    with pytest.raises(ConfigError):
        validate_config({section: {key: value}})


@SETTINGS
@given(st.sampled_from([math.nan, math.inf, -1.0]))
def test_per_teacher_alpha_must_be_finite_and_non_negative(value):
    raw = {"teachers": [{"name": "t", "model": "tiny:llama"}], "loss": {"alpha": {"t": value}}}
    with pytest.raises(ConfigError):
        validate_config(raw)


def test_empty_teacher_list_with_self_eval_is_refused():
    with pytest.raises(ConfigError, match="self_eval"):
        validate_config({"teachers": [], "self_eval": {"enabled": True}})


rows = st.dictionaries(
    st.sampled_from(["id", "question", "question_stem", "choices", "answer", "answerKey", "label", "goal", "sol1",
                     "sol2", "final_decision", "context", "Question", "Answer", "Body", "premise", "hypothesis",
                     "uid", "pubid", "body", "exact_answer"]),
    st.one_of(values, st.fixed_dictionaries({"text": st.lists(st.text(max_size=10), max_size=5),
                                             "label": st.lists(st.sampled_from(list("ABCDE1234")), max_size=5)})),
    max_size=8,
)


@SETTINGS
@given(st.sampled_from(sorted(ADAPTERS)), rows)
def test_every_adapter_turns_any_row_into_a_record_or_a_row_error(name, row):
    adapter = ADAPTERS[name]
    try:
        canon = adapter(row, "train-0")
        rec = MCQRecord(**canon)
    except RowError as exc:
        assert exc.reason and exc.detail is not None
        return
    assert rec.question and rec.answer
    assert not rec.choices or rec.answer in rec.choices


junk = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.text(alphabet=string.printable, max_size=50).map(lambda t: t * 200),  # endless run-on text
    st.sampled_from(["", " ", "\x00\x01", "The answer is (z).", "The answer is (B)", "Verdict: WRONG!!",
                     "verdict: nope", "I think it is correct.", "(a) (b) (c)", "answer: " + "9" * 500]),
)


@SETTINGS
@given(junk, st.lists(st.text(min_size=1, max_size=15), min_size=0, max_size=5))
def test_parsers_never_raise_and_name_only_real_choices(text, choices):
    choices = list(dict.fromkeys(c.strip() for c in choices if c.strip()))
    if len(choices) == 1:
        choices = []
    parsed = parse_answer(text, choices)
    if parsed is not None and choices:
        assert parsed.text in choices
    cleaned = clean_rationale(text, ["\n\nQ:"], "Let's think step by step.")
    assert isinstance(cleaned, str) and len(cleaned) <= len(text) + 1
    assert isinstance(cut_at_stop(text, ["\n\nQ:"]), str)
    v = parse_verdict(text, ["correct", "wrong", "uncertain"])
    assert v is None or v.verdict in ("correct", "wrong", "uncertain")


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(junk, min_size=1, max_size=6))
def test_a_jsonl_file_of_junk_lines_loads_or_fails_with_one_user_error(tmp_path_factory, lines):
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.loader import load_splits

    d = tmp_path_factory.mktemp("fuzz")
    path = d / "train.jsonl"
    good = json.dumps({"id": "q0", "question": "Which?", "choices": ["a", "b"], "answer": "a"})
    path.write_text("\n".join([good, *[json.dumps({"question": ln, "choices": [ln, "x"], "answer": ln})
                                       if i % 2 else ln for i, ln in enumerate(lines)]]) + "\n")
    cfg = DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed="skip")
    try:
        loaded = load_splits(cfg)
    except UserError as exc:
        assert str(exc).strip()
        return
    assert loaded.splits["train"] or loaded.splits["validation"]

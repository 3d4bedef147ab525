"""Prompts and parsers: ICL sampling, prompt layout, stop cutting, answer/verdict parsing.

The last test runs the parsers over the real TinyLLM teacher outputs in ../shared/data and
checks the coverage measured by benchmarks/parser_coverage.py does not regress.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.prompts import (
    DEFAULT_COT_TRIGGER,
    DEFAULT_STOPS,
    DEFAULT_VERDICTS,
    clean_rationale,
    cot_prompt,
    cut_at_stop,
    format_choices,
    letter,
    parse_answer,
    parse_verdict,
    prompt_hash,
    runon_index,
    sample_icl_examples,
    self_eval_prompt,
    teacher_forcing_prompt,
)

REPO = Path(__file__).resolve().parents[2]
TRIGGER = DEFAULT_COT_TRIGGER
FOG = ("a marsh", "a tundra", "the plains", "a desert")


def rec(i: int | str, answer_idx: int = 1, choices: tuple[str, ...] | None = None, **kw) -> MCQRecord:
    choices = choices if choices is not None else (f"alpha{i}", f"beta{i}", f"gamma{i}", f"delta{i}")
    return MCQRecord(id=str(i), question=f"Question number {i}?", choices=choices,
                     answer=choices[answer_idx], **kw)


POOL = [rec(i, answer_idx=i % 4) for i in range(50)]


# --------------------------------------------------------------------------- ICL sampling


def test_icl_is_deterministic_and_independent_of_call_order():
    first = sample_icl_examples(POOL, 2, seed=3, exclude_id="q-7")
    for other in ("q-1", "q-2", "q-99"):  # other questions drawn in between
        sample_icl_examples(POOL, 2, seed=3, exclude_id=other)
    again = sample_icl_examples(POOL, 2, seed=3, exclude_id="q-7")
    assert [r.id for r in first] == [r.id for r in again]
    assert len(first) == 2


def test_icl_depends_on_seed_and_question():
    by_seed = {tuple(r.id for r in sample_icl_examples(POOL, 3, seed=s, exclude_id="x")) for s in range(10)}
    by_question = {
        tuple(r.id for r in sample_icl_examples(POOL, 3, seed=0, exclude_id=f"x{q}")) for q in range(10)
    }
    assert len(by_seed) > 5 and len(by_question) > 5


def test_icl_never_returns_the_question_itself_nor_duplicates():
    for r in POOL:
        got = sample_icl_examples(POOL, 5, seed=1, exclude_id=r.id)
        ids = [g.id for g in got]
        assert r.id not in ids
        assert len(ids) == len(set(ids)) == 5
        assert all(g in POOL for g in got)


def test_icl_dedups_repeated_ids_in_pool_and_caps_at_pool_size():
    pool = [rec(1), rec(1), rec(2), rec(2), rec(3)]
    got = sample_icl_examples(pool, 10, seed=0, exclude_id="3")
    assert sorted(g.id for g in got) == ["1", "2"]
    assert sample_icl_examples(pool, 0, seed=0, exclude_id="3") == []
    assert sample_icl_examples([], 2, seed=0, exclude_id="3") == []
    with pytest.raises(ValueError):
        sample_icl_examples(pool, -1, seed=0, exclude_id="3")


def test_icl_uses_the_whole_pool():
    used = {g.id for q in range(300) for g in sample_icl_examples(POOL, 2, seed=0, exclude_id=f"t{q}")}
    assert used == {r.id for r in POOL}


# --------------------------------------------------------------------------- rendering


def test_letters_and_choice_block():
    assert letter(0) == "a" and letter(3) == "d"
    with pytest.raises(ValueError):
        letter(26)
    assert format_choices(("x", "y\nz")) == "Answer Choices:\n(a) x\n(b) y z"


def test_teacher_forcing_prompt_shows_gold_and_ends_with_trigger():
    target = MCQRecord(id="t", question="There is most likely going to be fog around:", choices=FOG,
                       answer="a marsh")
    examples = [POOL[1], POOL[2]]
    p = teacher_forcing_prompt(target, examples, TRIGGER)
    assert p.endswith(f"Answer: (a) a marsh\nRationale: {TRIGGER}")
    assert "(a) a marsh\n(b) a tundra\n(c) the plains\n(d) a desert" in p
    for e in examples:  # every example shows question, options and its gold answer
        assert f"Q: {e.question}" in p
        assert f"Answer: ({letter(e.answer_index)}) {e.answer}" in p
    # one "Q:" block per example + target, each starting with the default stop "\n\nQ:"
    assert p.count("\n\nQ:") == len(examples) + 1
    assert "Thus, the answer is (x)" in p


def test_cot_prompt_withholds_the_gold_answer():
    target = rec("t", answer_idx=2, choices=("red", "green", "zyzzyva", "blue"))
    p = cot_prompt(target, [POOL[4]], TRIGGER)
    tf = teacher_forcing_prompt(target, [POOL[4]], TRIGGER)
    assert "Answer: (c) zyzzyva" in tf
    assert "Answer: (c)" not in p and p.count("zyzzyva") == 1  # only in the option list
    assert f"Answer: ({letter(POOL[4].answer_index)}) {POOL[4].answer}" in p  # examples keep theirs
    assert p.endswith(f"Rationale: {TRIGGER}")


def test_context_after_question_and_multiline_fields_flattened():
    target = MCQRecord(id="p", question="Does X help?\n\nQ: injected", choices=("yes", "no", "maybe"),
                       answer="no", context="Abstract line one.\nLine two.")
    p = teacher_forcing_prompt(target, [], TRIGGER)
    assert "Q: Does X help? Q: injected\nContext: Abstract line one. Line two.\nAnswer Choices:" in p
    assert p.count("\n\nQ:") == 1  # a newline in the data cannot fake a new block


def test_free_form_prompts():
    q = "Tom has 4000 apples and buys 217. How many?"
    target = MCQRecord(id="s", question=q, choices=(), answer="4217")
    tf = teacher_forcing_prompt(target, [], TRIGGER)
    cot = cot_prompt(target, [], TRIGGER)
    assert "Answer Choices" not in tf and "Answer: 4217\nRationale:" in tf
    assert "4217" not in cot
    assert "Thus, the answer is <number>." in tf


def test_self_eval_prompt():
    target = MCQRecord(id="t", question="Fog?", choices=FOG, answer="a marsh")
    p = self_eval_prompt(target, "Marshes are wet.\nThus, the answer is (a) a marsh.", DEFAULT_VERDICTS)
    assert "Proposed reasoning: Marshes are wet. Thus, the answer is (a) a marsh." in p
    assert all(f'"Verdict: {v}"' in p for v in DEFAULT_VERDICTS)
    assert p.endswith("Critique:") and "Answer: (a)" not in p
    with pytest.raises(ValueError):
        self_eval_prompt(target, "x", ["only"])


def test_prompt_hash():
    h = prompt_hash("abc")
    assert re.fullmatch(r"[0-9a-f]{16}", h) and h == prompt_hash("abc") and h != prompt_hash("abd")
    assert h == "ba7816bf8f01cfea"  # sha256("abc"), so hashes are comparable across tools


# --------------------------------------------------------------------------- cutting / cleaning


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Fog. Thus, the answer is (a) a marsh\n\nQ: There is most", "Fog. Thus, the answer is (a) a marsh"),
        ("Step one.\nQuestion:\nWhich of the following", "Step one."),
        ("Step one.\n\n\n\nmore", "Step one."),
        ("Reasoning. llama rationale: Let's think step by step.", "Reasoning."),
        ("Reasoning.\nAnswer Choices:\n(a) x", "Reasoning."),
        ("Reasoning.\nOptions:\n(a) coal\n(b) sun", "Reasoning."),
        ("So we have reached it.\n\n### Question:\n\nSand is", "So we have reached it."),
        ("Solution:\n1.5 times\n# 13. A typical height", "Solution:\n1.5 times"),
        ("Done.\n\\end{code}\n\nAnswer: \\begin{code}", "Done."),
        ("Done.\nComment: @user nice", "Done."),
        ("  The Q: factor matters here.  ", "The Q: factor matters here."),  # mid-line Q: is text
        ("Question: first thing echoed", ""),
        ("", ""),
    ],
)
def test_cut_at_stop(raw, expected):
    assert cut_at_stop(raw, DEFAULT_STOPS) == expected


def test_cut_uses_earliest_marker_and_custom_stops():
    assert cut_at_stop("a END b\nQuestion: c", ["END"]) == "a"
    assert runon_index("no junk here", DEFAULT_STOPS) is None
    assert runon_index("ok\nQuestion: x", DEFAULT_STOPS) == 2


def test_clean_rationale():
    raw = ("Rationale: Let's think step by step.\nWhat is it?\nWhat is it?\nWhat is it?\n\n"
           "It is wet.\nThus, the answer is (a) a marsh.\n\nQ: next question")
    expected = "What is it?\n\nIt is wet.\nThus, the answer is (a) a marsh."
    assert clean_rationale(raw, DEFAULT_STOPS) == expected
    assert clean_rationale("Let's think step by step.", DEFAULT_STOPS) == ""
    # real LLaMA-2 output: the echoed question glued to the trigger
    assert clean_rationale("Let's think step by step.Question:\nWhat could be?", DEFAULT_STOPS) == ""


# --------------------------------------------------------------------------- answer parsing


@pytest.mark.parametrize(
    "text, idx, how",
    [
        ("Fog forms over wet ground. Thus, the answer is (a) a marsh", 0, "statement_letter"),
        ("Thus, the answer is (c) the plains.", 2, "statement_letter"),
        ("So the answer is c.", 2, "statement_letter"),
        ("Answer: C", 2, "statement_letter"),
        ("**Answer:** (b)", 1, "statement_letter"),
        ('The answer is "b" because tundras are cold.', 1, "statement_letter"),
        ('The answer is "c." Beavers gnaw.', 2, "statement_letter"),
        ("the correct option is D.", 3, "statement_letter"),
        ("Answer:\n(b)", 1, "statement_letter"),
        ("Answer key:\nd", 3, "statement_letter"),
        ("So, option (d) is correct.", 3, "statement_letter"),
        ("Hence, (b) is the correct answer.", 1, "statement_letter"),
        ("Option (a) is not true.\nOption (d) is true.", 3, "statement_letter"),
        ("the answer is a marsh", 0, "statement_text"),
        ("The answer is the plains, clearly.", 2, "statement_text"),
        ("A desert is the correct answer.", 3, "statement_text"),
        ("The answer is a.", 0, "statement_letter"),
        # the LAST statement wins, also over the FLAN-T5 habit of opening with a guess
        ("(a) a marsh. Deserts are dry. Thus, the answer is (d) a desert.", 3, "statement_letter"),
        ("The answer is (a). Wait, no: the final answer is (b).", 1, "statement_letter"),
        ("(b)", 1, "letter_only"),
        ("B", 1, "letter_only"),
        ("(b) a tundra", 1, "letter_only"),
        ("the plains", 2, "text_only"),
        ("(c) The plains. Plains are flat and open.", 2, "leading_letter"),
        ("Fog needs water nearby. Therefore, fog is most likely around a marsh.", 0, "conclusion_text"),
        ("Answer: (b) water\n\nAnswer: (c", 2, "statement_letter"),  # cut at max_tokens
    ],
)
def test_parse_answer_multiple_choice(text, idx, how):
    got = parse_answer(text, FOG)
    assert got is not None, text
    assert (got.index, got.letter, got.text, got.how) == (idx, "abcd"[idx], FOG[idx], how)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Fog is a type of weather. It is common.",
        "Option (a) is incorrect.\nOption (b) is incorrect.\nOption (d",  # elimination, unfinished
        "(a) a marsh\nMarshes are wet.\n(b) a tundra\nTundras are cold.",  # walk through options
        "If the answer is (b), then tundras would be foggy.",  # hypothetical
        "So the answer is not (b).",  # negated
        "Thus, the answer is (e).",  # no such option
        "The answer is (b). Actually, the answer is pH5 range.",  # last statement names no choice
        "So, the correct",  # truncated
        "The first statement is true. The second statement is also true.",
        "Thus it is the plains or a desert.",  # ambiguous conclusion
        "So the answer is no.",  # 'no' only counts for yes/no choices
    ],
)
def test_parse_answer_none(text):
    assert parse_answer(text, FOG) is None


def test_parse_answer_yes_no_maybe():
    yn = ("yes", "no", "maybe")
    assert parse_answer("The answer is no.", yn).text == "no"
    assert parse_answer("Thus, the answer is (c) maybe", yn).index == 2
    # a bare "no" in a sentence is not an answer (short choices need a statement)
    assert parse_answer("No, there is no evidence. So there is no effect.", yn) is None


def test_parse_answer_letter_vs_text_choices():
    # chemical symbols as choices: "c" names the choice "C", not option (c)
    chem = ("C", "O_{2}", "H", "N")
    assert parse_answer("So, the correct option is c.", chem).text == "C"


@pytest.mark.parametrize(
    "text, expected, how",
    [
        ("He has 3 + 4 = 7 apples. The answer is 7.", "7", "statement_number"),
        ("The answer is 12. Check: 12 + 3 = 15", "12", "statement_number"),
        ("So the total is $1,200.50", "1200.5", "last_number"),
        ("She keeps 8.0 of them", "8", "last_number"),
        ("Answer: -3", "-3", "statement_number"),
    ],
)
def test_parse_answer_free_form(text, expected, how):
    got = parse_answer(text, ())
    assert got is not None and (got.text, got.how, got.index, got.letter) == (expected, how, None, None)


def test_parse_answer_free_form_none():
    assert parse_answer("no numbers at all", ()) is None


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "text, verdict, critique",
    [
        ("Step 2 is wrong: 3+4 is 7.\nVerdict: wrong", "wrong", "Step 2 is wrong: 3+4 is 7."),
        ("All steps hold.\nVerdict: Correct.", "correct", "All steps hold."),
        ("Critique: fine.\n**Verdict:** uncertain", "uncertain", "fine."),
        ("The math slips.\nVerdict: incorrect", "wrong", "The math slips."),  # synonym
        ("Verdict: correct\nOn reflection it misses a step.\nVerdict: wrong", "wrong",
         "Verdict: correct\nOn reflection it misses a step."),  # the last verdict wins
        ("It holds up. My verdict is correct.", "correct", "It holds up."),
        ("Verdict: wrong\nQ: next question", "wrong", ""),
    ],
)
def test_parse_verdict(text, verdict, critique):
    got = parse_verdict(text, DEFAULT_VERDICTS)
    assert got is not None and (got.verdict, got.critique) == (verdict, critique)


def test_parse_verdict_none_and_custom_sets():
    assert parse_verdict("", DEFAULT_VERDICTS) is None
    assert parse_verdict("The reasoning seems fine.", DEFAULT_VERDICTS) is None
    assert parse_verdict("Verdict: maybe", DEFAULT_VERDICTS) is None
    # "incorrect" must never read as "correct"; without "wrong" configured it is unknown
    assert parse_verdict("Verdict: incorrect", ["correct", "uncertain"]) is None
    assert parse_verdict("Verdict: Good", ["good", "bad"]).verdict == "good"


# --------------------------------------------------------------------------- real teacher text


def _benchmark_module():
    path = REPO / "benchmarks" / "parser_coverage.py"
    spec = importlib.util.spec_from_file_location("parser_coverage", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


def test_parsers_on_real_tinyllm_teacher_outputs(shared_data):
    """Lower bounds from benchmarks/results/parser_coverage.json (measured: FLAN-T5 100 %
    parsed and = gold on arc/obqa/pubmedqa; LLaMA-2 19.9 % parsed overall, 81.7 % of those
    = gold; LLaMA-2 text with a new-question echo 24.8/33.2/2.2 %)."""
    data = shared_data / "tinyllm"
    if not (data / "teacher_outputs").is_dir():
        pytest.skip(f"no teacher outputs under {data}")
    bench = _benchmark_module()
    echo = re.compile(r"(?m)^\s*(?:Q|Question|Options)\s*:|Answer Choices:|llama rationale:")
    llama_n = llama_parsed = llama_gold = llama_echo = 0
    for ds in ("arc", "obqa", "pubmedqa"):
        outputs = bench.json.loads((data / "teacher_outputs" / f"{ds}_test_CoT_0.json").read_text())
        records = bench.read_records(data / ds / "test.json")
        flan_gold = 0
        for out, r in zip(outputs, records):
            flan, llama = bench.split_teachers(out)
            flan_clean, llama_clean = clean_rationale(flan), clean_rationale(llama)
            assert not echo.search(flan_clean) and not echo.search(llama_clean)  # run-ons are cut
            assert flan_clean.rstrip(".").endswith(r.answer.rstrip("."))  # echo after it is gone
            p = parse_answer(flan_clean, r.choices)
            flan_gold += p is not None and p.text == r.answer
            q = parse_answer(llama_clean, r.choices)
            llama_n += 1
            llama_echo += bool(echo.search(llama))
            llama_parsed += q is not None
            llama_gold += q is not None and q.text == r.answer
        assert flan_gold / len(outputs) >= 0.99, ds
    assert llama_parsed / llama_n >= 0.18
    assert llama_gold / llama_parsed >= 0.75
    assert llama_echo / llama_n >= 0.15  # the junk really was there before cutting


def test_gold_and_predicted_numbers_share_one_canonical_form():
    """A model's 3.14159265 equals a gold stored by the adapters as 3.141593 (one formatter)."""
    from tinyllm_ray.data.adapters.fields import normalise_number
    from tinyllm_ray.prompts.answers import format_number, normalize_number

    for raw in (3.14159265, 12.0, 2.5, 1200.5, -0.125):
        assert normalize_number(str(raw)) == normalise_number(raw) == format_number(raw)


@pytest.mark.parametrize(("text", "degenerate"), [
    ("", True), ("  \n ", True), ("........", True), ("llllllllllll", True), ("abababab", True),
    ("the the the the", True), ("noon", False), ("ok", False),
    ("3 + 4 = 7. The answer is 7.", False), ("Whales breathe air.", False),
])
def test_is_degenerate(text, degenerate):
    from tinyllm_ray.prompts import is_degenerate

    assert is_degenerate(text) is degenerate

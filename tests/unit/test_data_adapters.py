"""Every adapter on a realistic row in its public schema, plus the generic column map."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import ColumnMap
from tinyllm_ray.data.adapters import (
    ADAPTERS,
    adapt_anli,
    adapt_arc,
    adapt_bioasq,
    adapt_commonsense_qa,
    adapt_obqa,
    adapt_piqa,
    adapt_pubmedqa,
    adapt_riddlesense,
    adapt_svamp,
    adapt_tinyllm,
    get_adapter,
    make_generic_adapter,
    normalise_number,
)
from tinyllm_ray.data.schema import MCQRecord, RowError


def _rec(d: dict) -> MCQRecord:
    """Adapters output must always build a valid record."""
    return MCQRecord.from_dict(d)


def test_obqa_hub_row_with_fact() -> None:
    row = {
        "id": "7-980",
        "question_stem": "The sun is responsible for",
        "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                             "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                    "label": ["A", "B", "C", "D"]},
        "answerKey": "D",
        "fact1": "the sun is the source of energy for physical cycles on Earth",
    }
    r = _rec(adapt_obqa(row, "train-0"))
    assert r.id == "7-980"
    assert r.question == "The sun is responsible for"
    assert r.answer == "plants sprouting, blooming and wilting"
    assert r.answer_index == 3
    assert r.context == "the sun is the source of energy for physical cycles on Earth"


def test_obqa_main_config_has_no_context() -> None:
    row = {"id": "8-376", "question_stem": "Frilled sharks live far beneath the surface, so they are",
           "choices": {"text": ["Deep sea animals", "fish", "Long Sea Fish", "Far Sea Animals"],
                       "label": ["A", "B", "C", "D"]}, "answerKey": "A"}
    r = _rec(adapt_obqa(row, "x"))
    assert r.answer == "Deep sea animals" and r.context is None


def test_arc_letter_labels() -> None:
    row = {"id": "Mercury_SC_415702",
           "question": "George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?",
           "choices": {"text": ["dry palms", "wet palms", "palms covered with oil", "palms covered with lotion"],
                       "label": ["A", "B", "C", "D"]},
           "answerKey": "A"}
    r = _rec(adapt_arc(row, "x"))
    assert (r.id, r.answer, r.answer_index) == ("Mercury_SC_415702", "dry palms", 0)


def test_arc_numeric_labels_and_five_choices() -> None:
    row = {"id": "NYSEDREGENTS_2015_4_8", "question": "Which tool measures the mass of a rock?",
           "choices": {"text": ["ruler", "balance", "thermometer", "graduated cylinder"], "label": ["1", "2", "3", "4"]},
           "answerKey": "2"}
    assert _rec(adapt_arc(row, "x")).answer == "balance"
    row5 = {"id": "e5", "question": "q?", "choices": {"text": list("vwxyz"), "label": list("ABCDE")}, "answerKey": "E"}
    assert _rec(adapt_arc(row5, "x")).answer == "z"


def test_arc_cross_style_key_maps_by_position() -> None:
    row = {"id": "m", "question": "q?", "choices": {"text": ["a", "b", "c", "d"], "label": ["1", "2", "3", "4"]},
           "answerKey": "C"}
    assert _rec(adapt_arc(row, "x")).answer == "c"


def test_arc_unknown_key_is_bad_label() -> None:
    row = {"id": "m", "question": "q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "F"}
    with pytest.raises(RowError) as info:
        adapt_arc(row, "x")
    assert info.value.reason == "bad_label"


def test_piqa_row_and_hidden_test_label() -> None:
    row = {"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate",
           "sol2": "Pour it into a jar", "label": 1}
    r = _rec(adapt_piqa(row, "validation-41"))
    assert r.id == "validation-41"  # PIQA has no id column
    assert r.choices == ("Pour it onto a plate", "Pour it into a jar")
    assert r.answer == "Pour it into a jar"
    with pytest.raises(RowError) as info:
        adapt_piqa({**row, "label": -1}, "test-0")
    assert info.value.reason == "no_answer"


def test_riddlesense_row() -> None:
    row = {"answerKey": "B",
           "question": "What turns everything around, but does not move?",
           "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["side", "mirror", "street corner", "drive", "corner"]}}
    r = _rec(adapt_riddlesense(row, "train-3"))
    assert (r.id, r.answer, len(r.choices)) == ("train-3", "mirror", 5)


def test_pubmedqa_row_joins_context() -> None:
    row = {"pubid": 21645374,
           "question": "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?",
           "context": {"contexts": ["Programmed cell death (PCD) is the regulated death of cells.",
                                    "The following paper elucidates the role of mitochondrial dynamics."],
                       "labels": ["BACKGROUND", "RESULTS"], "meshes": ["Apoptosis"]},
           "long_answer": "Results depicted mitochondrial dynamics in vivo as PCD progresses.",
           "final_decision": "Yes"}
    r = _rec(adapt_pubmedqa(row, "x"))
    assert r.id == "21645374"
    assert r.choices == ("yes", "no", "maybe")
    assert r.answer == "yes"
    assert r.context == ("Programmed cell death (PCD) is the regulated death of cells.\n"
                         "The following paper elucidates the role of mitochondrial dynamics.")


def test_pubmedqa_unknown_decision() -> None:
    with pytest.raises(RowError) as info:
        adapt_pubmedqa({"pubid": 1, "question": "q?", "final_decision": "perhaps"}, "x")
    assert info.value.reason == "bad_label"


def test_bioasq_yesno_with_snippets_and_other_types() -> None:
    row = {"id": "56c1f03aef6e394741000046", "body": "Is the protein Papilin secreted?", "type": "yesno",
           "exact_answer": "yes",
           "snippets": [{"text": "Papilin is an extracellular matrix glycoprotein.", "document": "pubmed/1"},
                        {"text": "Secreted papilin ...", "document": "pubmed/2"}]}
    r = _rec(adapt_bioasq(row, "x"))
    assert (r.id, r.question, r.choices, r.answer) == (
        "56c1f03aef6e394741000046", "Is the protein Papilin secreted?", ("yes", "no"), "yes")
    assert r.context == "Papilin is an extracellular matrix glycoprotein.\nSecreted papilin ..."
    # Flattened HF-style variant: question/answer/context.
    r2 = _rec(adapt_bioasq({"id": "b2", "question": "Is X a kinase?", "answer": "No", "context": "X is not."}, "x"))
    assert (r2.answer, r2.context) == ("no", "X is not.")
    with pytest.raises(RowError) as info:
        adapt_bioasq({"id": "f", "body": "Which gene?", "type": "factoid", "exact_answer": [["BRCA1"]]}, "x")
    assert info.value.reason == "not_yesno"


def test_commonsense_qa_row_and_unlabelled_test() -> None:
    row = {"id": "075e483d21c29a511267ef62bedc0461",
           "question": "The sanctions against the school were a punishing blow, and they seemed to what the "
                       "efforts the school had made to change?",
           "question_concept": "punishing",
           "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"]},
           "answerKey": "A"}
    r = _rec(adapt_commonsense_qa(row, "x"))
    assert (r.id, r.answer, r.answer_index) == ("075e483d21c29a511267ef62bedc0461", "ignore", 0)
    with pytest.raises(RowError) as info:
        adapt_commonsense_qa({**row, "answerKey": ""}, "x")
    assert info.value.reason == "no_answer"


def test_svamp_row_is_free_form_with_normalised_answer() -> None:
    row = {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
           "Question": "How much do you have to pay to buy each pack?", "Equation": "( 76.0 - 25.0 )",
           "Answer": 51.0, "Type": "Subtraction"}
    r = _rec(adapt_svamp(row, "x"))
    assert r.id == "chal-1"
    assert r.question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
                          "How much do you have to pay to buy each pack?")
    assert r.choices == ()
    assert r.answer == "51"
    assert r.is_free_form


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(12.0, "12"), ("12.0", "12"), (12, "12"), (2.5, "2.5"), ("2.50", "2.5"), ("1,000", "1000"),
     (-3.0, "-3"), (0.333333333, "0.333333"), ("n/a", "n/a")],
)
def test_normalise_number(raw: object, expected: str) -> None:
    assert normalise_number(raw) == expected


def test_anli_row_labels() -> None:
    row = {"uid": "0fd0abfb-659e-4453-b196-c3a64d2d8267",
           "premise": "The Parma trolleybus system comprises four urban routes.",
           "hypothesis": "The trolleybus system has over 2 urban routes", "label": 0, "reason": ""}
    r = _rec(adapt_anli(row, "x"))
    assert r.id == "0fd0abfb-659e-4453-b196-c3a64d2d8267"
    assert r.choices == ("entailment", "neutral", "contradiction")
    assert r.answer == "entailment"
    assert "Premise: The Parma trolleybus system comprises four urban routes." in r.question
    assert "Hypothesis: The trolleybus system has over 2 urban routes" in r.question
    assert _rec(adapt_anli({**row, "label": 2}, "x")).answer == "contradiction"
    # Original ANLI jsonl spelling: context + letter label.
    orig = {"uid": "u", "context": "A premise.", "hypothesis": "A hypothesis.", "label": "n"}
    assert _rec(adapt_anli(orig, "x")).answer == "neutral"


def test_tinyllm_row() -> None:
    row = {"id": "8-343", "question": "The best way to save money is to",
           "choices": ["make more phone calls", "quit eating lunch out", "buy less with monopoly money",
                       "have lunch with friends"],
           "answer": "quit eating lunch out"}
    r = _rec(adapt_tinyllm(row, "x"))
    assert (r.id, r.answer_index) == ("8-343", 1)
    assert _rec(adapt_tinyllm({**row, "id": 0}, "x")).id == "0"  # PIQA files use int ids


def test_missing_fields_get_the_specific_reason() -> None:
    with pytest.raises(RowError) as info:
        adapt_arc({"id": "a", "question": "q?", "answerKey": "A"}, "x")
    assert info.value.reason == "missing_field"
    assert "'choices'" in info.value.detail
    # A missing question or answer is reported as what it means for the record.
    no_question = adapt_arc({"id": "a", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}, "x")
    with pytest.raises(RowError) as info:
        _rec(no_question)
    assert info.value.reason == "empty_question"
    with pytest.raises(RowError) as info:
        adapt_tinyllm({"id": "t", "question": "q?", "choices": ["a", "b"]}, "x")
    assert info.value.reason == "no_answer"
    with pytest.raises(RowError) as info:
        adapt_anli({"uid": "u", "premise": "P.", "hypothesis": " ", "label": 0}, "x")
    assert info.value.reason == "empty_question"


# --------------------------------------------------------------------------- generic


def test_generic_text_letter_and_index_answers() -> None:
    adapt = make_generic_adapter(ColumnMap(id="qid", question="prompt", choices="options", answer="gold"))
    base = {"qid": "g1", "prompt": "Pick the odd one", "options": ["cat", "dog", "car"]}
    assert adapt({**base, "gold": "car"}, "f")["answer"] == "car"
    assert adapt({**base, "gold": "C"}, "f")["answer"] == "car"
    assert adapt({**base, "gold": "b"}, "f")["answer"] == "dog"
    assert adapt({**base, "gold": 0}, "f")["answer"] == "cat"
    assert adapt({**base, "gold": 2.0}, "f")["answer"] == "car"  # CSV/pandas floats
    assert adapt({**base, "gold": "car"}, "f")["id"] == "g1"


def test_generic_text_beats_letter_when_a_choice_is_a_letter() -> None:
    adapt = make_generic_adapter(ColumnMap(question="q", choices="c", answer="a"))
    out = adapt({"q": "Which letter is a vowel?", "c": ["B", "A", "C"], "a": "A"}, "train-5")
    assert out["answer"] == "A" and out["id"] == "train-5"
    assert _rec(out).answer_index == 1


def test_generic_choices_from_csv_strings_and_hf_structs() -> None:
    adapt = make_generic_adapter(ColumnMap(question="q", choices="c", answer="a", context="ctx"))
    assert adapt({"q": "q", "c": '["x", "y"]', "a": "y", "ctx": "some text"}, "i")["choices"] == ["x", "y"]
    assert adapt({"q": "q", "c": "['x', 'y']", "a": 1, "ctx": None}, "i")["answer"] == "y"
    out = adapt({"q": "q", "c": {"text": ["x", "y"], "label": ["1", "2"]}, "a": "2", "ctx": "c"}, "i")
    assert out["answer"] == "y" and out["context"] == "c"
    with pytest.raises(RowError) as info:
        adapt({"q": "q", "c": "x; y", "a": "x"}, "i")
    assert info.value.reason == "bad_choices"


def test_generic_out_of_range_index_and_free_form() -> None:
    adapt = make_generic_adapter(ColumnMap(question="q", choices="c", answer="a"))
    with pytest.raises(RowError) as info:
        adapt({"q": "q", "c": ["x", "y"], "a": 5}, "i")
    assert info.value.reason == "bad_label"
    free = make_generic_adapter(ColumnMap(question="q", choices=None, answer="a"))
    out = free({"q": "What is 6 * 2?", "a": 12.0}, "i")
    assert out["choices"] == [] and out["answer"] == "12"


def test_registry_covers_every_named_dataset_and_flags_free_form() -> None:
    assert set(ADAPTERS) == {"obqa", "arc", "piqa", "riddlesense", "pubmedqa", "bioasq", "commonsense_qa",
                             "svamp", "anli", "tinyllm"}
    assert [n for n, a in ADAPTERS.items() if a.free_form] == ["svamp"]
    assert get_adapter("generic", ColumnMap(question="q", choices=None, answer="a")).free_form
    with pytest.raises(ValueError, match="known"):
        get_adapter("nope")
    assert ADAPTERS["arc"].missing_columns(["id", "question", "choices", "answer"]) == ["answerKey"]


def test_config_dataset_names_and_the_registry_agree() -> None:
    """``config.DatasetName`` is the one list of names; every name but the generated tasks has an adapter."""
    from tinyllm_ray.config import BUILTIN_DATASETS, DATASET_NAMES, GENERATED_DATASETS

    assert set(ADAPTERS) | set(BUILTIN_DATASETS) == set(DATASET_NAMES)
    for name in DATASET_NAMES:
        if name not in GENERATED_DATASETS:
            assert get_adapter(name, ColumnMap()).name == name
    with pytest.raises(ValueError, match="known: .*'anli'.*'synthetic'"):
        get_adapter("nope")

"""Fuzzing dataset files with hypothesis: every row is loaded, counted as skipped, or named in one error.

The promise under test (issue 11): rows with missing fields, wrong types, duplicate ids,
answers not among the choices, NaN, invalid UTF-8 bytes, a byte-order mark, CRLF line
ends, JSON-legal line separators (U+2028, U+0085) or megabyte-long texts, in JSON Lines,
JSON array or CSV files, go through :func:`~tinyllm_ray.data.loader.load_splits` to one of:

* loaded: ``rows read == rows in all splits + rows counted in LoadedData.skipped``, and
  every loaded record satisfies the :class:`MCQRecord` invariants;
* a :class:`UserError` (one line); a bad row's :class:`MalformedRowError` names the file
  and a line that exists.

Never another exception from inside the library. Found here: an invalid UTF-8 byte made
the whole file fail with a bare ``UnicodeDecodeError``; a byte-order mark made line 1 an
``invalid_json`` row; a JSON string holding U+2028 split one valid row into several
invalid ones (``str.splitlines``); ``choices: {"text": 0}`` raised a ``TypeError``; a
line nested thousands of brackets deep raised a ``RecursionError``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinyllm_ray.config import ColumnMap, DataConfig
from tinyllm_ray.data.adapters import ADAPTERS, get_adapter
from tinyllm_ray.data.loader import LoadedData, load_splits
from tinyllm_ray.data.schema import REASONS, MalformedRowError, MCQRecord, RowError
from tinyllm_ray.errors import UserError

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

texts = st.one_of(
    st.sampled_from(["alpha", "beta", "gamma", " beta ", "", "   ", "nan", "é\u2028x", "a\x85b", "\x0c", "\ud800",
                     "tab\there", "new\nline", "😀"]),
    st.text(max_size=12),
)
wrong = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.just(math.nan), st.just(math.inf),
                  st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from(["text", "label"]),
                                                                           st.integers(0, 2), max_size=2))
choices = st.one_of(st.just(["alpha", "beta", "gamma"]), st.lists(texts, max_size=4), wrong)


@st.composite
def fuzz_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A TinyLLM-layout row (``id, question, choices, answer[, context]``), each field possibly broken."""
    row: dict[str, Any] = {}
    for key, good, bad in [
        ("id", st.sampled_from(["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"]), st.one_of(wrong, texts)),
        ("question", st.sampled_from(["Which one?", "What is it?", "Why?"]), st.one_of(wrong, texts)),
        ("choices", st.just(["alpha", "beta", "gamma"]), choices),
        ("answer", st.sampled_from(["alpha", "beta", "gamma"]), st.one_of(wrong, texts)),
        ("context", st.none(), st.one_of(wrong, texts)),
    ]:
        how = draw(st.sampled_from(["good", "good", "good", "bad", "missing"]))
        if how != "missing":
            row[key] = draw(good if how == "good" else bad)
    if draw(st.booleans()):
        row[draw(st.sampled_from(["extra", "Question", "label"]))] = draw(st.one_of(wrong, texts))
    return row


JUNK_LINES = [b"", b"   ", b"{", b"not json", b"0", b"[1, 2]", b"null", b'"just a string"', b"\xff\xfe\xfa",
              b'{"id": "x\xc3", "question": "q?", "choices": ["a", "b"], "answer": "a"}', b"\x00\x01",
              b'{"id": "\\ud800", "question": "q?", "choices": ["a", "b"], "answer": "a"}', b"{}",
              b"[" * 5000 + b"]" * 5000, b'{"id": "d", "question": "q?", "choices": "' + b"[" * 5000 + b'", "answer": "a"}',
              b'{"id": "s", "question": "q?", "choices": {"text": 0, "label": "AB"}, "answer": "a"}']


def rows_read(lines: list[bytes]) -> int:
    """Rows a JSON Lines file holds: its non-blank lines (blank lines are no rows)."""
    return sum(1 for ln in lines if ln.decode("utf-8", "surrogateescape").strip())


def validation_file(directory: Path, n: int = 3) -> Path:
    """Good validation rows of their own (so a fuzzed train file need not be big enough to carve one)."""
    path = directory / "validation.jsonl"
    rows = [{"id": f"v{i}", "question": f"Validation {i}?", "choices": ["x", "y"], "answer": "y"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_outcome(cfg: DataConfig, path: Path, n_rows: int, n_lines: int | None) -> LoadedData | None:
    """Load and check the promise; returns the data when it loaded."""
    try:
        loaded = load_splits(cfg)
    except MalformedRowError as exc:
        assert exc.source == str(path) and exc.reason in REASONS, exc
        assert 1 <= exc.row <= (n_lines if n_lines is not None else n_rows), exc
        assert "\n" not in str(exc) and str(path) in str(exc)
        event(f"malformed: {exc.reason}")
        return None
    except UserError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), exc
        event(f"user error: {type(exc).__name__}")
        return None
    kept = sum(loaded.sizes().values())
    assert kept + loaded.total_skipped() == n_rows, (loaded.sizes(), loaded.skipped, n_rows)
    if cfg.on_malformed == "error":
        assert not any(r for r in loaded.skipped.values() if set(r) - {"split_overlap"}), loaded.skipped
    ids = [r.id for recs in loaded.splits.values() for r in recs]
    assert len(ids) == len(set(ids))
    for recs in loaded.splits.values():
        for r in recs:
            assert isinstance(r, MCQRecord) and r.id and r.question and r.answer
            assert len(r.choices) >= 2 and r.answer in r.choices and all(r.choices)
            for text in (r.id, r.question, r.answer, *r.choices, r.context or ""):
                text.encode("utf-8")  # storable: no lone surrogate reached a record
    for reasons in loaded.skipped.values():
        assert set(reasons) <= {*REASONS, "split_overlap"} and all(n > 0 for n in reasons.values())
    event("loaded")
    return loaded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzrows")


@SETTINGS
@given(
    st.lists(st.one_of(fuzz_rows().map(lambda r: ("row", r)), st.sampled_from(JUNK_LINES).map(lambda b: ("junk", b))),
             min_size=2, max_size=14),
    st.booleans(), st.booleans(), st.booleans(),
    st.sampled_from(["skip", "error"]), st.sampled_from(["tinyllm", "obqa", "arc", "generic"]),
    st.sampled_from(["drop", "error"]),
)
def test_jsonl_rows_are_loaded_skipped_or_named(data_dir, items, bom, crlf, ascii_only, on_malformed, name, overlap):
    lines = [json.dumps(x, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") if kind == "row" else x
             for kind, x in items]
    data = (b"\r\n" if crlf else b"\n").join(lines) + b"\n"
    path = data_dir / "train.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    columns = {"id": "id", "question": "question", "choices": "choices", "answer": "answer"} if name == "generic" \
        else None
    files = {"train": str(path), "validation": str(validation_file(data_dir))}
    cfg = DataConfig(name=name, files=files, on_malformed=on_malformed, columns=columns, split_overlap=overlap)
    if next((ln for ln in lines if ln.strip()), b"").strip().startswith(b"["):
        return  # a file starting with "[" is one JSON array (covered below)
    check_outcome(cfg, path, rows_read(lines) + 3, len(lines))


@SETTINGS
@given(st.lists(fuzz_rows(), min_size=0, max_size=12), st.sampled_from(["skip", "error"]),
       st.sampled_from(["array", "wrapped"]))
def test_json_array_rows_are_loaded_skipped_or_named(data_dir, rows, on_malformed, shape):
    path = data_dir / "train.json"
    body: Any = rows if shape == "array" else {"questions": rows}
    path.write_text(json.dumps(body), encoding="utf-8", errors="surrogatepass")
    files = {"train": str(path), "validation": str(validation_file(data_dir))}
    cfg = DataConfig(name="tinyllm", files=files, on_malformed=on_malformed, split_overlap="drop")
    n = len(rows) if rows and (shape == "array" or all(isinstance(r, dict) for r in rows)) else 1
    if shape == "wrapped" and not rows:
        n = 1  # {"questions": []}: one object, no row list to unwrap
    if shape == "array" and not rows:
        n = 0
    check_outcome(cfg, path, n + 3, None)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", "question", "choices", "answer"], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    return buf.getvalue()


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(fuzz_rows(), min_size=1, max_size=8), st.booleans(), st.sampled_from(["skip", "error"]))
def test_csv_rows_are_loaded_skipped_or_named(data_dir, rows, bom, on_malformed):
    """CSV goes through the ``datasets`` builder (slow: few examples); a cell it cannot read is one DataLoadError."""
    rows = [{k: v for k, v in r.items() if k != "id" or isinstance(v, str)} for r in rows]
    for r in rows:
        r.setdefault("id", "")
    text = _csv_text(rows)
    path = data_dir / "train.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass"))
    cfg = DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed=on_malformed, split_overlap="drop")
    check_outcome(cfg, path, len(rows), None)


# --------------------------------------------------------------------------- single cases worth naming


def _good(i: int, **over: Any) -> dict[str, Any]:
    return {"id": f"r{i}", "question": f"Question {i}?", "choices": ["alpha", "beta"], "answer": "beta", **over}


def test_an_invalid_utf8_byte_costs_its_row_with_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(_good(i)).encode() for i in range(4)]
    lines[2] = lines[2].replace(b"Question", b"Qu\xffestion")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(MalformedRowError) as info:
        load_splits(DataConfig(name="tinyllm", files={"train": str(path)}))
    assert (info.value.row, info.value.reason, info.value.unit) == (3, "invalid_text", "line")
    assert "byte 0xff" in str(info.value)
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed="skip"))
    assert sum(loaded.sizes().values()) == 3 and loaded.skipped["train"] == {"invalid_text": 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_byte_order_mark_and_crlf_line_ends_are_read(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    rows = [_good(i) for i in range(5)]
    body = json.dumps(rows) if suffix == ".json" else "\r\n".join(json.dumps(r) for r in rows)
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(path)}))
    assert sum(loaded.sizes().values()) == 5 and not loaded.total_skipped()


def test_a_line_separator_inside_a_json_string_does_not_split_the_row(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [_good(i, question=f"Line\u2028sep\x85next\x0c{i}?") for i in range(4)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "\n\n", encoding="utf-8")
    path.write_bytes(path.read_bytes() + json.dumps(_good(9, answer="zeta")).encode() + b"\n")
    with pytest.raises(MalformedRowError) as info:
        load_splits(DataConfig(name="tinyllm", files={"train": str(path)}))
    assert info.value.row == 7 and info.value.reason == "answer_not_in_choices"  # the line an editor shows
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed="skip"))
    assert sum(loaded.sizes().values()) == 4 and loaded.skipped["train"] == {"answer_not_in_choices": 1}


def test_megabyte_rows_load_and_a_megabyte_junk_line_is_one_counted_row(tmp_path):
    path = tmp_path / "train.jsonl"
    huge = "why " * 250_000  # 1 MB question
    lines = [json.dumps(_good(0, question=huge)), json.dumps(_good(1)), "{" + "x" * 1_000_000, json.dumps(_good(2))]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed="skip"))
    assert sum(loaded.sizes().values()) == 3 and loaded.skipped["train"] == {"invalid_json": 1}
    assert any(len(r.question) == len(huge.strip()) for recs in loaded.splits.values() for r in recs)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf", b"[]", b"{}", b"null", b"\xff\xff"])
def test_an_empty_or_valueless_file_is_one_user_error(tmp_path, content):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    for mode in ("error", "skip"):
        with pytest.raises(UserError) as info:
            load_splits(DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed=mode))
        assert "\n" not in str(info.value)


def test_duplicate_ids_are_one_error_or_counted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_good(i % 3)) + "\n" for i in range(6)))
    with pytest.raises(MalformedRowError, match="line 4: duplicate_id"):
        load_splits(DataConfig(name="tinyllm", files={"train": str(path)}))
    loaded = load_splits(DataConfig(name="tinyllm", files={"train": str(path)}, on_malformed="skip"))
    assert sum(loaded.sizes().values()) == 3 and loaded.skipped["train"] == {"duplicate_id": 3}


# --------------------------------------------------------------------------- every adapter, harsher values

harsh = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "A", "b", "1", "-1", "²", "٣", "1e400", "inf", "nan", "yes", "No", "maybe", "#### 12",
                     "$1,200.50", "9" * 400, "[", "['a', 'b']", '["a", "b"]', "(", "\ud800", "12 apples"]),
    st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=5), st.integers(), st.none(), st.floats()), max_size=4),
    st.fixed_dictionaries({"text": st.one_of(st.lists(st.text(max_size=5), max_size=4), st.integers(), st.text()),
                           "label": st.one_of(st.lists(st.sampled_from(list("ABCD1234")), max_size=4),
                                              st.integers(), st.none())}),
    st.lists(st.fixed_dictionaries({"text": st.text(max_size=5), "label": st.sampled_from(list("ABC"))}),
             max_size=3),
    st.dictionaries(st.sampled_from(["contexts", "text", "passages", "x"]),
                    st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)), max_size=2),
)
_LETTERED = {"id": "q1", "question": "Which?", "choices": {"text": ["sun", "moon", "star"], "label": ["A", "B", "C"]},
             "answerKey": "B"}
#: One valid row per adapter in its public schema; the fuzz breaks one or two of its fields.
TEMPLATES: dict[str, dict[str, Any]] = {
    "tinyllm": {"id": "t1", "question": "Which?", "choices": ["a", "b"], "answer": "b", "context": "c"},
    "obqa": {**{k: v for k, v in _LETTERED.items() if k != "question"}, "question_stem": "Which?", "fact1": "f"},
    "arc": _LETTERED, "riddlesense": _LETTERED, "commonsense_qa": {**_LETTERED, "question": {"stem": "Which?"}},
    "piqa": {"goal": "Open a jar", "sol1": "twist", "sol2": "shout", "label": 0},
    "pubmedqa": {"pubid": 7, "question": "Does it?", "context": {"contexts": ["p1", "p2"]}, "final_decision": "yes"},
    "bioasq": {"id": "b1", "body": "Is it?", "type": "yesno", "exact_answer": ["yes"], "snippets": [{"text": "s"}]},
    "svamp": {"ID": "s1", "Body": "Ann has 3.", "Question": "How many?", "Answer": 3.0},
    "anli": {"uid": "a1", "premise": "It rains.", "hypothesis": "It is wet.", "label": 0},
    "generic": {"qid": "g1", "q": "Which?", "opts": ["x", "y"], "gold": "B", "ctx": ["p", "q"]},
    "generic_free": {"q": "How many?", "gold": "#### 12", "ctx": "c"},
}
GENERIC = {"generic": ColumnMap(id="qid", question="q", choices="opts", answer="gold", context="ctx"),
           "generic_free": ColumnMap(question="q", choices=None, answer="gold", context="ctx")}


def test_every_template_row_is_valid():
    """The fuzz below starts from valid rows: each template must load as it is."""
    assert set(TEMPLATES) >= set(ADAPTERS)
    for name, row in TEMPLATES.items():
        MCQRecord.from_dict(get_adapter(name.split("_free")[0], GENERIC.get(name)).fn(row, "train-0"))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(TEMPLATES)), st.lists(st.tuples(harsh, st.booleans()), min_size=1, max_size=2),
       st.data())
def test_every_adapter_turns_a_broken_template_row_into_a_record_or_a_row_error(name, edits, data):
    row = dict(TEMPLATES[name])
    for value, delete in edits:
        key = data.draw(st.sampled_from(sorted(row) or ["x"]))
        if delete:
            row.pop(key, None)
        else:
            row[key] = value
    adapter = get_adapter(name.split("_free")[0], GENERIC.get(name))
    _record_or_row_error(name, lambda: adapter.fn(row, "train-0"))


def _record_or_row_error(name: str, convert: Callable[[], dict]) -> None:
    """The property of every adapter: a valid record, or a RowError with a known reason and a detail."""
    try:
        rec = MCQRecord.from_dict(convert())
    except RowError as exc:
        assert exc.reason in REASONS and exc.detail
        event(f"{name}: {exc.reason}")
        return
    event(f"{name}: record")
    assert rec.question and rec.answer and (not rec.choices or rec.answer in rec.choices)
    assert len(rec.choices) != 1


ADAPTER_FIELDS = ["id", "question", "question_stem", "choices", "answer", "answerKey", "label", "goal", "sol1", "sol2",
                  "final_decision", "context", "Question", "Answer", "Body", "premise", "hypothesis", "uid", "pubid",
                  "body", "exact_answer", "type", "stem", "Equation", "ID", "contexts", "question_concept", "ideal_answer"]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(ADAPTERS)), st.dictionaries(st.sampled_from(ADAPTER_FIELDS), harsh, max_size=9))
def test_every_adapter_turns_a_harsh_row_into_a_valid_record_or_a_row_error(name, row):
    _record_or_row_error(name, lambda: ADAPTERS[name](row, "train-0"))


@pytest.mark.parametrize("bad", [b"\xff\xfe broken", b'{"id": "r9", "question": "Q?", "choices": {"text": 0}, "answer": "a"}',
                                 b"[" * 5000, b'{"id": "r1", "question": "dup?", "choices": ["a", "b"], "answer": "a"}'])
def test_cli_data_names_the_file_and_line_of_a_bad_row_with_exit_2(tmp_path, capsys, monkeypatch, bad):
    import ray

    from tinyllm_ray import cli

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("`tinyllm-ray data` must not start Ray"))
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([json.dumps(_good(i)).encode() for i in range(3)] + [bad]) + b"\n")
    code = cli.main(["data", "data.name=tinyllm", f"data.files.train={path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"tinyllm-ray data: {path}: line 4: ") and len(err.strip().splitlines()) == 1, err

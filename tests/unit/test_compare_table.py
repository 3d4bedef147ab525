"""The comparison table: mean ± sd per setting and difficulty, teachers' rows, contributions,
claims computed from the numbers (never written in advance), Markdown shape, JSON, PNG."""

from __future__ import annotations

import json
import math

import pytest

from tinyllm_ray.compare.table import SCHEMA_VERSION, aggregate, mean_sd, plot_table, render_markdown


def seed(s: int, acc: float, by: dict | None = None) -> dict:
    return {"seed": s, "accuracy": acc, "correct": int(acc * 10), "total": 10, "by_difficulty": by or {}}


def setting(name: str, group: str, accs: list[float], teachers=(), by=None, **kw) -> dict:
    return {"setting": name, "description": f"{name} desc", "group": group, "teachers": list(teachers),
            "status": "ok", "error": None, "seeds": [seed(i, a, by and by[i]) for i, a in enumerate(accs)], **kw}


def doc_fixture() -> dict:
    by = [{"1": [4, 5], "2": [1, 5]}, {"1": [5, 5], "2": [2, 5]}]
    results = [
        setting("label_only", "label_only", [0.4, 0.5], by=by),
        setting("dss_a", "dss", [0.5, 0.5], ["a"]),
        setting("tinyllm", "tinyllm", [0.7, 0.8], ["a", "b", "c"]),
        setting("loo_a", "leave_one_out", [0.6, 0.6], ["b", "c"]),
        setting("mm_1cot", "minds_mirror", [0.3], ["a_cot"]),
        setting("mm_cots", "minds_mirror", [0.2], ["a_cot"]),
        {"setting": "mm_cots_selfeval", "description": "d", "group": "minds_mirror", "teachers": ["a_cot"],
         "status": "failed", "error": "RuntimeError: boom", "seeds": []},
        setting("tinyllm_prefix_encoder", "prefix", [0.75, 0.85], ["a", "b", "c"]),
    ]
    teachers = [{"teacher": "a", "model": "tiny:a", "prompt": "cot", "accuracy": 0.9, "correct": 9, "total": 10,
                 "by_difficulty": {"1": [5, 5], "2": [4, 5]}},
                {"teacher": "b", "model": "tiny:b", "status": "failed", "error": "no engine"}]
    return aggregate(results, teachers, {"mode": "default", "steps": 10})


def test_mean_sd() -> None:
    assert mean_sd([]) == (None, None)
    assert mean_sd([0.5]) == (0.5, None)
    m, s = mean_sd([0.4, 0.5, 0.6])
    assert m == pytest.approx(0.5) and s == pytest.approx(0.1)


def test_aggregate_per_setting_and_difficulty() -> None:
    doc = doc_fixture()
    assert doc["schema_version"] == SCHEMA_VERSION
    by = {s["setting"]: s for s in doc["settings"]}
    assert by["label_only"]["mean"] == pytest.approx(0.45)
    assert by["label_only"]["sd"] == pytest.approx(math.sqrt(0.005))
    assert by["label_only"]["by_difficulty"]["1"]["mean"] == pytest.approx(0.9)
    assert by["label_only"]["by_difficulty"]["2"]["mean"] == pytest.approx(0.3)
    assert by["mm_1cot"]["sd"] is None and by["mm_1cot"]["n_seeds"] == 1
    assert by["mm_cots_selfeval"]["status"] == "failed" and by["mm_cots_selfeval"]["mean"] is None
    assert doc["difficulties"] == ["1", "2"]
    t = {r["teacher"]: r for r in doc["teachers"]}
    assert t["a"]["mean"] == 0.9 and t["a"]["by_difficulty"]["2"]["mean"] == pytest.approx(0.8)
    assert t["b"]["status"] == "failed" and t["b"]["mean"] is None


def test_contributions_are_all_minus_leave_one_out() -> None:
    doc = doc_fixture()
    assert doc["contributions"] == [
        {"teacher": "a", "all": pytest.approx(0.75), "without_setting": "loo_a", "without": pytest.approx(0.6),
         "contribution": pytest.approx(0.15)}]
    # two teachers: "without b" is the single-teacher (dss) setting of the other one
    two = aggregate([setting("tinyllm", "tinyllm", [0.5], ["a", "b"]), setting("dss_a", "dss", [0.75], ["a"]),
                     setting("dss_b", "dss", [0.25], ["b"])], [])
    assert [(c["teacher"], c["without_setting"], c["contribution"]) for c in two["contributions"]] == [
        ("a", "dss_b", pytest.approx(0.25)), ("b", "dss_a", pytest.approx(-0.25))]
    one = aggregate([setting("tinyllm", "tinyllm", [0.5], ["a"]), setting("label_only", "label_only", [0.5])], [])
    assert one["contributions"][0]["without_setting"] == "label_only"


def test_claims_follow_the_numbers_both_ways() -> None:
    doc = doc_fixture()
    c = {x["question"]: x for x in doc["claims"]}
    lab = c["TinyLLM: does the multi-teacher student beat label-only fine-tuning?"]
    assert lab["answer"] is True and ": higher" in lab["text"]
    vs_teacher = c["TinyLLM: does the student beat teacher a itself?"]
    assert vs_teacher["answer"] is False and "not higher" in vs_teacher["text"]
    cots = c["Mind's Mirror: do several CoTs beat one?"]
    assert cots["answer"] is False and not cots["conclusive"] and "not conclusive" in cots["text"]
    se = c["Mind's Mirror: does self-evaluation add to several CoTs?"]
    assert se["answer"] is None and "not measured" in se["text"]
    # flipping the numbers flips the words: nothing is hard-coded
    flipped = aggregate([setting("tinyllm", "tinyllm", [0.1, 0.1]), setting("label_only", "label_only", [0.9, 0.9])],
                        [])
    assert flipped["claims"][0]["answer"] is False and "not higher" in flipped["claims"][0]["text"]


def test_markdown_shape() -> None:
    doc = doc_fixture()
    md = render_markdown(doc)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| setting"))
    width = lines[header].count("|")
    table = []
    for line in lines[header:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert all(line.count("|") == width for line in table)
    assert len(table) == 2 + len(doc["settings"]) + len(doc["teachers"])
    assert "difficulty 1" in lines[header] and "0.450 ± 0.071" in md
    assert "teacher a (cot prompt, served by vLLM)" in md and "teacher b (answer prompt" in md and "failed: RuntimeError: boom" in md
    assert "## Each teacher's contribution" in md and "+0.150" in md
    assert "## The papers' claims" in md


def test_json_round_trips_and_png_is_written(tmp_path) -> None:
    doc = doc_fixture()
    again = json.loads(json.dumps(doc))
    assert set(again) >= {"schema_version", "meta", "difficulties", "settings", "teachers", "contributions", "claims"}
    for s in again["settings"]:
        assert set(s) >= {"setting", "description", "teachers", "status", "n_seeds", "mean", "sd", "by_difficulty"}
    out = plot_table(doc, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and out.endswith("c.png")
    one = aggregate([setting("label_only", "label_only", [0.5])], [])
    plot_table(one, tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 0


def test_by_difficulty_reads_arithmetic_ids_and_buckets_the_rest() -> None:
    from tinyllm_ray.compare.run import by_difficulty

    preds = [{"id": "arith-test-d2-00001", "correct": True}, {"id": "arith-test-d2-00002", "correct": False},
             {"id": "arith-test-d3-00003", "correct": True}]
    assert by_difficulty("arithmetic", preds) == {"2": [1, 2], "3": [1, 1]}
    assert by_difficulty("synthetic", preds) == {"all": [2, 3]}


def test_failed_trials_are_rows_with_their_error_and_the_others_are_kept(tmp_path) -> None:
    from tinyllm_ray.compare.run import collect_results
    from tinyllm_ray.compare.settings import Setting

    settings = [Setting("label_only", "label_only", "d"), Setting("tinyllm", "tinyllm", "d", teachers=("a",)),
                Setting("dss_a", "dss", "d", teachers=("a",))]
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "label_only.json").write_text(json.dumps(setting("label_only", "label_only", [0.5])))
    half = setting("tinyllm", "tinyllm", [0.6], ["a"], status="failed", error="RuntimeError: seed 1 died")
    (tmp_path / "trials" / "tinyllm.json").write_text(json.dumps(half))
    res = collect_results(settings, str(tmp_path), {"dss_a": "ActorDiedError: gone"})
    assert [r["status"] for r in res] == ["ok", "failed", "failed"]
    assert res[1]["error"] == "RuntimeError: seed 1 died" and len(res[1]["seeds"]) == 1
    assert res[2]["error"] == "ActorDiedError: gone" and res[2]["seeds"] == []
    doc = aggregate(res, [])
    assert [s["status"] for s in doc["settings"]] == ["ok", "failed", "failed"]
    assert "failed: ActorDiedError: gone" in render_markdown(doc)

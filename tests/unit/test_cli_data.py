"""``tinyllm-ray data``: the dataset as each stage sees it, with no Ray and no model.

Each CLI test calls ``cli.main([...])`` as the console script does, with ``ray.init`` made
to fail; what the command shows is compared with the owners' own functions
(``build_prompt``, ``build_task_groups``), never with copied strings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_ray import cli
from tinyllm_ray.config import load_config
from tinyllm_ray.data import load_splits
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.data.splits import normalise_question, split_overlap
from tinyllm_ray.student.tasks import TaskPlan, build_task_groups
from tinyllm_ray.teachers.prompt_rows import build_prompt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("`tinyllm-ray data` must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)


def run_data(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["data", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def data_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run_data(capsys, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generic_args(train: Path, *more: str) -> list[str]:
    return ["data.name=generic", f"data.files.train={train}", "data.columns.id=qid", "data.columns.question=q",
            "data.columns.choices=opts", "data.columns.answer=gold", *more]


def test_text_report_has_every_section(capsys) -> None:
    code, out, err = run_data(capsys)
    assert code == 0, err
    for section in ("dataset: synthetic", "splits", "skipped rows", "overlap between splits", "examples: 2 of 256 train",
                    "--- example 1: syn-train-00000", "--- example 2: syn-train-00001",
                    "teacher prompt: llama (teacher_forcing), qwen (teacher_forcing)",
                    "student task answer", "student task rationale:llama", "student task rationale:qwen"):
        assert section in out, section
    assert "--- example 3" not in out


def test_json_shows_what_the_teachers_and_the_student_get(capsys) -> None:
    report = data_json(capsys, "--show", "3")
    cfg = load_config("demo_cpu")
    loaded = load_splits(cfg.data)
    train = loaded.splits["train"]
    assert report["splits"]["train"]["rows"] == len(train)
    assert [i["id"] for i in report["examples"]["items"]] == [r.id for r in train[:3]]
    plan = TaskPlan.from_config(cfg)
    for item, record in zip(report["examples"]["items"], train):
        assert [p["prompt"] for p in item["teacher_prompts"]] == [
            build_prompt(t, record, train, cfg.prompts) for t in cfg.teachers
        ]
        (answer,) = build_task_groups([record], [], plan).rows
        tasks = {t["task"]: t for t in item["student"]}
        assert list(tasks) == list(plan.names)
        assert (tasks["answer"]["input"], tasks["answer"]["target"]) == (answer["input"], answer["target"])
        assert tasks["rationale:llama"]["input"] == plan.prefixes["rationale:llama"] + answer["source"]
        assert tasks["rationale:llama"]["weight"] == plan.weights["rationale:llama"]


def test_arithmetic_examples_show_their_gold_solution(capsys) -> None:
    report = data_json(capsys, "--show", "1", "--split", "test", "data.name=arithmetic", "data.arithmetic.form=free")
    assert set(report["splits"]) == {"train", "validation", "test"}
    assert all(o["shared_questions"] == 0 for o in report["overlap"])
    (item,) = report["examples"]["items"]
    assert item["id"].startswith("arith-test-d1-") and item["choices"] == []
    assert item["gold_solution"].endswith(f"The answer is {item['answer']}.")


def test_self_evaluation_task_is_shown_when_enabled(capsys) -> None:
    report = data_json(capsys, "--show", "1", "self_eval.enabled=true")
    tasks = {t["task"]: t for t in report["examples"]["items"][0]["student"]}
    for task, prefix in (("self_eval_verdict", "verdict: "), ("self_eval_critique", "critique: ")):
        assert tasks[task]["input"].startswith(prefix) and "Proposed reasoning:" in tasks[task]["input"]


def test_skipped_rows_and_overlap_between_splits(tmp_path, capsys) -> None:
    rows = [{"qid": f"t{i}", "q": f"Which number is {i}?", "opts": [str(i), "x"], "gold": str(i)} for i in range(12)]
    rows.append({"qid": "bad", "q": "No gold here?", "opts": ["a", "b"], "gold": "c"})
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"qid": "x1", "q": "which NUMBER is 3", "opts": ["3", "y"], "gold": "3"},  # train's t3, re-cased
        {"qid": "x2", "q": "Something new?", "opts": ["a", "b"], "gold": "a"},
    ])
    args = generic_args(train, f"data.files.test={test}", "data.files.validation=" + str(test),
                        "data.on_malformed=skip")
    report = data_json(capsys, "--show", "0", *args)
    assert report["skipped"] == {"train": {"answer_not_in_choices": 1}}
    assert report["examples"]["items"] == []
    overlap = {tuple(o["splits"]): o for o in report["overlap"]}
    assert overlap[("train", "test")]["shared_questions"] == 1
    assert overlap[("train", "test")]["shared_examples"] == 0  # t3 offers other choices than x1
    assert overlap[("train", "test")]["examples"] == [["t3", "x1"]]
    assert overlap[("validation", "test")]["shared_examples"] == 2  # the same file twice
    code, out, _ = run_data(capsys, "--show", "0", *args)
    assert code == 0 and "answer_not_in_choices" in out and "t3 = x1" in out
    assert "refuse this dataset until data.split_overlap is drop" in out  # shown, not raised
    # The stages refuse it; `drop` removes the shared examples from the earlier split, counted by reason.
    with pytest.raises(Exception, match=r"validation ~ test: 2 .*both read from .*test\.jsonl"):
        load_splits(load_config("demo_cpu", args).data)
    dropped = data_json(capsys, "--show", "0", *args, "data.split_overlap=drop")
    assert dropped["skipped"]["validation"] == {"split_overlap": 2}
    assert dropped["splits"]["validation"]["rows"] == 0


def test_config_error_is_one_line_exit_2(capsys) -> None:
    code, _, err = run_data(capsys, "data.arithmetic.form=essay")
    assert code == 2 and "\n" not in err and err.startswith("tinyllm-ray data: "), err
    assert "data.arithmetic.form" in err


def test_a_split_the_dataset_lacks_is_one_line_exit_2(tmp_path, capsys) -> None:
    rows = [{"qid": f"t{i}", "q": f"Which is {i}?", "opts": [str(i), "x"], "gold": str(i)} for i in range(10)]
    code, _, err = run_data(capsys, "--split", "test", *generic_args(write_jsonl(tmp_path / "train.jsonl", rows)))
    assert code == 2 and "\n" not in err and err.startswith("tinyllm-ray data: "), err
    assert "no 'test' split" in err


def test_question_overlap_counts_distinct_normalised_questions() -> None:
    def rec(i: str, q: str) -> MCQRecord:
        return MCQRecord(id=i, question=q, choices=("a", "b"), answer="a")

    assert normalise_question("  What's 2+2?\n") == normalise_question("what s 2 2")
    splits = {"train": [rec("a", "Is it red?"), rec("b", "is it RED"), rec("c", "Blue?")],
              "test": [rec("z", "Is it red"), rec("y", "Green?")]}
    assert split_overlap(splits) == [{"splits": ["train", "test"], "shared_examples": 1, "shared_questions": 1,
                                      "examples": [["a", "z"]]}]


def test_the_command_imports_no_ray_and_no_model_library() -> None:
    """Fast because nothing heavy is imported: checked in a fresh interpreter (~2 s)."""
    code = ("import sys; from tinyllm_ray import cli; rc = cli.main(['data', '--show', '1']); "
            "heavy = [m for m in ('ray', 'vllm', 'torch', 'transformers', 'deepspeed') if m in sys.modules]; "
            "sys.exit(f'{rc} {heavy}' if rc or heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--- example 1" in proc.stdout

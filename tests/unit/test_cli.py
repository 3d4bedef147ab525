"""The CLI's contract with the user: a mistake is one line and exit 2, before Ray starts.

Each test calls ``cli.main([...])`` as the console script does; Ray is made impossible to
start (``ray.init`` raises), so a test that passed would also pass with no cluster and no
model: every refusal here is a pre-flight check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyllm_ray import cli
from tinyllm_ray.errors import GenerationError, StreamingError, TaskDataError
from tinyllm_ray.jobs.run import run_failure


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("a pre-flight check must refuse this before Ray starts")

    monkeypatch.setattr(ray, "init", refuse)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip()


def storage(tmp_path: Path) -> list[str]:
    return [f"runtime.storage_path={tmp_path / 'runs'}", "runtime.run_name=clitest"]


def one_line(code: int, err: str, command: str) -> str:
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"tinyllm-ray {command}: "), err
    return err


def test_train_before_generate(tmp_path, capsys) -> None:
    err = one_line(*run_cli(capsys, "train", *storage(tmp_path)), "train")
    assert f"no rationale store at {tmp_path / 'runs' / 'clitest' / 'rationales'}" in err
    assert "run `tinyllm-ray generate`" in err


def test_eval_on_a_split_the_dataset_does_not_have(tmp_path, capsys) -> None:
    rows = [{"qid": f"q{i}", "q": f"Which is {i}?", "opts": [str(i), "x"], "gold": str(i)} for i in range(20)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["eval", "--split", "test", "--model", str(tmp_path), "data.name=generic", f"data.files.train={data}",
            "data.columns.id=qid", "data.columns.question=q", "data.columns.choices=opts", "data.columns.answer=gold",
            *storage(tmp_path)]
    err = one_line(*run_cli(capsys, *args), "eval")
    assert "no 'test' split (available: train, validation)" in err


def test_eval_unknown_teacher(tmp_path, capsys) -> None:
    err = one_line(*run_cli(capsys, "eval", "--teacher", "nope", *storage(tmp_path)), "eval")
    assert "--teacher nope: no such teacher" in err and "llama, qwen" in err


def test_eval_without_a_trained_student(tmp_path, capsys) -> None:
    err = one_line(*run_cli(capsys, "eval", *storage(tmp_path)), "eval")
    assert "no trained student" in err and "tinyllm-ray train" in err


def test_missing_config_file_is_not_replaced_by_the_shipped_one(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "config", "--config", "./mine/demo_cpu.yaml")
    assert code == 2 and err.startswith("tinyllm-ray config: ") and "Traceback" not in err, err
    assert "./mine/demo_cpu.yaml" in err and "not found" in err


def test_invalid_override_is_one_line_per_field(capsys) -> None:
    code, err = run_cli(capsys, "config", "train.precision=fp8")
    assert code == 2 and err.startswith("tinyllm-ray config: ") and "train.precision" in err, err


def test_run_refuses_what_streaming_cannot_train_before_generation(tmp_path, capsys, monkeypatch) -> None:
    from tinyllm_ray.teachers import pipeline

    monkeypatch.setattr(pipeline, "GenerationRun", None)  # any generation attempt would crash loudly
    args = ["run", "loss.schedule=two_stage", "self_eval.enabled=true", *storage(tmp_path)]
    err = one_line(*run_cli(capsys, *args), "run")
    assert "loss.schedule: joint" in err and "`tinyllm-ray generate` then `tinyllm-ray train`" in err
    assert not (tmp_path / "runs").exists()  # nothing was written either


def test_internal_errors_keep_their_traceback(monkeypatch, capsys) -> None:
    from tinyllm_ray import jobs

    def broken(cfg):
        raise KeyError("a bug")

    monkeypatch.setattr(jobs, "generate", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["generate"])


# --------------------------------------------------------------------------- failures of `run`


def test_generation_failure_is_what_the_user_sees() -> None:
    saved = "teacher 'llama' failed: CUDA out of memory"
    exc = run_failure(GenerationError(saved), saved, RuntimeError("TrainingFailedError: slice reader raised\n..."),
                      "/s")
    assert isinstance(exc, StreamingError)
    assert str(exc) == f"generation failed: {saved} (training stopped too: RuntimeError: TrainingFailedError: " \
                       "slice reader raised)"
    assert str(run_failure(GenerationError(saved), saved, None, "/s")) == f"generation failed: {saved}"


def test_training_failure_names_the_cancelled_generation() -> None:
    exc = run_failure(None, None, TaskDataError("a teacher has no rows"), "/runs/x/rationales")
    assert isinstance(exc, StreamingError)
    assert str(exc).startswith("training failed: a teacher has no rows; generation was cancelled")
    assert "/runs/x/rationales" in str(exc)


def test_a_bug_at_the_root_stays_an_internal_error() -> None:
    exc = run_failure(None, None, ZeroDivisionError("division by zero"), "/s")
    assert type(exc) is RuntimeError and "ZeroDivisionError: division by zero" in str(exc)
    exc = run_failure(KeyError("k"), "KeyError: 'k'", RuntimeError("stopped"), "/s")
    assert type(exc) is RuntimeError and str(exc).startswith("generation failed: KeyError: 'k'")


def test_compare_refuses_before_ray_what_the_user_can_fix(tmp_path, capsys) -> None:
    err = one_line(*run_cli(capsys, "compare", "train.max_steps=null", *storage(tmp_path)), "compare")
    assert "same step budget" in err and "compare.max_steps.seq2seq" in err
    err = one_line(*run_cli(capsys, "compare", "compare.settings=[tinyllm,nope]", *storage(tmp_path)), "compare")
    assert "unknown setting(s) ['nope']" in err


def test_compare_flags_choose_the_mode(monkeypatch, capsys) -> None:
    from tinyllm_ray import jobs

    seen = []
    monkeypatch.setattr(jobs, "compare", lambda cfg, mode, seeds: seen.append((mode, seeds)) or {})
    for argv, want in ((["--quick"], ("quick", None)), (["--full", "--seeds", "4"], ("full", 4)), ([], ("default", None))):
        assert cli.main(["compare", *argv]) == 0
        assert seen.pop() == want
    with pytest.raises(SystemExit):
        cli.main(["compare", "--quick", "--full"])


def test_compare_list_prints_the_settings_without_ray(capsys) -> None:
    assert cli.main(["compare", "--list", "--full"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mode full: 8 setting(s), seq2seq student")
    assert "mm_cots_selfeval" in out and "llama_cot (cot, n=3, self-evaluates)" in out
    assert "steps per setting: 60" in out


def test_demo_is_compare_on_the_shipped_demo_config(capsys) -> None:
    """The README's first command: `tinyllm-ray demo` = `compare --config demo` (bootstrapped teachers)."""
    assert cli.main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert "mode default: 5 setting(s)" in out and "llama_cot (cot, n=3, self-evaluates)" in out
    assert "steps per setting: 300" in out

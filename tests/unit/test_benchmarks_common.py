"""benchmarks/_common.py: the helpers every benchmark shares (no benchmark is run here)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from benchmarks._common import generated_until_stop, machine_facts, median, package_versions, run_child


def test_median_of_nothing_is_nan() -> None:
    assert math.isnan(median([]))
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_package_versions_never_import_and_report_missing() -> None:
    got = package_versions(("pytest", "surely-not-installed-pkg"), missing="?")
    assert got["pytest"] == pytest.__version__
    assert got["surely-not-installed-pkg"] == "?"


def test_machine_facts_have_the_keys_the_reports_read() -> None:
    facts = machine_facts(("pytest",))
    assert {"nproc", "affinity", "cpu_model", "platform", "python", "pytest"} <= set(facts)


def test_run_child_reads_a_marker_line_and_times_it() -> None:
    code = "import json; print('noise'); print('RESULT ' + json.dumps({'x': 1}))"
    run = run_child([sys.executable, "-c", code], what="probe", marker="RESULT")
    assert run.result == {"x": 1} and run.wall_seconds > 0


def test_run_child_reads_a_result_file_and_logs_output(tmp_path: Path) -> None:
    out, log = tmp_path / "out.json", tmp_path / "log.txt"
    out.write_text("stale")  # a result left by an earlier run must never be read
    code = f"import json; print('hello'); open({str(out)!r}, 'w').write(json.dumps({{'y': 2}}))"
    run = run_child([sys.executable, "-c", code], what="worker", result_file=out, log_file=log)
    assert run.result == {"y": 2} and "hello" in log.read_text()
    assert json.loads(out.read_text()) == {"y": 2}


def test_run_child_failure_names_what_failed_with_the_output_tail(tmp_path: Path) -> None:
    code = "import sys; print('boom detail', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"(?s)probe failed \(exit code 3\).*boom detail"):
        run_child([sys.executable, "-c", code], what="probe", marker="RESULT")
    out = tmp_path / "out.json"
    out.write_text("{}")
    with pytest.raises(RuntimeError, match="worker failed"):
        run_child([sys.executable, "-c", "pass"], what="worker", result_file=out)


def _decode(ids: list[int]) -> str:
    return "".join({1: "a", 2: "<eos>", 3: "\n", 4: "Q:", 5: "b"}[i] for i in ids)


def test_generated_until_stop_counts_like_vllm() -> None:
    # EOS ends the request and is counted; padding after it is not
    assert generated_until_stop([1, 5, 2, 2, 2], [2], [], _decode) == 3
    # a stop string that straddles tokens: counted up to the token that completes it
    assert generated_until_stop([1, 3, 3, 4, 1, 5], [2], ["\n\nQ:"], _decode) == 4
    # no EOS, no stop: everything counts
    assert generated_until_stop([1, 5, 1], [2], ["\n\nQ:"], _decode) == 3
    # EOS before the stop string wins
    assert generated_until_stop([1, 2, 3, 3, 4], [2], ["\n\nQ:"], _decode) == 2
    assert generated_until_stop([], [2], ["x"], _decode) == 0


def test_padding_factor_counts_left_padding_per_batch() -> None:
    from benchmarks._real_vs_hf import padding_factor

    assert padding_factor([4, 4, 4, 4], 2) == 1.0
    assert padding_factor([2, 4, 3, 3], 2) == (2 * 4 + 2 * 3) / 12  # batches [2, 4] and [3, 3]
    assert padding_factor([2, 4, 3], 2) == (2 * 4 + 1 * 3) / 9  # a last, shorter batch

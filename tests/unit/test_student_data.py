"""The student's view of a store: pre-flight checks and the slice loader (no Ray)."""

from __future__ import annotations

import os

import pytest

from tests.unit.test_student_tasks import both, job, plan_of, records, store_row, write_store
from tinyllm_ray.errors import (
    BuildLockError,
    EmptyTargetError,
    MissingTeacherError,
    StoreMismatchError,
    StoreNotFoundError,
    StreamingError,
    TaskDataError,
    find_user_error,
)
from tinyllm_ray.store import RationaleStore
from tinyllm_ray.student.data import load_slice
from tinyllm_ray.student.store_checks import (
    check_store_ready,
    ignored_store_rows,
    open_training_store,
    scan_store_targets,
)
from tinyllm_ray.student.streaming import slice_group_counts
from tinyllm_ray.student.tasks import build_task_groups


def cfg_at(tmp_path, **over):
    return job(runtime={"storage_path": str(tmp_path), "run_name": "r"}, **over)


def test_train_before_generate_says_what_to_run(tmp_path):
    cfg = cfg_at(tmp_path)
    with pytest.raises(StoreNotFoundError, match=r"no rationale store at .*/r/rationales; run `tinyllm-ray "
                                                 r"generate` \(same config\) first, or set runtime.store_uri"):
        check_store_ready(cfg)


def test_answer_only_runs_need_no_store(tmp_path):
    cfg = cfg_at(tmp_path, teachers=[], loss={"alpha": {}})
    check_store_ready(cfg)
    view = open_training_store(cfg, train_records=records(5))
    assert view.uri is None and view.num_slices == 1


def test_ready_store_is_described(tmp_path):
    cfg = cfg_at(tmp_path)
    recs = records(5)
    write_store(cfg.runtime.resolved_store_uri, both(recs), records=recs, shard_size=2)
    check_store_ready(cfg)
    view = open_training_store(cfg, train_records=recs)
    assert (view.shard_size, view.num_slices) == (2, 3)
    assert view.row_counts[("llama", "rationale")] == 5 and view.row_counts[("qwen", "self_eval")] == 0


def test_missing_teacher_and_unfinished_store(tmp_path):
    cfg = cfg_at(tmp_path)
    recs = records(5)
    store = write_store(cfg.runtime.resolved_store_uri, both(recs, ("llama",)), records=recs, shard_size=2)
    with pytest.raises(MissingTeacherError, match=r"qwen \(kind=rationale\)"):
        check_store_ready(cfg)
    write_store(cfg.runtime.resolved_store_uri, both(recs), records=recs, shard_size=2)
    os.remove(store.shard_path("qwen", "rationale", 1))
    os.remove(store.shard_path("qwen", "rationale", 2))
    with pytest.raises(StoreNotFoundError, match=r"not finished: teacher 'qwen' is missing 2 of 3 shards; "
                                                 r"run `tinyllm-ray generate` \(same config\) to finish"):
        check_store_ready(cfg)


def test_changed_dataset_is_a_store_mismatch(tmp_path):
    cfg = cfg_at(tmp_path)
    recs = records(4)
    write_store(cfg.runtime.resolved_store_uri, both(recs), records=recs, shard_size=2)
    with pytest.raises(StoreMismatchError, match="the dataset changed since `generate`"):
        open_training_store(cfg, train_records=records(5)[1:])


def test_load_slice_reads_shard_k_of_every_teacher(tmp_path):
    recs = records(5)
    extra = store_row(recs[3], "llama", sample_idx=1, rationale="Another way: it is red.")
    store = write_store(tmp_path, [*both(recs, ("llama", "qwen", "mistral")), extra], records=recs, shard_size=2)
    plan = plan_of()
    slices = [load_slice(store, plan, recs[k * 2:(k + 1) * 2], k) for k in range(3)]
    assert [len(s.groups) for s in slices] == [2, 2, 1]
    assert slices[1].stats.rows_per_task == {"answer": 2, "rationale:llama": 3, "rationale:qwen": 2}
    # the unconfigured teacher's shards are not even read
    assert not any(s.stats.ignored_teachers for s in slices)
    # slices partition the examples: their groups are the whole split's groups
    whole = build_task_groups(recs, store.read_table("rationale", ["llama", "qwen"]).to_pylist(), plan)
    assert sorted((g for s in slices for g in s.groups), key=lambda g: g["group"]) == whole.groups
    answers_only = load_slice(None, plan_of(teachers=[], loss={"alpha": {}}), recs[:2], 0)
    assert answers_only.stats.rows_per_task == {"answer": 2}


def test_load_slice_reads_self_evaluations_when_enabled(tmp_path):
    recs = records(2)
    se = [store_row(r, t, kind="self_eval", eval_idx=0, critique="Sound.", verdict="correct")
          for r in recs for t in ("llama", "qwen")]
    store = write_store(tmp_path, [*both(recs), *se], records=recs, shard_size=2)
    out = load_slice(store, plan_of(self_eval={"enabled": True}, loss={"schedule": "two_stage"}), recs, 0)
    assert out.stats.groups_per_stage == {0: 4, 1: 2}
    assert load_slice(store, plan_of(), recs, 0).stats.groups_per_stage == {0: 2}


def test_ignored_rows_are_counted_from_footers(tmp_path):
    recs = records(3)
    se = [store_row(r, "llama", kind="self_eval", eval_idx=0, critique="ok", verdict="correct") for r in recs]
    store = write_store(tmp_path, [*both(recs, ("llama", "qwen", "mistral")), *se], records=recs)
    stats = ignored_store_rows(plan_of(), store.row_counts(None))
    assert stats.ignored_teachers == {"mistral": 3} and stats.ignored_kinds == {"self_eval": 3}
    assert not ignored_store_rows(plan_of(self_eval={"enabled": True}), store.row_counts(None)).ignored_kinds


def test_empty_targets_are_all_named_at_once(tmp_path):
    recs = records(4)
    rows = both(recs)
    rows[0]["rationale"] = ""
    rows[4]["rationale"] = "  "
    store = write_store(tmp_path, rows, records=recs, shard_size=2)
    with pytest.raises(EmptyTargetError, match=r"teacher 'llama' kind=rationale: 2 row\(s\), e.g. examples "
                                               r"\['ex0', 'ex2'\].*filter.drop_empty"):
        scan_store_targets(store, plan_of())
    assert scan_store_targets(RationaleStore(str(tmp_path / "other")), plan_of()) == {}


def test_user_errors_are_recovered_from_ray_wrappers():
    inner = EmptyTargetError("rationale store: empty rationale for teacher 'x'")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert find_user_error(outer) is inner
    text = RuntimeError("ray.exceptions.RayTaskError(UserCodeException): ... tinyllm_ray.errors.StreamingError: "
                        "shard 3 of teacher(s) ['llama'] not written")
    got = find_user_error(text)
    assert isinstance(got, StreamingError) and str(got).startswith("shard 3")
    assert isinstance(find_user_error(RuntimeError("TaskDataError: bad")), TaskDataError)
    assert find_user_error(RuntimeError("ValueError: not ours")) is None
    # Ray Train v2: a worker-group error keeps each rank's exception in ``worker_failures``
    group = RuntimeError("Training failed due to worker errors")
    group.worker_failures = {0: RuntimeError("other"), 1: BuildLockError("the extension build lock x is still there")}
    got = find_user_error(group)
    assert isinstance(got, BuildLockError) and "build lock" in str(got)


def test_streaming_group_counts_are_per_slice():
    recs = records(4)
    recs[3] = type(recs[0])(id="dup", question=recs[0].question, choices=recs[0].choices, answer=recs[0].answer)
    assert slice_group_counts(recs, 2, plan_of()) == 4  # the duplicate is in another slice: its own group
    assert slice_group_counts(recs, 4, plan_of()) == 3


def _udf(store_uri, recs, plan, shard_size, ids, **kw):
    from tinyllm_ray.student.data import _load_slices

    return _load_slices({"id": ids}, plan=plan.to_dict(), store_uri=store_uri, records=[r.to_dict() for r in recs],
                        shard_size=shard_size, wait=kw.get("wait"), fingerprint=kw.get("fingerprint"))


def test_slice_udf_yields_group_tables(tmp_path):
    from tinyllm_ray.student.tasks import GROUP_SCHEMA

    recs = records(5)
    write_store(tmp_path, both(recs), records=recs, shard_size=2)
    table = _udf(str(tmp_path), recs, plan_of(), 2, [0, 2])
    assert table.schema == GROUP_SCHEMA and table.num_rows == 3
    assert sorted(table.column("example_id").to_pylist()) == ["ex0", "ex1", "ex4"]
    assert _udf(None, recs, plan_of(teachers=[], loss={"alpha": {}}), 2, [1]).num_rows == 2


def test_streaming_slice_udf_waits_and_stops(tmp_path):
    from tinyllm_ray.store.manifest import data_fingerprint

    recs = records(4)
    store = write_store(tmp_path, both(recs), records=recs, shard_size=2)
    os.remove(store.shard_path("qwen", "rationale", 1))
    wait = {"poll_s": 0.01, "timeout_s": 0.05}
    ok = _udf(str(tmp_path), recs, plan_of(), 2, [0], wait=wait, fingerprint=data_fingerprint(recs))
    assert ok.num_rows == 2
    with pytest.raises(StreamingError, match=r"shard 1 of teacher\(s\) \['qwen'\] not written"):
        _udf(str(tmp_path), recs, plan_of(), 2, [1], wait=wait)
    store.mark_generation_failed("GenerationError: teacher 'qwen' ran out of memory")
    with pytest.raises(StreamingError, match="ran out of memory"):
        _udf(str(tmp_path), recs, plan_of(), 2, [1], wait={"poll_s": 0.01, "timeout_s": 60})
    with pytest.raises(StoreMismatchError, match="dataset changed"):
        _udf(str(tmp_path), recs, plan_of(), 2, [0], wait=wait, fingerprint="0" * 16)

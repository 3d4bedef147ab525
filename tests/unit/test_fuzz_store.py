"""Fuzzing the store's commit protocol: no partially written shard is ever read as complete.

``write_shard`` writes ``failed``, then ``self_eval``, then the ``rationale`` file (the
commit point), each to a hidden temporary name renamed into place (``store/writer.py``,
``store/fs.py``). Here a writer is killed at every step — the rename fails (the library
deletes its temporary file), the process dies before the rename (the temporary file
stays), or dies half way through writing it — and a separate reader must then see none
of that shard: not in ``finished_shards``/``shard_ready``, not in ``read_table``,
``row_counts``, ``iter_batches``, ``failed_rows`` or ``shard_stats``. A rerun (what
``teachers/pipeline.py`` does: remove temporary files, regenerate unfinished shards)
then stores exactly the new attempt, with no stale row of the killed one.

A committed shard damaged afterwards (truncated, emptied, overwritten) is one
:class:`CorruptShardError` naming the file and how to regenerate it; doing what it says
makes the rerun regenerate the shard. Found here: a ``self_eval``/``failed`` file left by
a writer killed before its shard's commit was read by ``read_table``/``row_counts``/
``failed_rows`` as if committed; a damaged shard file surfaced as a raw pyarrow error.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinyllm_ray.config import FilterConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import CorruptShardError
from tinyllm_ray.store import KINDS, RationaleStore
from tinyllm_ray.store.keys import KeyContext
from tinyllm_ray.store.layout import is_temporary
from tinyllm_ray.store.schema import FAILED_KIND
from tinyllm_ray.teachers.records import ShardRecords, build_shard_records

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CTX = KeyContext("t", "tiny:llama", "sha256:" + "0" * 32, "v1", '{"seed":0}', '{"temperature":0}')
EXAMPLES = {f"q{i}": MCQRecord(f"q{i}", f"Which {i}?", ("sun", "moon"), "moon") for i in range(4)}
TEACHER = "t"
ALL_KINDS = (*KINDS, FAILED_KIND)


class Killed(BaseException):
    """The process dying (not an Exception: the writer's own cleanup does not run)."""


class _HalfStream:
    """An output stream that dies after writing half of what it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()

    def write(self, data: bytes) -> None:
        self.inner.write(data[: len(data) // 2])
        raise Killed("killed while writing")


class CrashingFs:
    """The store's pyarrow filesystem, failing the ``at``-th file write in the chosen way."""

    def __init__(self, fs: Any, at: int, how: str) -> None:
        self.fs, self.at, self.how, self.writes, self.moves = fs, at, how, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)

    def open_output_stream(self, path: str) -> Any:
        self.writes += 1
        stream = self.fs.open_output_stream(path)
        return _HalfStream(stream) if self.how == "half_written" and self.writes == self.at else stream

    def move(self, src: str, dst: str) -> None:
        self.moves += 1
        if self.moves == self.at and self.how == "rename_fails":
            raise OSError("No space left on device")
        if self.moves == self.at and self.how == "killed_before_rename":
            raise Killed("killed before the rename")
        self.fs.move(src, dst)


def shard_content(shard: int, n_ok: int, n_failed: int, evals: int, tag: str) -> ShardRecords:
    """One shard's records: ``n_ok`` CoTs (each with ``evals`` self-evaluations) and ``n_failed`` failed ones."""
    raw: list[dict[str, Any]] = []
    for s in range(n_ok + n_failed):
        ex = f"q{s % 4}"
        err = "HTTP 500: boom" if s >= n_ok else None
        raw.append({"kind": "rationale", "example_id": ex, "split": "train", "shard": shard, "sample_idx": s,
                    "eval_idx": -1, "prompt_hash": f"h{shard}", "text": "" if err else f"{tag}: the answer is (b)",
                    "prompt_tokens": 5, "output_tokens": 5, "finish_reason": "stop", "gen_seconds": 0.1,
                    "n_evals": 0 if err else evals, **({"error": err} if err else {})})
        for e in range(0 if err else evals):
            raw.append({"kind": "self_eval", "example_id": ex, "split": "train", "shard": shard, "sample_idx": s,
                        "eval_idx": e, "prompt_hash": f"s{shard}", "text": f"{tag}.\nVerdict: correct",
                        "prompt_tokens": 5, "output_tokens": 5, "finish_reason": "stop", "gen_seconds": 0.1,
                        "n_evals": 0})
    return build_shard_records(raw, EXAMPLES, TEACHER, FilterConfig(), ["correct", "wrong"], key=CTX)


def write(store: RationaleStore, shard: int, recs: ShardRecords) -> None:
    assert recs.stats is not None
    store.write_shard(TEACHER, shard, recs.rationale, recs.self_eval, recs.stats, failed=recs.failed)


def store_view(store: RationaleStore) -> dict[str, Any]:
    """Everything a reader can learn about the store, through every reading entry point."""
    tables = {k: store.read_table(k, [TEACHER]).to_pylist() for k in ALL_KINDS}
    batches = {k: sum(b.num_rows for b in store.iter_batches(TEACHER, k, ["example_id"])) for k in ALL_KINDS}
    return {
        "finished": store.finished_shards(TEACHER),
        "files": {k: sorted(store.shard_files(TEACHER, k)) for k in ALL_KINDS},
        "rows": {k: sorted((r["sample_idx"], r["eval_idx"], r["rationale"] or "") for r in v) for k, v in tables.items()},
        "counts": store.row_counts([TEACHER], ALL_KINDS),
        "batches": batches,
        "failed_rows": store.failed_rows(TEACHER).num_rows,
        "stats": sorted(store.shard_stats(TEACHER)),
    }


def expected_rows(committed: dict[int, ShardRecords]) -> dict[str, list[tuple[int, int, str]]]:
    out: dict[str, list[tuple[int, int, str]]] = {}
    for kind, attr in (("rationale", "rationale"), ("self_eval", "self_eval"), (FAILED_KIND, "failed")):
        out[kind] = sorted((r["sample_idx"], r["eval_idx"], r["rationale"] or "")
                           for recs in committed.values() for r in getattr(recs, attr))
    return out


def check_view(store: RationaleStore, committed: dict[int, ShardRecords]) -> None:
    view = store_view(store)
    assert view["finished"] == set(committed) == set(view["stats"])
    assert view["rows"] == expected_rows(committed)
    for kind in ALL_KINDS:
        n = len(view["rows"][kind])
        assert view["counts"][(TEACHER, kind)] == n == view["batches"][kind]
        assert set(view["files"][kind]) <= set(committed)
    assert view["failed_rows"] == len(view["rows"][FAILED_KIND])
    for shard in range(4):
        assert store.shard_ready([TEACHER], shard) == {TEACHER: shard in committed}


attempts = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2))  # CoTs ok, failed, evals per CoT


@SETTINGS
@given(st.lists(st.tuples(attempts, st.sampled_from(["none", "rename_fails", "killed_before_rename", "half_written"]),
                          st.integers(1, 3), attempts), min_size=1, max_size=4))
def test_a_writer_killed_at_any_step_leaves_no_shard_a_reader_takes_as_complete(tmp_path_factory, plan):
    root = tmp_path_factory.mktemp("store")
    writer, committed = RationaleStore(str(root)), {}
    for shard, (first, how, at, _rerun) in enumerate(plan):
        recs = shard_content(shard, *first, tag=f"first{shard}")
        if how == "none":
            write(writer, shard, recs)
            committed[shard] = recs
            continue
        writer.fs = CrashingFs(RationaleStore(str(root)).fs, at, how)  # type: ignore[assignment]
        try:
            write(writer, shard, recs)
        except (OSError, Killed):
            event(f"killed: {how} at write {at}")
        else:  # fewer files than `at` (no failed rows, no self-evaluations): the shard committed
            committed[shard] = recs
            event("committed before the crash point")
        writer = RationaleStore(str(root))
        check_view(RationaleStore(str(root)), committed)  # a reader meanwhile (e.g. streaming training)

    # The rerun: what the generation pipeline does on a store it resumes.
    rerun = RationaleStore(str(root))
    left = sum(1 for p in root.rglob("*") if p.is_file() and is_temporary(p.name))
    assert rerun.remove_temporary_files(TEACHER) == left
    for shard, (_first, _how, _at, again) in enumerate(plan):
        if shard not in rerun.finished_shards(TEACHER):
            recs = shard_content(shard, *again, tag=f"rerun{shard}")
            write(rerun, shard, recs)
            committed[shard] = recs
    check_view(RationaleStore(str(root)), committed)
    assert not any(is_temporary(p.name) for p in root.rglob("*"))


# --------------------------------------------------------------------------- damaged committed shards


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "last_byte_cut": data[:-1],
        "garbage": b"not parquet at all" * 20,
        "footer_flipped": data[:-12] + bytes(b ^ 0xFF for b in data[-12:-8]) + data[-8:],
        "magic_only": b"PAR1" + b"\0" * 64 + b"PAR1",
    }[how]
    path.write_bytes(damaged)


DAMAGE = ["empty", "truncated", "last_byte_cut", "garbage", "footer_flipped", "magic_only"]


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_committed_shard_is_one_error_naming_the_file_and_the_fix(tmp_path, kind, how):
    store = RationaleStore(str(tmp_path / "store"))
    write(store, 0, shard_content(0, 2, 1, 1, "a"))
    write(store, 1, shard_content(1, 3, 1, 1, "b"))
    path = Path(store.shard_path(TEACHER, kind, 1))
    _damage(path, how)
    readers = [lambda: store.read_table(kind, [TEACHER]), lambda: store.row_counts([TEACHER], ALL_KINDS),
               lambda: store.read_shard(TEACHER, kind, 1),
               lambda: list(store.iter_batches(TEACHER, kind, ["example_id"]))]
    if kind == "rationale":
        readers.append(lambda: store.shard_stats(TEACHER))
    errors = []
    for read in readers:
        with pytest.raises(CorruptShardError) as info:
            read()
        errors.append(str(info.value))
    for msg in errors:
        assert str(path) in msg and "tinyllm-ray generate" in msg and "\n" not in msg, msg
    # Doing what the message says makes the rerun regenerate the shard.
    commit = Path(store.shard_path(TEACHER, "rationale", 1))
    path.unlink(missing_ok=True)
    if kind != "rationale":
        assert str(commit) in errors[0]
        commit.unlink()
    assert store.finished_shards(TEACHER) == {0}
    again = shard_content(1, 1, 0, 2, "again")
    write(store, 1, again)
    check_view(store, {0: shard_content(0, 2, 1, 1, "a"), 1: again})


def test_a_shard_without_its_commit_file_is_invisible_to_every_reader(tmp_path):
    """The data files written, the rationale file (the commit point) not: as if killed right before it."""
    src, dst = RationaleStore(str(tmp_path / "a")), RationaleStore(str(tmp_path / "b"))
    write(src, 0, shard_content(0, 2, 1, 2, "x"))
    write(dst, 0, shard_content(0, 1, 0, 0, "y"))
    for kind in (FAILED_KIND, "self_eval"):
        target = Path(dst.shard_path(TEACHER, kind, 1))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src.shard_path(TEACHER, kind, 0), target)
    check_view(dst, {0: shard_content(0, 1, 0, 0, "y")})


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_byte_flipped_inside_a_data_page_is_an_error_never_wrong_text(tmp_path, kind):
    """Footers and magic are checked by Parquet itself; page bodies only by the writer's CRCs.

    Every 4th byte of every column chunk is flipped in turn: each read either fails with the
    store's one-line error or returns exactly what was written (a flip in an unused header
    field), never different rows (without page checksums some flips read back as wrong text).
    """
    import pyarrow.parquet as pq

    store = RationaleStore(str(tmp_path / "store"))
    write(store, 0, shard_content(0, 3, 1, 1, "a"))
    path = Path(store.shard_path(TEACHER, kind, 0))
    original, good = store.read_shard(TEACHER, kind, 0), path.read_bytes()
    rg = pq.ParquetFile(path).metadata.row_group(0)
    wrong = []
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        for pos in range(start, start + col.total_compressed_size, 4):  # every 4th byte: ~3 s
            data = bytearray(good)
            data[pos] ^= 0x5A
            path.write_bytes(bytes(data))
            try:
                got = store.read_shard(TEACHER, kind, 0)
            except CorruptShardError as exc:
                assert "tinyllm-ray generate" in str(exc)
                continue
            if not got.equals(original):
                wrong.append((col.path_in_schema, pos))
    assert not wrong, f"flipped bytes read back as different rows: {wrong[:5]} ({len(wrong)} in all)"

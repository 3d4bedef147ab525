"""No silent hang on a JIT extension build lock (issue 11 item 5): deadline + message + log."""

from __future__ import annotations

import logging
import threading

import pytest

from tinyllm_ray.errors import BuildLockError, UserError
from tinyllm_ray.student.build_lock import build_locks, extensions_root, wait_for_build_locks


def test_no_lock_no_wait(tmp_path):
    (tmp_path / "deepspeed_shm_comm").mkdir()
    assert build_locks(tmp_path) == [] and build_locks(tmp_path / "missing") == []
    assert wait_for_build_locks(5, root=tmp_path) < 1


def test_a_stale_lock_fails_after_the_deadline_naming_the_file(tmp_path, caplog):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    with caplog.at_level(logging.WARNING), pytest.raises(BuildLockError) as err:
        wait_for_build_locks(0.3, root=tmp_path, poll_s=0.05)
    assert isinstance(err.value, UserError)
    msg = str(err.value)
    assert str(lock) in msg and f"rm {lock}" in msg and "train.build_lock_timeout_s" in msg and "\n" not in msg
    assert any("waiting for the extension build lock" in r.message for r in caplog.records)


def test_a_build_that_finishes_releases_the_wait(tmp_path):
    lock = tmp_path / "op" / "lock"
    lock.parent.mkdir()
    lock.touch()
    threading.Timer(0.2, lock.unlink).start()
    assert 0.1 < wait_for_build_locks(10, root=tmp_path, poll_s=0.02) < 5


def test_extensions_root_follows_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path

"""The terminal while a job runs: a status a person can read, everything else in a log file.

Why: a job's raw output is Ray Data progress bars from several processes, every Ray worker's
forwarded stdout (vLLM engine logs, DeepSpeed, Ray Train's controller), Ray's own warnings
and C-level prints: the 3-minute demo printed 165,456 lines and the summary was buried.

How (unless ``-v``):

* once Ray is about to start (``runtime.init_ray`` announces it) or the run folder exists,
  fds 1 and 2 of the driver point (``os.dup2``) at ``RunPaths.console_log`` (named first):
  that catches what Python-level redirection cannot (Ray's forwarded worker logs, Ray Data's
  bars, processes Ray starts, C-level prints); a refused start leaves no folder behind;
* the terminal is kept as a duplicate fd: the driver's ``tinyllm_ray`` INFO records go there
  as compact lines (in full to the log); :func:`~tinyllm_ray.observability.progress` events
  become one live status line (generation per teacher; each training's step, per-task
  losses, validation accuracy, ETA); a finished teacher or training leaves one line;
* without a terminal (``ray job logs``, a pipe) the status is a record every
  :data:`RECORD_EVERY_S` s, when it changed;
* at the end Ray is shut down while fds still point at the log (late worker output stays
  there), then the terminal is restored and the CLI prints the summary and paths.

With ``-v`` nothing is redirected; the status comes as records, as in a pipe.
"""

from __future__ import annotations

import builtins
import glob
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from tinyllm_ray.errors import UserError
from tinyllm_ray.jobs.progress import (
    MetricsTail,
    ProgressState,
    TeacherProgress,
    Throttle,
    TrainingProgress,
    fit,
    format_seconds,
)
from tinyllm_ray.observability import add_progress_listener

__all__ = ["RECORD_EVERY_S", "JobConsole", "OutputRedirect"]

log = logging.getLogger(__name__)

#: Seconds between two redraws of the live status (and polls of the metrics logs).
REFRESH_S = 0.5
#: Seconds between two one-line progress records where there is no terminal.
RECORD_EVERY_S = 10.0
#: Seconds between two looks for new metrics logs (Tune trials appear while the job runs).
GLOB_EVERY_S = 2.0


class OutputRedirect:
    """Points descriptors 1 and 2 of this process (and of every child it starts later) at a file.

    The descriptors the process had are kept (:attr:`stdout_fd`, :attr:`stderr_fd`) for
    whoever must still reach the terminal, and put back by :meth:`restore`.
    """

    def __init__(self) -> None:
        self.stdout_fd = os.dup(1)
        self.stderr_fd = os.dup(2)
        self.path: str | None = None

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def to_file(self, path: str) -> None:
        """Append fds 1 and 2 to ``path`` (its folder is created)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._flush()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)
        self.path = path

    def restore(self) -> None:
        """The descriptors as they were; the kept duplicates are closed."""
        self._flush()
        if self.path is not None:
            os.dup2(self.stdout_fd, 1)
            os.dup2(self.stderr_fd, 2)
            self.path = None
        for fd in (self.stdout_fd, self.stderr_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Terminal:
    """Lines, and in a terminal one live status line redrawn in place (no newline per redraw)."""

    def __init__(self, fd: int, live: bool) -> None:
        self.fd = fd
        self.live = live
        self._f: TextIO = open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        self._status = ""
        self._lock = threading.RLock()

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.fd).columns
        except OSError:
            return 120

    def line(self, text: str) -> None:
        with self._lock:
            if self.live and self._status:
                self._f.write("\r\x1b[2K")
            self._f.write(text + "\n")
            if self.live and self._status:
                self._f.write(fit(self._status, self._width() - 1))
            self._f.flush()

    def status(self, text: str) -> None:
        with self._lock:
            if not self.live or text == self._status:
                return
            self._status = text
            self._f.write("\r\x1b[2K" + fit(text, self._width() - 1))
            self._f.flush()

    def clear(self) -> None:
        with self._lock:
            if self.live and self._status:
                self._f.write("\r\x1b[2K")
                self._f.flush()
            self._status = ""


class _CompactHandler(logging.Handler):
    """``tinyllm_ray`` records of the driver as short lines on the terminal."""

    def __init__(self, term: _Terminal) -> None:
        super().__init__(logging.INFO)
        self.term = term

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            self.term.line(prefix + record.getMessage())
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class _PendingHandler(logging.StreamHandler):
    """The full log, on ``sys.stderr`` once it points at the log file; held back (in order) until then."""

    def __init__(self, console: JobConsole) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.console = console
        self.pending: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.console.redirected:
            self.stream = sys.stderr
            super().emit(record)
        elif len(self.pending) < 10_000:
            self.pending.append(record)

    def flush_pending(self) -> None:
        pending, self.pending = self.pending, []
        for record in pending:
            self.emit(record)


@dataclass
class _Watch:
    """A glob of metrics logs to follow; ``label`` may contain ``{dir}`` (the log's folder name)."""

    label: str
    pattern: str
    total: int | None
    existing: dict[str, int]  # files already there when the watch began -> their size (old runs)
    since: float  # when the watch began


class JobConsole:
    """Owns the terminal while one CLI job runs (see the module docstring); a context manager."""

    def __init__(self, command: str, log_path: str, run_dir: str, *, verbose: bool = False,
                 record_every_s: float = RECORD_EVERY_S) -> None:
        self.command, self.log_path, self.run_dir, self.verbose = command, log_path, run_dir, verbose
        self.redirect = OutputRedirect()
        live = not verbose and os.isatty(self.redirect.stderr_fd) and os.environ.get("TERM") != "dumb"
        self.term = _Terminal(self.redirect.stderr_fd, live)
        self.state = ProgressState()
        self._throttle = Throttle(record_every_s)
        self._watches: list[_Watch] = []
        self._tails: dict[str, tuple[MetricsTail, TrainingProgress]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tinyllm-console", daemon=True)
        self._t0 = time.time()
        self._last_glob = 0.0
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._remove_listener = lambda: None
        self.redirected = False
        self.log_written = False  # the log file got this job's output (the CLI names it last)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> JobConsole:  # noqa: PYI034
        pkg, root = logging.getLogger("tinyllm_ray"), logging.getLogger()
        self._print = builtins.print  # Ray's tqdm manager patches it to redraw bars (over the summary)
        if not self.verbose:
            os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
            self._file_handler = _PendingHandler(self)
            compact = _CompactHandler(self.term)
            for logger, handler in ((root, self._file_handler), (pkg, compact)):
                logger.addHandler(handler)
                self._handlers.append((logger, handler))
            root.setLevel(logging.INFO)
            pkg.setLevel(logging.INFO)
            if os.path.isdir(self.run_dir):  # artifacts already there: their log may be too
                self._redirect()
        self._remove_listener = add_progress_listener(self._on_event)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._remove_listener()
        self._refresh(final=True)
        self.term.clear()
        if self.redirected:
            if exc is not None:  # the log keeps the whole story; the terminal gets it after the restore
                what = str(exc) if isinstance(exc, UserError) else "".join(
                    traceback.format_exception(exc_type, exc, tb))
                sys.stderr.write(f"tinyllm-ray {self.command} failed: {what}\n")
            self._shutdown_ray()
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        builtins.print = self._print
        self.redirect.restore()

    def _shutdown_ray(self) -> None:
        """Shut Ray down while its late output still goes to the log (the process ends next anyway)."""
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:
            log.debug("ray.shutdown failed", exc_info=True)

    def _redirect(self) -> None:
        if self.redirected or self.verbose:
            return
        self.redirect.to_file(self.log_path)
        self.redirected = self.log_written = True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._t0))
        sys.stderr.write(f"\n===== tinyllm-ray {self.command}, started {stamp}, pid {os.getpid()} =====\n")
        self._file_handler.flush_pending()
        self.term.line(f"log (Ray, vLLM, DeepSpeed, workers; `-v` shows it here): {self.log_path}")
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # local Ray's processes too (init_ray)
        try:
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
        except Exception:
            log.debug("could not disable Ray Data progress bars", exc_info=True)

    # ------------------------------------------------------------------ progress events
    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        with self._lock:
            now = time.time()
            if event == "ray":
                self._redirect()
            elif event == "stage":
                self._poll_trainings()  # what finished before this stage is said before it
                detail = fields.get("detail")
                self.term.line(f"==> {fields.get('name')}" + (f": {detail}" if detail else ""))
            elif event == "generation":
                self._start_generation(fields["cfg"], fields.get("shard_size"), now)
            elif event == "shard":
                self._shard(fields["shard"], now)
            elif event == "training":
                pattern = str(fields["pattern"])
                existing = {p: os.path.getsize(p) for p in glob.glob(pattern) if os.path.isfile(p)}
                watch = _Watch(str(fields.get("label") or "{dir}"), pattern, fields.get("total"), existing, now)
                self._watches.append(watch)
                if not glob.has_magic(pattern):  # one known training: shown as starting until its first step
                    self._follow(watch, pattern, now)
                self._last_glob = 0.0

    def _start_generation(self, cfg: Any, shard_size: int | None, now: float) -> None:
        plan = generation_plan(cfg, shard_size)
        for name, (total, size, done) in plan.items():
            tp = TeacherProgress(name, total, size, started=now)
            for shard in done:
                tp.examples_done += tp.shard_examples(shard)
            tp.resumed = tp.examples_done
            if tp.done:
                tp.ended = now
            self.state.teachers[name] = tp
        if plan:
            total = next(iter(plan.values()))[0]
            todo = [n for n, t in self.state.teachers.items() if not t.done]
            self.term.line(f"==> generation: {', '.join(plan)} on {total} examples"
                           + (f" ({', '.join(todo)} to generate)" if len(todo) != len(plan) else ""))

    def _shard(self, shard: Any, now: float) -> None:
        tp = self.state.teachers.get(shard.teacher)
        if tp is None:
            return
        st = shard.stats
        tp.add_shard(shard.shard, st.outputs, st.kept, sum(st.dropped.values()), st.output_tokens, now)
        if tp.done:
            self.term.line(tp.done_line(now))

    # ------------------------------------------------------------------ the refresh thread
    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self._refresh()
            except Exception:
                log.debug("console refresh failed", exc_info=True)

    def _discover(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_glob < GLOB_EVERY_S:
            return
        self._last_glob = now
        for w in self._watches:
            for path in sorted(glob.glob(w.pattern)):
                if path not in self._tails:
                    self._follow(w, path, now)

    def _follow(self, w: _Watch, path: str, now: float) -> None:
        """Follow one metrics log from where it ends now (an earlier run's records are not this one's)."""
        label = w.label.replace("{dir}", os.path.basename(os.path.dirname(path)))
        tp = TrainingProgress(label, w.total, t_start=now if glob.has_magic(w.pattern) else w.since)
        self._tails[path] = (MetricsTail(path, w.existing.get(path, 0)), tp)
        self.state.trainings[path] = tp

    def _poll_trainings(self, final: bool = False) -> None:
        """Read new metrics records; a training that finished (or stopped, at the end) leaves its line."""
        now = time.time()
        self._discover(now, force=final)
        for tail, tp in self._tails.values():
            for rec in tail.read():
                tp.update(rec)
            if tp.started and not tp.reported_done and not os.path.exists(tail.path):
                # its folder was removed: a bootstrapped teacher's work folder goes once the teacher
                # is exported (which the bootstrap says itself), sometimes before its last record
                # was read; it must not stay in the status line as a training at step N-1
                tp.reported_done = True
            if (tp.done or (final and tp.started)) and not tp.reported_done:
                tp.reported_done = True
                self.term.line(tp.done_line())

    def _refresh(self, final: bool = False) -> None:
        with self._lock:
            now = time.time()
            self._poll_trainings(final)
            if final:
                return
            status = self.state.status(now)
            stamped = f"[{format_seconds(now - self._t0)}] {status}" if status else ""
            if self.term.live:
                self.term.status(stamped)
            elif self._throttle.due(now, status):
                self.term.line(stamped)


def generation_plan(cfg: Any, shard_size: int | None) -> dict[str, tuple[int, int, set[int]]]:
    """``{teacher: (examples of the generation split, shard size, shards already committed)}``.

    Asks the owners (``split_size``, ``resolve_shard_size``, the store) what the pipeline
    will see; on any failure the console just shows less (an empty plan).
    """
    try:
        from tinyllm_ray.data.loader import split_size
        from tinyllm_ray.store import RationaleStore, resolve_shard_size

        n = split_size(cfg.data, "train")  # a generated split is not loaded to be counted
        store = RationaleStore(cfg.runtime.resolved_store_uri)
        stored = store.read_manifest()
        size, _ = resolve_shard_size(shard_size, (stored or {}).get("shard_size"),
                                     [t.batch_size for t in cfg.teachers])
        return {t.name: (n, size, set(store.finished_shards(t.name)) if stored else set()) for t in cfg.teachers}
    except Exception:
        log.debug("no generation plan for the console", exc_info=True)
        return {}

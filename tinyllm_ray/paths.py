"""Where one job writes everything: :class:`RunPaths`, built once from ``cfg.runtime``.

Why one object: the run folder, the rationale store, Ray Train's storage, the exported
student, the Tune folder and the report files used to be derived in five places, each
with its own ``"://"`` test and its own idea of when a relative path becomes absolute.
Relative paths are made absolute **once, at construction, against the driver's working
directory**, because the processes that read them later (Tune trials, Ray Train workers,
the Train controller, ``ray job submit`` drivers whose working dir Ray may garbage-collect)
run elsewhere; URIs stay URIs (``tinyllm_ray.store.is_uri`` is the one test).

Low level on purpose: imports only the config models and the store's ``is_uri``, so the
stages (``student/trainer.py``, ``tune.py``) and ``jobs/`` all import it without cycles.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from tinyllm_ray.config import JobConfig, RuntimeConfig, validate_config
from tinyllm_ray.store import is_uri

__all__ = ["RunPaths", "absolute", "join", "persistent_base"]

log = logging.getLogger(__name__)

STUDENT_DIR = "student"
TUNE_DIR = "tune"
COMPARE_DIR = "compare"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "training.png"
LOGS_DIR = "logs"
CONSOLE_LOG = "console.log"


#: Part of the working directory of a ``ray job submit`` driver: Ray's own copy of the
#: ``--working-dir``, which Ray deletes (``<temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_*``).
RAY_WORKING_DIR_COPY = os.sep + os.path.join("runtime_resources", "working_dir_files") + os.sep
#: Where relative paths of a job running in such a copy go instead (``$TINYLLM_HOME``).
HOME_ENV = "TINYLLM_HOME"


def persistent_base() -> str | None:
    """The folder relative paths resolve against when the working dir is Ray's temporary copy, else None.

    Why: ``ray job submit --working-dir . -- tinyllm-ray run`` runs the driver inside Ray's
    copy of the working dir, so ``./runs`` would put the student, the store and the report
    in a folder Ray manages and garbage-collects. There, relative paths go to
    ``$TINYLLM_HOME`` (default ``~/tinyllm-ray``) on the driver's node instead; an absolute
    path or a URI (``s3://``, ``gs://``; needed on a multi-node cluster without a shared
    filesystem) is always used as given.
    """
    try:
        cwd = os.getcwd() + os.sep
    except FileNotFoundError:  # Ray already deleted its copy under us: certainly not a place to write
        cwd = RAY_WORKING_DIR_COPY
    if RAY_WORKING_DIR_COPY not in cwd:
        return None
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or "~/tinyllm-ray"))


def absolute(path: str) -> str:
    """A local path made absolute (``~`` expanded); a URI unchanged.

    Relative paths resolve against the current directory, except in a ``ray job submit``
    driver's temporary working-dir copy, where they resolve against :func:`persistent_base`
    (logged once per path).
    """
    if is_uri(path):
        return path.rstrip("/")
    path = os.path.expanduser(path)
    base = None if os.path.isabs(path) else persistent_base()
    if base is None:
        return os.path.abspath(path)
    out = os.path.abspath(os.path.join(base, path))
    if out not in _LOGGED:
        _LOGGED.add(out)
        log.warning("%r is relative and this job runs in Ray's temporary copy of its working dir (deleted by "
                    "Ray); writing to %s instead (set runtime.storage_path to an absolute path or a URI, or "
                    "$%s, to choose)", path, out, HOME_ENV)
    return out


_LOGGED: set[str] = set()


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (URIs always use ``/``)."""
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


@dataclass(frozen=True)
class RunPaths:
    """Every location of one run; local ones absolute, URIs as given.

    ``run``      ``<storage_path>/<run_name>``: every artifact of the job lives below it
    ``store``    the rationale store (``runtime.store_uri`` or ``<run>/rationales``)
    ``train``    Ray Train's ``storage_path`` (checkpoints under ``<train>/train/``)
    ``student``  the exported best student (Hugging Face folder)
    ``tune``     the Tune folder (trials, results table, plot, best config)
    (and ``console_log``: what the CLI keeps off the terminal, ``<run>/logs/console.log``)
    """

    run: str
    store: str
    train: str
    student: str
    tune: str

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig) -> RunPaths:
        run = join(absolute(runtime.storage_path), runtime.run_name)
        return cls(run=run, store=absolute(runtime.resolved_store_uri), train=run,
                   student=join(run, STUDENT_DIR), tune=join(run, TUNE_DIR))

    @classmethod
    def of(cls, cfg: JobConfig) -> RunPaths:
        """The paths of ``cfg`` (same as ``from_runtime(cfg.runtime)``)."""
        return cls.from_runtime(cfg.runtime)

    @property
    def local(self) -> bool:
        """Whether the run folder is on the local filesystem (reports, metrics logs)."""
        return not is_uri(self.run)

    @property
    def report_json(self) -> str:
        return join(self.run, REPORT_JSON)

    @property
    def report_md(self) -> str:
        return join(self.run, REPORT_MD)

    @property
    def report_png(self) -> str:
        """Per-task losses and validation accuracy against the step (linked from report.md)."""
        return join(self.run, REPORT_PNG)

    @property
    def console_log(self) -> str:
        """The local file the CLI sends Ray's, the workers' and third-party output to (``-v``: the terminal).

        ``<run>/logs/console.log``; a run folder that is a URI cannot take an appended
        log, so such a run logs to ``<tmp>/tinyllm-ray-<run_name>/console.log`` on the driver.
        """
        if self.local:
            return join(self.run, LOGS_DIR, CONSOLE_LOG)
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"tinyllm-ray-{os.path.basename(self.run)}", CONSOLE_LOG)

    @property
    def tune_trials(self) -> str:
        """Ray Train storage of the Tune trials (one folder per trial)."""
        return join(self.tune, "trials")

    @property
    def compare(self) -> str:
        """``tinyllm-ray compare``'s folder: compare.md/.json/.png, per-trial results, teacher rows."""
        return join(self.run, COMPARE_DIR)

    def trial_student(self, trial: str) -> str:
        """Where trial ``trial`` exports its best student (never the run's own student)."""
        return join(self.tune_trials, trial, STUDENT_DIR)

    def pin(self, cfg: JobConfig) -> JobConfig:
        """``cfg`` with ``storage_path``, ``store_uri`` (and ``record_cache_uri``) replaced by these absolute locations.

        Why: a config travels to Tune trials and Ray Train workers as JSON and is turned
        into paths again there; pinned, every process derives the same :class:`RunPaths`
        whatever its working directory.
        """
        raw = cfg.model_dump(mode="json")
        raw["runtime"]["storage_path"] = absolute(cfg.runtime.storage_path)
        raw["runtime"]["store_uri"] = self.store
        if cfg.runtime.record_cache_uri:
            raw["runtime"]["record_cache_uri"] = absolute(cfg.runtime.record_cache_uri)
        return validate_config(raw, source="run paths")

    def describe(self) -> dict[str, str]:
        """Where a user finds the results (for reports and the job's last log lines)."""
        return {"student": self.student, "store": self.store, "report": self.report_md}

"""Every error a user can cause, in one place, under one base: :class:`UserError`.

Why one module: the CLI has exactly one rule — a :class:`UserError` is printed as one
line (``tinyllm-ray <command>: <message>``) and exits 2; anything else is a bug and
keeps its traceback. That rule only holds if every user-facing error derives from
:class:`UserError`, so they are all defined here and the stage modules import them
(never define their own). Each message names what is wrong *and* what to do.

Errors that mean "this project has a bug" (statistics that do not add up, a shard that
receives more outputs than it can have) are :class:`InternalError`: never caught, never
shortened.

Pure: imports nothing from the package.
"""

from __future__ import annotations

__all__ = [
    "BuildLockError",
    "ConfigError",
    "CorruptShardError",
    "DataError",
    "DataLoadError",
    "EmptyEvaluationError",
    "EmptyTargetError",
    "GenerationError",
    "InternalError",
    "MalformedRowError",
    "MissingTeacherError",
    "PlacementError",
    "PretrainedModelError",
    "SecondRayError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StreamingError",
    "TaskDataError",
    "TeacherStartupError",
    "TruncationError",
    "UsageError",
    "UserError",
    "find_user_error",
]


class UserError(Exception):
    """A problem the user can fix (input, config, order of commands, cluster size).

    The CLI prints ``str(exc)`` as one line and exits 2; ``-v`` adds the traceback.
    """


class InternalError(RuntimeError):
    """A broken invariant inside tinyllm-ray (a bug): never shortened, always a traceback."""


# --------------------------------------------------------------------------- config and usage


class ConfigError(UserError, ValueError):
    """A configuration problem, phrased as one line per field naming the field and the fix."""


class UsageError(UserError, RuntimeError):
    """A command used out of order or with arguments that name nothing (e.g. ``train`` before ``generate``)."""


# --------------------------------------------------------------------------- data


class DataError(UserError, ValueError):
    """The dataset cannot be used as configured."""


class DataLoadError(DataError):
    """A source-level problem (missing file, wrong layout, no splits); the message says the fix."""


class MalformedRowError(DataError):
    """A bad row in a named source, with the fix in the message.

    ``source`` is a file path or ``hub:<name>[<split>]``; ``row`` is 1-based: the line
    number in a JSON Lines file (``unit="line"``, what an editor shows), else the n-th data
    row of the source (``unit="row"``: a JSON array's element, a CSV/Parquet row).
    """

    def __init__(self, source: str, row: int, reason: str, detail: str, unit: str = "row") -> None:
        self.source = source
        self.row = row
        self.reason = reason
        self.detail = detail
        self.unit = unit
        super().__init__(
            f"{source}: {unit} {row}: {reason}: {detail}. Fix or remove the row, or set "
            f"data.on_malformed: skip to drop such rows and count them by reason"
        )

    def __reduce__(self):  # picklable across Ray processes despite the custom __init__
        return (type(self), (self.source, self.row, self.reason, self.detail, self.unit))


class SplitOverlapError(DataLoadError):
    """Examples repeated across splits (a student scored on what it trained on); says how to resolve it."""


class EmptyEvaluationError(DataError):
    """Nothing to evaluate (empty split, or a limit of zero rows): never scored as 0.0."""


# --------------------------------------------------------------------------- teachers and the store


class GenerationError(UserError, RuntimeError):
    """The generation job failed; the message names the teacher and the cause."""


class TeacherStartupError(GenerationError):
    """A teacher's vLLM engine could not start; the message names the teacher and the cause."""


class PlacementError(UserError, ValueError):
    """A teacher can never be scheduled on this cluster; the message names it and the fix."""


class PretrainedModelError(UserError, RuntimeError):
    """A pretrained model cannot be found or converted; the message says the fix."""


class StoreMismatchError(UserError, RuntimeError):
    """The store was written by a different generation config or dataset."""


class CorruptShardError(UserError, RuntimeError):
    """A committed shard file cannot be read (truncated, overwritten); the message names it and how to regenerate it."""


class StoreNotFoundError(UsageError):
    """The rationale store (or the part a command needs) does not exist yet."""


class StreamingError(UserError, RuntimeError):
    """Streaming cannot proceed (generation failed, or a shard never arrived)."""


# --------------------------------------------------------------------------- student


class TaskDataError(UserError, ValueError):
    """The store or the dataset cannot become student task rows; the message says the fix."""


class MissingTeacherError(TaskDataError):
    """A configured teacher has no rows (of a needed kind) in the rationale store."""


class EmptyTargetError(TaskDataError):
    """A task row would have an empty target (the student would learn to say nothing)."""


class TruncationError(UserError, ValueError):
    """A row is longer than the configured maximum and ``student.truncation`` is ``error``."""


class BuildLockError(UserError, RuntimeError):
    """A JIT extension build lock outlived its deadline (a build killed half way left it)."""


class SecondRayError(UsageError):
    """A local Ray would start beside one already running on this machine."""


# --------------------------------------------------------------------------- unwrapping


def find_user_error(exc: BaseException) -> UserError | None:
    """Our :class:`UserError` inside an error Ray raised for a task, actor or worker.

    Why: Ray Data, Ray Train and Ray core wrap a remote failure (``RayTaskError``,
    Train's worker-group error with ``worker_failures``), sometimes keeping only its text.
    The CLI can only print one line for what it can find; this looks through causes,
    Train's per-worker failures and, last, the text (``<Name>Error: <message>``).
    """
    import re

    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += [x for x in failures.values() if isinstance(x, BaseException)]
    for m in re.finditer(r"\b(\w+Error): (.+)", str(exc)):
        cls = globals().get(m.group(1))
        if isinstance(cls, type) and issubclass(cls, UserError):
            try:
                return cls(m.group(2).strip())
            except TypeError:  # an error with a structured constructor: keep Ray's
                return None
    return None

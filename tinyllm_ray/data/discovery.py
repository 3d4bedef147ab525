"""Which local files hold which split: ``data.files`` as given, or found under ``data.path``.

Names decide a split only where a Hugging Face ``datasets`` user expects them to: in a
*folder* (``load_dataset("path/to/folder")`` infers splits from file names, with the same
keywords as :data:`DEFAULT_SPLIT_NAMES`), and the choice is logged. A single file given as
``data.path`` is the train split whatever its name, as ``load_dataset("json",
data_files="dev.jsonl")`` makes it ``train``; ``data.files`` names every split explicitly.

Why matching by name tokens: datasets ship their splits as ``train.json``,
``obqa_train.jsonl``, ``ARC-Challenge-train.jsonl`` or ``train-00000-of-00002.parquet``;
splitting names on ``-``/``_``/``.`` and looking for the split's name as a contiguous
run of tokens accepts all of them, and ``data.split_names`` / ``data.hub_config`` settle
the rest. An ambiguous folder is an error that lists the files, never a guess.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path

from tinyllm_ray.config import GENERATED_DATASETS, SPLITS, DataConfig
from tinyllm_ray.data.adapters import DatasetAdapter
from tinyllm_ray.errors import DataLoadError

log = logging.getLogger(__name__)

# Names a dataset may give each canonical split, most common first: the keywords of
# ``datasets.data_files.SPLIT_KEYWORDS`` (datasets 4.x), so a folder splits as it would on the hub.
DEFAULT_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
FORMAT_BY_SUFFIX = {
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_SHARD_RE = re.compile(r"[-_]\d{5}[-_]of[-_]\d{5}$")
_TOKEN_RE = re.compile(r"[-_.\s]+")


def where(cfg: DataConfig) -> str:
    """The configured source in config terms, for error messages the user can act on."""
    if cfg.files:
        return f"data.files={dict(cfg.files)}"
    return f"data.path={cfg.path!r}" + (f" (hub_config {cfg.hub_config!r})" if cfg.hub_config else "")


def looks_local(path: str) -> bool:
    """A path the user clearly meant as local (so a typo is not sent to the hub)."""
    return (
        path.startswith(("/", "./", "../", "~", "."))
        or Path(path).suffix.lower() in (*FORMAT_BY_SUFFIX, *COMPRESSION_SUFFIXES)
        or path.count("/") > 1
    )


def reads_hub(cfg: DataConfig) -> bool:
    """Whether ``load_splits`` would download ``data.path`` from the hub (not a file, folder or generated task).

    Why callers ask: pre-flight checks read local data in a second, but must not start
    a download on a machine that may have no network (the stage itself loads it later).
    """
    if cfg.name in GENERATED_DATASETS or cfg.files or cfg.path is None:
        return False
    return not Path(cfg.path).expanduser().exists() and not looks_local(cfg.path)


def resolve_files(cfg: DataConfig) -> dict[str, list[Path]]:
    """``data.files`` -> existing paths per split (globs expanded, relative to a data.path dir)."""
    base = Path(cfg.path).expanduser() if cfg.path and Path(cfg.path).expanduser().is_dir() else None
    out: dict[str, list[Path]] = {}
    for split in SPLITS:
        spec = cfg.files.get(split)  # type: ignore[call-overload]
        if spec is None:
            continue
        paths: list[Path] = []
        for item in [spec] if isinstance(spec, str) else spec:
            p = Path(item).expanduser()
            if not p.is_absolute() and base is not None and not p.exists():
                p = base / p
            if any(ch in str(p) for ch in "*?["):
                matches = [Path(m) for m in sorted(glob.glob(str(p))) if Path(m).is_file()]
                if not matches:
                    raise DataLoadError(f"data.files.{split}: pattern {item!r} matches no file")
                paths.extend(matches)
            elif p.is_file():
                paths.append(p)
            else:
                raise DataLoadError(f"data.files.{split}: file {item!r} not found (resolved to {p})")
        out[split] = paths
    return out


def _tokens(name: str) -> list[str]:
    return [t for t in _TOKEN_RE.split(name.lower()) if t]


def _contains(tokens: list[str], sub: list[str]) -> bool:
    """``sub`` occurs as a contiguous run in ``tokens`` (``ARC-Challenge`` in ``ARC-Challenge-train``)."""
    k = len(sub)
    return k > 0 and any(tokens[i : i + k] == sub for i in range(len(tokens) - k + 1))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.rsplit(".", 1)[0] if "." in name else name


def _data_files_in(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and format_of(p, "auto", strict=False) is not None
    )


def split_candidates(cfg: DataConfig, adapter: DatasetAdapter, split: str) -> list[str]:
    """Names ``split`` may have: ``data.split_names`` alone if set, else the adapter's and the usual ones."""
    if split in cfg.split_names:
        return [cfg.split_names[split]]  # type: ignore[index]
    extra = [adapter.default_split_names[split]] if split in adapter.default_split_names else []
    return [*extra, *DEFAULT_SPLIT_NAMES[split]]


def _split_of_file(path: Path, cfg: DataConfig, adapter: DatasetAdapter) -> str | None:
    tokens = _tokens(_stem(path))
    for split in SPLITS:
        if any(_contains(tokens, _tokens(name)) for name in split_candidates(cfg, adapter, split)):
            return split
    return None


def discover_files(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[Path]]:
    """Files per split under a local ``data.path`` (a file or a directory).

    Matching is by name tokens (``-``/``_``/``.`` separated), so ``train.json``,
    ``obqa_train.jsonl``, ``ARC-Challenge-train.jsonl`` and ``train-00000-of-00002.parquet``
    all count as train. Several matches for one split are accepted only when they are
    shards of one file; otherwise the error lists them and asks for ``hub_config`` or
    ``data.files``.
    """
    assert cfg.path is not None
    root = Path(cfg.path).expanduser()
    if root.is_file():
        named = _split_of_file(root, cfg, adapter)
        if named not in (None, "train"):
            log.warning("data.path is one file, so %s is the train split although its name says %s (as in "
                        "datasets.load_dataset('json', data_files=...)); to use it as %s, set data.files.%s "
                        "instead of data.path", root.name, named, named, named)
        else:
            log.info("data.path is one file: %s is the train split (validation and test are carved from it "
                     "by data.validation_fraction / data.test_fraction, or given in data.files)", root)
        return {"train": [root]}

    directory = root
    if cfg.hub_config and (root / cfg.hub_config).is_dir():
        directory = root / cfg.hub_config  # HF repo layout: <repo>/<config>/<split>-*.parquet
    candidates = _data_files_in(directory)
    if not candidates and (directory / "data").is_dir():
        directory = directory / "data"
        candidates = _data_files_in(directory)
    if cfg.hub_config and directory == root:
        wanted = _tokens(cfg.hub_config)
        candidates = [p for p in candidates if _contains(_tokens(_stem(p)), wanted)]
        if not candidates:
            raise DataLoadError(
                f"no file in {root} has {cfg.hub_config!r} in its name (data.hub_config); files: "
                f"{[p.name for p in _data_files_in(root)]}"
            )

    found: dict[str, list[Path]] = {}
    for p in candidates:
        split = _split_of_file(p, cfg, adapter)
        if split is not None:
            found.setdefault(split, []).append(p)
    if not found:
        raise DataLoadError(
            f"no train/validation/test files found in {directory} (files: {[p.name for p in candidates]}); "
            "name them train/valid/test, map names with data.split_names, or list them in data.files"
        )
    for split, paths in found.items():
        if len({_SHARD_RE.sub("", _stem(p)) for p in paths}) > 1:
            raise DataLoadError(
                f"several files in {directory} look like the {split} split: {[p.name for p in paths]}; "
                "pick one with data.hub_config (e.g. ARC-Challenge) or list files in data.files"
            )
    log.info("found %s in %s", {s: [p.name for p in ps] for s, ps in found.items()}, directory)
    return found


def format_of(path: Path, fmt: str, strict: bool = True) -> str | None:
    """The ``datasets`` builder for ``path`` (``data.format`` wins over the suffix; ``.gz`` etc. ignored)."""
    if fmt != "auto":
        return "json" if fmt in ("json", "jsonl") else fmt
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    found = FORMAT_BY_SUFFIX.get(suffix)
    if found is None and strict:
        raise DataLoadError(f"cannot tell the format of {path} from its suffix; set data.format (json, parquet, csv)")
    return found

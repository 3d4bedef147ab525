"""``load_splits(cfg.data) -> LoadedData``: any supported source -> validated records per split.

Why everything funnels through here: the teachers, the student and evaluation must see
the *same* train/validation/test records, so carving, limits, id checks and malformed-row
policy are decided once, from the config, deterministically.

Sources, in the order they are tried:

1. ``data.name: synthetic`` -> the built-in learnable demo task (no files).
2. ``data.files`` -> exactly those files per split (relative paths resolve against
   ``data.path`` when that is a directory).
3. ``data.path`` that exists locally -> a file (its split is read from its name, else it
   is the train split) or a directory searched for ``train`` / ``validation|valid|dev|val``
   / ``test`` files (``data.split_names`` overrides the names; ``data.hub_config`` picks
   among several subsets, e.g. ``ARC-Challenge`` in an ``ai2_arc`` folder).
4. Anything else is a hub name -> ``datasets.load_dataset(path, hub_config)`` (cluster only;
   never reached in tests).

Split policy:

* Missing validation -> carved from train with ``data.seed`` and ``data.validation_fraction``
  (never from test: test stays untouched for the final number).
* Missing train (e.g. the shared PIQA copy ships only valid/test) -> no ``train`` split is
  returned and a warning is logged. Train is never carved from validation or test; callers
  that need it call :meth:`LoadedData.require`, which raises with the fix.
* ``data.limit`` keeps the first N rows of a split, after carving (deterministic).
* A split in which *no* row has a gold answer (hidden-label test sets: CommonsenseQA,
  RiddleSense, PIQA on the hub) is left out with a warning and counted in ``skipped``
  rather than failing under ``on_malformed: error``; one unlabelled row among labelled
  ones is still an error.

Local files are read with the ``datasets`` JSON/Parquet/CSV builders. If the JSON builder
fails (a malformed line, an exotic layout), the file is re-read with the standard ``json``
module, which accepts one JSON array, JSON Lines, or an object holding the row list
(``{"questions": [...]}``, BioASQ) and reports a broken line as an ``invalid_json`` row.
"""

from __future__ import annotations

import glob
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyllm_ray.config import SPLITS, DataConfig
from tinyllm_ray.data.adapters import TINYLLM, DatasetAdapter, get_adapter
from tinyllm_ray.data.schema import (
    REASON_DUPLICATE_ID,
    REASON_INVALID_JSON,
    REASON_NO_ANSWER,
    REASON_TOO_FEW_CHOICES,
    MalformedRowError,
    MCQRecord,
    RowError,
)
from tinyllm_ray.data.synthetic import make_synthetic_splits
from tinyllm_ray.errors import DataLoadError

log = logging.getLogger(__name__)

# Names a dataset may give each canonical split, most common first.
DEFAULT_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
_FORMAT_BY_SUFFIX = {
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_SHARD_RE = re.compile(r"[-_]\d{5}[-_]of[-_]\d{5}$")
_TOKEN_RE = re.compile(r"[-_.\s]+")


@dataclass
class LoadedData:
    """Validated records per canonical split, plus what was dropped and where it came from.

    ``skipped[split][reason]`` counts rows dropped under ``on_malformed: skip`` (carved
    validation rows are counted under ``train``, where they were read); ``sources[split]``
    says which file / hub split / carving produced each split, for logs and manifests.
    """

    splits: dict[str, list[MCQRecord]]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def require(self, split: str) -> list[MCQRecord]:
        """Records of ``split`` or a :class:`DataLoadError` explaining how to provide it."""
        if split not in self.splits:
            have = ", ".join(f"{s} ({len(r)})" for s, r in self.splits.items()) or "none"
            raise DataLoadError(
                f"the dataset has no {split!r} split (loaded: {have}). Provide one with "
                f"data.files.{split}: <file>, or point data.path at a folder holding a {split} file"
                + ("; train is never carved from validation or test" if split == "train" else "")
            )
        return self.splits[split]

    def sizes(self) -> dict[str, int]:
        """``{split: number of records}`` (for manifests and logs)."""
        return {s: len(r) for s, r in self.splits.items()}

    def total_skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())


@dataclass
class _RawPart:
    """Raw rows of one source (file or hub split) before adaptation."""

    source: str
    rows: list[Any]  # dicts, or RowError placeholders for unparsable JSON lines
    columns: list[str]


# --------------------------------------------------------------------------- public entry


def load_splits(cfg: DataConfig) -> LoadedData:
    """Load, adapt, validate, carve and limit the dataset described by ``cfg``."""
    if cfg.name == "synthetic":
        splits = make_synthetic_splits(cfg.synthetic, seed=cfg.seed)
        sources = {s: f"synthetic (seed {cfg.seed})" for s in splits}
        splits = _apply_limits(splits, cfg.limit)
        return LoadedData(splits=splits, skipped={s: {} for s in splits}, sources=sources)

    adapter = get_adapter(cfg.name, cfg.columns)
    raw = _read_sources(cfg, adapter)
    if not raw:
        raise DataLoadError(f"no train/validation/test data found for dataset {cfg.name!r} at {_where(cfg)}")

    splits: dict[str, list[MCQRecord]] = {}
    skipped: dict[str, dict[str, int]] = {}
    sources: dict[str, str] = {}
    for split in SPLITS:
        if split not in raw:
            continue
        try:
            records, counts = _to_records(split, raw[split], adapter, cfg.on_malformed)
        except MalformedRowError as err:
            if err.reason != REASON_NO_ANSWER or not _all_unlabelled(split, raw[split], adapter):
                raise
            records, counts = [], {REASON_NO_ANSWER: sum(len(p.rows) for p in raw[split])}
        if records == [] and set(counts) == {REASON_NO_ANSWER}:
            # Hidden-label test sets (CommonsenseQA, RiddleSense, PIQA on the hub) are not
            # malformed, just unusable here: leave the split out instead of failing the job.
            log.warning("split %s of %r has no gold answers in any of its %d rows (hidden test labels): "
                        "leaving it out; evaluate on validation or supply data.files.%s",
                        split, cfg.name, counts[REASON_NO_ANSWER], split)
            skipped[split] = counts
            continue
        splits[split], skipped[split] = records, counts
        sources[split] = " + ".join(p.source for p in raw[split])
        if not records:
            log.warning("split %s of %r is empty (%s)", split, cfg.name, sources[split])
        if counts:
            log.warning("split %s: skipped %d malformed rows %s", split, sum(counts.values()), counts)

    if "validation" not in splits and "train" in splits:
        splits["train"], splits["validation"] = carve_validation(
            splits["train"], cfg.validation_fraction, cfg.seed
        )
        sources["validation"] = (
            f"{cfg.validation_fraction:g} of train carved with seed {cfg.seed} ({sources['train']})"
        )
        log.info("no validation split: carved %d of %d train rows (seed %d); test is never used for this",
                 len(splits["validation"]), len(splits["train"]) + len(splits["validation"]), cfg.seed)
    if "train" not in splits:
        log.warning(
            "dataset %r at %s has no train split; teachers/student stages will ask for one "
            "(set data.files.train). Train is never carved from validation or test.",
            cfg.name, _where(cfg),
        )
    splits = _apply_limits(splits, cfg.limit)
    log.info("loaded %s: %s", cfg.name, {s: len(r) for s, r in splits.items()})
    return LoadedData(splits=splits, skipped=skipped, sources=sources)


def carve_validation(
    train: Sequence[MCQRecord], fraction: float, seed: int
) -> tuple[list[MCQRecord], list[MCQRecord]]:
    """Split ``train`` into (train, validation), both keeping the original row order.

    ``round(len * fraction)`` rows (at least 1) go to validation, chosen by a seeded
    shuffle of positions, so the same config always yields the same split.
    """
    n = len(train)
    if n < 2:
        raise DataLoadError(
            f"cannot carve a validation split from {n} train row(s); provide data.files.validation"
        )
    n_val = min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    kept = [r for i, r in enumerate(train) if i not in val_idx]
    val = [r for i, r in enumerate(train) if i in val_idx]
    return kept, val


# --------------------------------------------------------------------------- adaptation


def _to_records(
    split: str, parts: list[_RawPart], adapter: DatasetAdapter, on_malformed: str
) -> tuple[list[MCQRecord], dict[str, int]]:
    """Adapt and validate every row of a split; raise or count the bad ones."""
    records: list[MCQRecord] = []
    counts: Counter[str] = Counter()
    seen: dict[str, tuple[str, int]] = {}
    n = 0  # running index across the split's files: fallback ids stay unique
    for part in parts:
        part_adapter = _adapter_for(part, adapter)
        for row_no, row in enumerate(part.rows, start=1):
            fallback_id = f"{split}-{n}"
            n += 1
            try:
                if isinstance(row, RowError):
                    raise row
                record = MCQRecord.from_dict(part_adapter(row, fallback_id))
                if not record.choices and not part_adapter.free_form:
                    raise RowError(REASON_TOO_FEW_CHOICES, f"{adapter.name} is multiple-choice but the row has no choices")
                if record.id in seen:
                    first_src, first_row = seen[record.id]
                    raise RowError(REASON_DUPLICATE_ID, f"id {record.id!r} already used at {first_src} row {first_row}")
            except RowError as err:
                if on_malformed != "skip":
                    raise MalformedRowError(part.source, row_no, err.reason, err.detail) from None
                counts[err.reason] += 1
                continue
            seen[record.id] = (part.source, row_no)
            records.append(record)
    return records, dict(counts)


def _all_unlabelled(split: str, parts: list[_RawPart], adapter: DatasetAdapter) -> bool:
    """True when every row of the split lacks an answer (a hidden-label test set)."""
    records, counts = _to_records(split, parts, adapter, "skip")
    return not records and set(counts) == {REASON_NO_ANSWER}


def _adapter_for(part: _RawPart, adapter: DatasetAdapter) -> DatasetAdapter:
    """The adapter for this source, switching to the TinyLLM layout when that is what it holds.

    Why: ``data.name: obqa`` pointed at TinyLLM's processed OpenBookQA (``{id, question,
    choices: [text], answer}``) is a reasonable config; refusing it would only make the
    user rename the dataset. Any other layout mismatch fails here, once, with the columns.
    """
    if not part.columns:  # empty source, or only unparsable lines: rows report themselves
        return adapter
    missing = adapter.missing_columns(part.columns)
    if not missing:
        return adapter
    if adapter.name != "generic" and not TINYLLM.missing_columns(part.columns):
        log.info("%s is in the TinyLLM layout (id, question, choices, answer): reading it with the "
                 "'tinyllm' adapter instead of %r", part.source, adapter.name)
        return TINYLLM
    hint = (
        "set data.columns to the file's column names" if adapter.name == "generic"
        else "use data.name: generic with data.columns, or data.name: tinyllm for TinyLLM-style files"
    )
    raise DataLoadError(
        f"{part.source}: the {adapter.name!r} adapter needs column(s) {missing} but the source has "
        f"{sorted(part.columns)}; {hint}"
    )


def _apply_limits(splits: dict[str, list[MCQRecord]], limit: Mapping[str, int]) -> dict[str, list[MCQRecord]]:
    """First N records of each limited split (after carving, so carving ignores limits)."""
    return {s: (recs[: limit[s]] if s in limit else recs) for s, recs in splits.items()}


# --------------------------------------------------------------------------- sources


def _where(cfg: DataConfig) -> str:
    if cfg.files:
        return f"data.files={dict(cfg.files)}"
    return f"data.path={cfg.path!r}" + (f" (hub_config {cfg.hub_config!r})" if cfg.hub_config else "")


def _looks_local(path: str) -> bool:
    """A path the user clearly meant as local (so a typo is not sent to the hub)."""
    return (
        path.startswith(("/", "./", "../", "~", "."))
        or Path(path).suffix.lower() in (*_FORMAT_BY_SUFFIX, *_COMPRESSION_SUFFIXES)
        or path.count("/") > 1
    )


def _read_sources(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[_RawPart]]:
    if cfg.files:
        files = resolve_files(cfg)
    elif cfg.path is not None and Path(cfg.path).expanduser().exists():
        files = discover_files(cfg, adapter)
    elif cfg.path is not None and _looks_local(cfg.path):
        example = adapter.hub or "allenai/ai2_arc"
        raise DataLoadError(
            f"data.path {cfg.path!r} does not exist (looked for it relative to {Path.cwd()}); "
            f"fix the path, or give a hub dataset name like {example!r}"
        )
    else:
        return _read_hub(cfg, adapter)
    return {split: [_read_file(p, cfg.format) for p in paths] for split, paths in files.items()}


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
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.rsplit(".", 1)[0] if "." in name else name


def _data_files_in(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and _format_of(p, "auto", strict=False) is not None
    )


def _split_candidates(cfg: DataConfig, adapter: DatasetAdapter, split: str) -> list[str]:
    if split in cfg.split_names:
        return [cfg.split_names[split]]  # type: ignore[index]
    extra = [adapter.default_split_names[split]] if split in adapter.default_split_names else []
    return [*extra, *DEFAULT_SPLIT_NAMES[split]]


def _split_of_file(path: Path, cfg: DataConfig, adapter: DatasetAdapter) -> str | None:
    tokens = _tokens(_stem(path))
    for split in SPLITS:
        if any(_contains(tokens, _tokens(name)) for name in _split_candidates(cfg, adapter, split)):
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
        split = _split_of_file(root, cfg, adapter) or "train"
        log.info("data.path is one file: using %s as the %s split", root, split)
        return {split: [root]}

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


def _format_of(path: Path, fmt: str, strict: bool = True) -> str | None:
    if fmt != "auto":
        return "json" if fmt in ("json", "jsonl") else fmt
    name = path.name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    found = _FORMAT_BY_SUFFIX.get(suffix)
    if found is None and strict:
        raise DataLoadError(f"cannot tell the format of {path} from its suffix; set data.format (json, parquet, csv)")
    return found


# --------------------------------------------------------------------------- readers


def _read_file(path: Path, fmt: str) -> _RawPart:
    """Rows of one local file, read through ``datasets`` (JSON has a pure-json fallback)."""
    kind = _format_of(path, fmt)
    assert kind is not None
    try:
        rows, columns = _read_with_datasets(kind, path)
    except Exception as exc:  # any builder failure: JSON gets the fallback, others a clear error
        if kind != "json":
            raise DataLoadError(f"could not read {path} as {kind}: {type(exc).__name__}: {exc}") from exc
        log.info("datasets' JSON loader failed on %s (%s: %s); parsing it with the json module instead",
                 path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        rows = _read_json_plain(path)
        columns = list(next((r for r in rows if isinstance(r, dict)), {}).keys())
    return _RawPart(source=str(path), rows=rows, columns=columns)


def _read_with_datasets(kind: str, path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import datasets  # heavy: only when a file is actually read

    # Per-file progress bars are noise for benchmark-sized files, and reading a *local*
    # file must not touch the network: datasets otherwise sends a download-count request
    # per load, which stalls up to 3 s each on an offline machine. Restore both settings.
    bars_were_on = datasets.is_progress_bar_enabled()
    counts_were_on = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.disable_progress_bars()
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        ds = datasets.load_dataset(kind, data_files={"rows": str(path)}, split="rows")
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts_were_on
        if bars_were_on:
            datasets.enable_progress_bars()
    columns = list(ds.column_names)
    rows = ds.to_list()
    if kind == "json" and len(rows) == 1 and len(columns) == 1 and _is_row_list(rows[0][columns[0]]):
        # One JSON object holding the row list ({"questions": [...]}): unwrap it.
        rows = list(rows[0][columns[0]])
        columns = list(rows[0].keys()) if rows else []
    return rows, columns


def _is_row_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _read_json_plain(path: Path) -> list[Any]:
    """One JSON array / object-with-row-list, else JSON Lines (bad lines -> invalid_json rows)."""
    if path.suffix in _COMPRESSION_SUFFIXES:
        import fsspec

        with fsspec.open(str(path), "rt", compression="infer") as fh:
            text = fh.read()
    else:
        text = path.read_text()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        return whole
    if isinstance(whole, dict):
        lists = [k for k, v in whole.items() if _is_row_list(v)]
        if len(lists) == 1:
            return list(whole[lists[0]])
        return [whole]
    rows: list[Any] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            rows.append(RowError(REASON_INVALID_JSON, f"line {line_no} is not valid JSON ({exc.msg})"))
    return rows


def _read_hub(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[_RawPart]]:
    """Hub dataset (cluster): one ``load_dataset`` call, splits mapped to canonical names."""
    import datasets

    assert cfg.path is not None
    log.info("loading %s (%s) from the Hugging Face hub", cfg.path, cfg.hub_config or "default config")
    dd = datasets.load_dataset(cfg.path, cfg.hub_config)
    available = list(dd.keys())
    out: dict[str, list[_RawPart]] = {}
    for split in SPLITS:
        name = next((n for n in _split_candidates(cfg, adapter, split) if n in available), None)
        if name is None:
            if split in cfg.split_names:
                raise DataLoadError(
                    f"data.split_names.{split}={cfg.split_names[split]!r} is not a split of {cfg.path}; "  # type: ignore[index]
                    f"available: {available}"
                )
            continue
        ds = dd[name]
        out[split] = [_RawPart(source=f"hub:{cfg.path}[{name}]", rows=ds.to_list(), columns=list(ds.column_names))]
    if not out:
        raise DataLoadError(
            f"hub dataset {cfg.path} has splits {available}, none recognised as train/validation/test; "
            "map them with data.split_names (e.g. validation: dev_r1)"
        )
    return out

"""Raw rows from wherever ``data`` points: local files (JSON, Parquet, CSV) or the hub.

Sources, in the order they are tried (:func:`read_sources`):

1. ``data.files`` -> exactly those files per split (relative paths resolve against
   ``data.path`` when that is a directory).
2. ``data.path`` that exists locally -> a file (its split is read from its name, else it
   is the train split) or a directory searched for ``train`` / ``validation|valid|dev|val``
   / ``test`` files (:mod:`tinyllm_ray.data.discovery`).
3. Anything else is a hub name -> ``datasets.load_dataset(path, hub_config)`` (cluster only;
   never reached in tests). A path that *looks* local but does not exist is an error, so
   a typo is not sent to the hub.

Local files are read with the ``datasets`` JSON/Parquet/CSV builders. If the JSON builder
fails (a malformed line, an exotic layout), the file is re-read with the standard ``json``
module, which accepts one JSON array, JSON Lines, or an object holding the row list
(``{"questions": [...]}``, BioASQ) and reports a broken line as an ``invalid_json`` row.
``datasets`` is imported only when a file is actually read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyllm_ray.config import SPLITS, DataConfig
from tinyllm_ray.data.adapters import DatasetAdapter
from tinyllm_ray.data.discovery import (
    COMPRESSION_SUFFIXES,
    discover_files,
    format_of,
    looks_local,
    resolve_files,
    split_candidates,
)
from tinyllm_ray.data.schema import REASON_INVALID_JSON, RowError
from tinyllm_ray.errors import DataLoadError

log = logging.getLogger(__name__)


@dataclass
class RawPart:
    """Raw rows of one source (file or hub split) before adaptation."""

    source: str
    rows: list[Any]  # dicts, or RowError placeholders for unparsable JSON lines
    columns: list[str]



def read_sources(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[RawPart]]:
    """Raw rows per split from the configured source (see the module docstring for the order)."""
    if cfg.files:
        files = resolve_files(cfg)
    elif cfg.path is not None and Path(cfg.path).expanduser().exists():
        files = discover_files(cfg, adapter)
    elif cfg.path is not None and looks_local(cfg.path):
        example = adapter.hub or "allenai/ai2_arc"
        raise DataLoadError(
            f"data.path {cfg.path!r} does not exist (looked for it relative to {Path.cwd()}); "
            f"fix the path, or give a hub dataset name like {example!r}"
        )
    else:
        return read_hub(cfg, adapter)
    return {split: [read_file(p, cfg.format) for p in paths] for split, paths in files.items()}



def read_file(path: Path, fmt: str) -> RawPart:
    """Rows of one local file, read through ``datasets`` (JSON has a pure-json fallback)."""
    kind = format_of(path, fmt)
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
    return RawPart(source=str(path), rows=rows, columns=columns)


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
    if path.suffix in COMPRESSION_SUFFIXES:
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


def read_hub(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[RawPart]]:
    """Hub dataset (cluster): one ``load_dataset`` call, splits mapped to canonical names."""
    import datasets

    assert cfg.path is not None
    log.info("loading %s (%s) from the Hugging Face hub", cfg.path, cfg.hub_config or "default config")
    dd = datasets.load_dataset(cfg.path, cfg.hub_config)
    available = list(dd.keys())
    out: dict[str, list[RawPart]] = {}
    for split in SPLITS:
        name = next((n for n in split_candidates(cfg, adapter, split) if n in available), None)
        if name is None:
            if split in cfg.split_names:
                raise DataLoadError(
                    f"data.split_names.{split}={cfg.split_names[split]!r} is not a split of {cfg.path}; "  # type: ignore[index]
                    f"available: {available}"
                )
            continue
        ds = dd[name]
        out[split] = [RawPart(source=f"hub:{cfg.path}[{name}]", rows=ds.to_list(), columns=list(ds.column_names))]
    if not out:
        raise DataLoadError(
            f"hub dataset {cfg.path} has splits {available}, none recognised as train/validation/test; "
            "map them with data.split_names (e.g. validation: dev_r1)"
        )
    return out

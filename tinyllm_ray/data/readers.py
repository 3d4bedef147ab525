"""Raw rows from wherever ``data`` points: local files (JSON, Parquet, CSV) or the hub.

Sources, in the order they are tried (:func:`read_sources`):

1. ``data.files`` -> exactly those files per split (relative paths resolve against
   ``data.path`` when that is a directory).
2. ``data.path`` that exists locally -> a file (always the train split, whatever its
   name) or a directory searched for ``train`` / ``validation|valid|dev|val`` / ``test``
   files (:mod:`tinyllm_ray.data.discovery`).
3. Anything else is a hub name -> ``datasets.load_dataset(path, hub_config)`` (cluster only;
   never reached in tests). A path that *looks* local but does not exist is an error, so
   a typo is not sent to the hub.

JSON files are read with the standard ``json`` module: one JSON array, an object holding
the row list (``{"questions": [...]}``, BioASQ), or JSON Lines, where each row keeps its
1-based line number so a bad row is reported at the line an editor shows (a broken line is
an ``invalid_json`` row: one message, its line, the file). Why not the ``datasets`` JSON
builder: on a broken line it fails with a pyarrow message whose row/byte position is not
the line's, it casts mixed-type columns, and it writes an Arrow cache for every file.
Parquet and CSV are read with the ``datasets`` builders (imported only when such a file is read).
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
    reads_hub,
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
    lines: list[int] | None = None  # 1-based line of each row (JSON Lines); None: rows are numbered



def read_sources(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[RawPart]]:
    """Raw rows per split from the configured source (see the module docstring for the order)."""
    if reads_hub(cfg):
        return read_hub(cfg, adapter)
    if cfg.files:
        files = resolve_files(cfg)
    elif cfg.path is not None and Path(cfg.path).expanduser().exists():
        files = discover_files(cfg, adapter)
    else:
        example = adapter.hub or "allenai/ai2_arc"
        raise DataLoadError(
            f"data.path {cfg.path!r} does not exist (looked for it relative to {Path.cwd()}); "
            f"fix the path, or give a hub dataset name like {example!r}"
        )
    return {split: [read_file(p, cfg.format) for p in paths] for split, paths in files.items()}



def read_file(path: Path, fmt: str) -> RawPart:
    """Rows of one local file: JSON with the ``json`` module, Parquet/CSV through ``datasets``."""
    kind = format_of(path, fmt)
    assert kind is not None
    if kind == "json":
        rows, lines = _read_json(path)
        return RawPart(source=str(path), rows=rows, columns=_columns(rows), lines=lines)
    try:
        rows, columns = _read_with_datasets(kind, path)
    except Exception as exc:  # any builder failure: one line naming the file and the format
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataLoadError(f"could not read {path} as {kind}: {type(exc).__name__}: {first}") from exc
    return RawPart(source=str(path), rows=rows, columns=columns)


def _columns(rows: list[Any]) -> list[str]:
    """Every key of every object row, in first-seen order (JSON rows need not share keys)."""
    seen: dict[str, None] = {}
    for r in rows:
        if isinstance(r, dict):
            seen.update(dict.fromkeys(r))
    return list(seen)


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
    return ds.to_list(), list(ds.column_names)


def _is_row_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def decode_text(data: bytes) -> str:
    """A JSON file's text: UTF-8 with or without a byte-order mark, never an exception.

    Why ``surrogateescape``: one invalid byte must cost one row, not the file with a bare
    ``UnicodeDecodeError``. Such bytes become lone surrogates that
    :class:`~tinyllm_ray.data.schema.MCQRecord` rejects as ``invalid_text`` (file and line
    named, or counted under ``on_malformed: skip``).
    """
    return data.decode("utf-8-sig", errors="surrogateescape")


def _read_json(path: Path) -> tuple[list[Any], list[int] | None]:
    """(rows, line of each row): one JSON array / object-with-row-list (lines None), else JSON Lines.

    A broken JSON Lines line becomes an ``invalid_json`` row at its line; a file that is
    one JSON value (starts with ``[``, or is a single multi-line object) and does not parse
    cannot be read past the error, so it fails as a whole, at the parser's line and column.
    """
    if path.suffix in COMPRESSION_SUFFIXES:
        import fsspec

        with fsspec.open(str(path), "rb", compression="infer") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    text = decode_text(data)
    error: json.JSONDecodeError | RecursionError | None = None
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deeply
        whole, error = None, exc
    if isinstance(whole, list):
        return whole, None
    if isinstance(whole, dict):
        # {"questions": [...]} is a wrapper; a one-line JSON Lines row with a list of dicts
        # (OpenBookQA's original choices) is not: unwrap only an object of one key.
        (_key, value), *more = whole.items() if whole else [(None, None)]
        return (list(value) if not more and _is_row_list(value) else [whole]), None
    if error is not None and text.lstrip().startswith("["):
        at = (f"line {error.lineno} column {error.colno}: not valid JSON ({error.msg})"
              if isinstance(error, json.JSONDecodeError) else "not readable JSON (nested too deeply)")
        raise DataLoadError(f"{path}: {at}; the file is one JSON array, so no row after the error can be read: "
                            "fix the file")
    rows: list[Any] = []
    lines: list[int] = []
    # Lines end at "\n" only (after CRLF/CR became "\n"), as an editor numbers them:
    # str.splitlines would also cut at U+2028, U+0085 or a form feed, which JSON allows
    # inside a string, turning one valid row into several invalid ones.
    for line_no, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            rows.append(RowError(REASON_INVALID_JSON, f"not valid JSON ({exc.msg} at column {exc.colno})"))
        except RecursionError:
            rows.append(RowError(REASON_INVALID_JSON, "JSON nested too deeply to read"))
        lines.append(line_no)
    return rows, lines


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

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

:func:`open_part` is the streamed reading of one file (``data.loader.iter_split``): JSON
Lines line by line, CSV and Parquet through the same builders in streaming mode; other
JSON files are read whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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

    @property
    def unit(self) -> str:
        """What a row number counts in error messages: ``line`` (JSON Lines) or ``row``."""
        return "row" if self.lines is None else "line"

    def numbered_rows(self) -> Iterator[tuple[int, Any]]:
        """``(row or line number, row)`` in file order (the interface :class:`StreamedPart` shares)."""
        for idx, row in enumerate(self.rows):
            yield (idx + 1 if self.lines is None else self.lines[idx]), row


@dataclass
class StreamedPart:
    """One local file read row by row on each :meth:`numbered_rows` call, never held whole.

    ``columns`` comes from a first pass over the file (JSON rows need not share keys, and
    the adapter is chosen from all of them before the first row is adapted).
    """

    source: str
    columns: list[str]
    unit: str
    _rows: Callable[[], Iterator[tuple[int, Any]]]

    def numbered_rows(self) -> Iterator[tuple[int, Any]]:
        return self._rows()


def source_files(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[Path]] | None:
    """The local files per split that :func:`read_sources` reads (None: a hub dataset); nothing is read."""
    if reads_hub(cfg):
        return None
    if cfg.files:
        return resolve_files(cfg)
    if cfg.path is not None and Path(cfg.path).expanduser().exists():
        return discover_files(cfg, adapter)
    example = adapter.hub or "allenai/ai2_arc"
    raise DataLoadError(
        f"data.path {cfg.path!r} does not exist (looked for it relative to {Path.cwd()}); "
        f"fix the path, or give a hub dataset name like {example!r}"
    )


def read_sources(cfg: DataConfig, adapter: DatasetAdapter) -> dict[str, list[RawPart]]:
    """Raw rows per split from the configured source (see the module docstring for the order)."""
    files = source_files(cfg, adapter)
    if files is None:
        return read_hub(cfg, adapter)
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
        raise _unreadable(path, kind, exc) from exc
    return RawPart(source=str(path), rows=rows, columns=columns)


def _columns(rows: Iterable[Any]) -> list[str]:
    """Every key of every object row, in first-seen order (JSON rows need not share keys)."""
    seen: dict[str, None] = {}
    for r in rows:
        if isinstance(r, dict):
            seen.update(dict.fromkeys(r))
    return list(seen)


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """``datasets`` with no per-file progress bars and no download-count request, both restored after.

    Why: the bars are noise for benchmark-sized files, and reading a *local* file must not
    touch the network: datasets otherwise sends a download-count request per load, which
    stalls up to 3 s each on an offline machine.
    """
    import datasets  # heavy: only when a file is actually read

    bars_were_on = datasets.is_progress_bar_enabled()
    counts_were_on = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.disable_progress_bars()
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield datasets
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts_were_on
        if bars_were_on:
            datasets.enable_progress_bars()


def _read_with_datasets(kind: str, path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    with _quiet_datasets() as datasets:
        ds = datasets.load_dataset(kind, data_files={"rows": str(path)}, split="rows")
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
        rows.append(_parse_line(line))
        lines.append(line_no)
    return rows, lines


# --------------------------------------------------------------------------- streaming one file


def open_part(path: Path, fmt: str) -> RawPart | StreamedPart:
    """``path`` as a part read row by row when its format allows, else read whole (:func:`read_file`).

    Streamed: JSON Lines (line by line, numbered as :func:`_read_json` numbers them), CSV
    and Parquet (the same ``datasets`` builders as :func:`read_file`, in streaming mode: the
    same chunks, the same values). Read whole: a JSON file that is one value (an array, an
    object holding the row list, one object) or has fewer than two non-blank lines (it
    cannot be told from one value without parsing all of it).
    """
    kind = format_of(path, fmt)
    assert kind is not None
    if kind == "json":
        if not _is_json_lines(path):
            return read_file(path, fmt)
        rows = lambda: ((no, _parse_line(text)) for no, text in _json_lines(path))
        return StreamedPart(source=str(path), columns=_columns(r for _, r in rows()), unit="line", _rows=rows)
    with _quiet_datasets() as datasets:
        try:
            columns = list(datasets.load_dataset(kind, data_files={"rows": str(path)}, split="rows",
                                                 streaming=True).column_names or [])
        except Exception as exc:
            raise _unreadable(path, kind, exc) from exc
    return StreamedPart(source=str(path), columns=columns, unit="row", _rows=lambda: _builder_rows(kind, path))


def _builder_rows(kind: str, path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with _quiet_datasets() as datasets:  # not held across yields: settings are restored in order
            ds = datasets.load_dataset(kind, data_files={"rows": str(path)}, split="rows", streaming=True)
        yield from enumerate(ds, start=1)
    except Exception as exc:
        raise _unreadable(path, kind, exc) from exc


def _unreadable(path: Path, kind: str, exc: Exception) -> DataLoadError:
    """One line naming the file and the format (what :func:`read_file` raises for a builder failure)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return DataLoadError(f"could not read {path} as {kind}: {type(exc).__name__}: {first}")


def _json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line, cut and numbered exactly as :func:`_read_json` does.

    Lines end at ``\n``, ``\r\n`` or a lone ``\r``; the byte-order mark is dropped from the
    first line only; invalid UTF-8 becomes lone surrogates (:func:`decode_text`).
    """
    with _open_binary(path) as fh:
        line_no = 0
        for i, raw in enumerate(fh):
            text = raw.decode("utf-8-sig" if i == 0 else "utf-8", errors="surrogateescape")
            text = text.removesuffix("\n")
            text = text.removesuffix("\r")  # \r\n is one line end
            for piece in text.split("\r"):
                line_no += 1
                if piece.strip():
                    yield line_no, piece


@contextmanager
def _open_binary(path: Path) -> Iterator[Any]:
    """The file's bytes, decompressed as :func:`_read_json` decompresses them."""
    if path.suffix not in COMPRESSION_SUFFIXES:
        with path.open("rb") as fh:
            yield fh
        return
    import fsspec

    with fsspec.open(str(path), "rb", compression="infer") as fh:
        yield fh


def _parse_line(text: str) -> Any:
    """One JSON Lines row, or the ``invalid_json`` :class:`RowError` standing for it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return RowError(REASON_INVALID_JSON, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return RowError(REASON_INVALID_JSON, "JSON nested too deeply to read")


def _is_json_lines(path: Path) -> bool:
    """Whether :func:`_read_json` would read ``path`` as JSON Lines, from its first two non-blank lines.

    A first line that is a whole JSON value (not an array) followed by another non-blank
    line cannot be one JSON value, so the file is JSON Lines. Anything else is decided by
    reading the file whole.
    """
    first = False
    for _no, text in _json_lines(path):
        if first:
            return True
        if text.lstrip().startswith("["):
            return False
        try:
            json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return False
        first = True
    return False


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

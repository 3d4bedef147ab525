"""Rows and files for the data tests (loader, splits): one multiple-choice row shape, one JSONL writer."""

from __future__ import annotations

import json
from pathlib import Path


def mc_row(i: int, **over: object) -> dict:
    """Multiple-choice row ``r<i>`` (answer "beta"); keyword arguments replace fields."""
    row = {"id": f"r{i}", "question": f"Question {i}?", "choices": ["alpha", "beta", "gamma"], "answer": "beta"}
    row.update(over)
    return row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

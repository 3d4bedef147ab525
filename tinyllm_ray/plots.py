"""Matplotlib set-up and saving for the PNGs a run writes (training, Tune sweep, compare).

Why one place: every plot needs the headless ``Agg`` backend chosen before ``pyplot`` is
imported (Ray workers and CI have no display), the same tight layout and DPI, and its
figure closed after saving (figures left open accumulate in long Tune drivers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def subplots(ncols: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure with one row of ``ncols`` axes (always a 2-D array: ``axes[0][i]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize, squeeze=False)


def save(fig: Any, path: str | Path, *, title: str | None = None, dpi: int = 110) -> str:
    """Lay out, write and close ``fig``; returns the path written."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)

"""Figure helpers shared by the study's figures and the audit's (pyplot-free, atomic saves)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import io


def figure(n_panels: int, ncols: int, panel: tuple[float, float]) -> tuple:
    """A Figure (no pyplot: no global state, safe in worker processes) and its flat list of axes."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save(fig, path: Path) -> None:
    with io.atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def colors(names: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def band(ax, s: pd.DataFrame, color: tuple, scale: float = 100.0) -> None:
    """CI band where there is one, else mean ± sd over seeds."""
    lo = s["ci_low"].where(s["ci_low"].notna(), s["mean"] - s["sd"].fillna(0))
    hi = s["ci_high"].where(s["ci_high"].notna(), s["mean"] + s["sd"].fillna(0))
    ax.fill_between(s["step"], lo * scale, hi * scale, color=color, alpha=0.12, linewidth=0)


def empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")

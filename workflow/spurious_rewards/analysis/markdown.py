"""Markdown cells of the summary: percentages and gains with their CI (tables: the template's macro)."""

from __future__ import annotations

import math

import pandas as pd


def pct(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x * 100:+.1f}" if signed else f"{x * 100:.1f}"


def gain_cell(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    ci = "" if math.isnan(row["ci_low"]) else f" [{pct(row['ci_low'], True)}, {pct(row['ci_high'], True)}]"
    return pct(row["mean"], True) + ci

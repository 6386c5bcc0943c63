"""Markdown tables from DataFrames (no extra dependency)."""

from __future__ import annotations

import math

import pandas as pd


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])

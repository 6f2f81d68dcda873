"""Asset metadata helpers: previews, distributions, per-partition tables."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl


def preview(df: pl.DataFrame, n: int = 5, max_chars: int = 80) -> dg.MetadataValue:
    rows = df.head(n)
    lines = ["| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
    for r in rows.iter_rows():
        lines.append("| " + " | ".join(str(v)[:max_chars].replace("|", "\\|").replace("\n", " ") for v in r) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def per_partition(stats: list[dict[str, Any]]) -> dg.MetadataValue:
    if not stats:
        return dg.MetadataValue.md("(no partitions)")
    cols = list(stats[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(str(s.get(c)) for c in cols) + " |" for s in stats
    ]
    return dg.MetadataValue.md("\n".join(lines))


def totals(stats: list[dict[str, Any]], *keys: str) -> dict[str, int]:
    return {k: int(sum(s.get(k, 0) for s in stats)) for k in keys}

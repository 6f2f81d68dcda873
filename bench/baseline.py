"""The plain polars floor the whole build is compared with: ``python bench/baseline.py SOURCES_YAML``.

Over the same files the build reads, in one process and with no Dagster: read every
record, split its tags, normalise them (weights, escapes, case, spaces), join them to the
140k-tag Danbooru vocabulary and aggregate per record (tags kept, unknown tags, how many
are characters). It prints the seconds it took as JSON; bench/run.py runs it in the same
session and reports the ratio of the build's wall time to it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl
import yaml

from charassets.domain.tags.vocabulary import Vocabulary


def normalised(tokens: pl.Expr) -> pl.Expr:
    return (
        tokens.str.replace_all(r"^[\s\(\[\{]+|[\)\]\}\s]+$", "")
        .str.replace(r":\s*-?\d+(\.\d+)?$", "")
        .str.replace_all(r"\\([()])", "$1")
        .str.strip_chars()
        .str.to_lowercase()
        .str.replace_all(r"[\s_]+", "_")
    )


def baseline(sources_yaml: Path) -> dict:
    config = yaml.safe_load(sources_yaml.read_text())
    vocab = Vocabulary.embedded().tags.select("tag", "category").lazy()
    parts = []
    for source in config["sources"]:
        pattern = str(sources_yaml.parent / source["uri"])
        if source.get("layout") == "danbooru":
            # line by line: a malformed line is a null row here (the build quarantines it), not a failed read
            lines = pl.scan_csv(pattern, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String})
            fields = ("tag_string_general", "tag_string_character", "tag_string_copyright")
            lf = lines.select(
                pl.col("line").str.json_path_match("$.id").alias("id"),
                pl.concat_str([pl.col("line").str.json_path_match(f"$.{c}") for c in fields], separator=" ", ignore_nulls=True)
                .str.split(" ")
                .alias("token"),
            )
        else:
            lf = pl.scan_parquet(pattern).select(pl.col("id").cast(pl.String), pl.col("tags").str.split(",").alias("token"))
        parts.append(lf.with_columns(pl.lit(source["name"]).alias("source")))
    per_record = (
        pl.concat(parts)
        .with_row_index("rid")
        .explode("token")
        .with_columns(normalised(pl.col("token")).alias("token"))
        .filter(pl.col("token").is_not_null() & (pl.col("token") != ""))
        .join(vocab, left_on="token", right_on="tag", how="left")
        .group_by("rid")
        .agg(
            pl.col("token").filter(pl.col("category").is_not_null()).alias("tags"),
            pl.col("token").filter(pl.col("category").is_null()).alias("unknown"),
            (pl.col("category") == "character").sum().alias("characters"),
        )
    )
    t0 = time.perf_counter()
    out = per_record.collect()
    seconds = time.perf_counter() - t0
    return {"baseline_s": round(seconds, 2), "records": out.height, "records_per_s": round(out.height / seconds)}


if __name__ == "__main__":
    print(json.dumps(baseline(Path(sys.argv[1]))))

"""Whole-table checks, runnable any time from the UI: they read every partition's counts."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import preview
from charassets.defs.resources import LakeResource


@dg.asset_check(
    asset=dg.AssetKey(["marts", "character_attributes"]),
    description="For every registered partition: source rows = records + rejects = clean rows + rejects = table rows.",
)
def row_accounting_all_partitions(lake: LakeResource) -> dg.AssetCheckResult:
    table = lake.lake()
    registry = table.read("raw", "source_partitions").select("partition", pl.col("row_count").alias("rows_in"))
    counts = registry
    for stage, name, col in (
        ("raw", "records", "records"),
        ("raw", "rejects", "rejects"),
        ("clean", "tags", "clean"),
        ("marts", "character_attributes", "final"),
    ):
        c = table.partition_counts(stage, name)
        counts = counts.join(
            pl.DataFrame({"partition": list(c), col: list(c.values())}, schema={"partition": pl.String, col: pl.Int64}),
            on="partition",
            how="left",
        )
    counts = counts.with_columns(pl.exclude("partition", "rows_in").fill_null(0))
    done = counts.filter(pl.col("final") > 0)
    bad = done.filter(
        (pl.col("rows_in") != pl.col("records") + pl.col("rejects"))
        | (pl.col("clean") != pl.col("records"))
        | (pl.col("final") != pl.col("rows_in"))
    )
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        metadata={
            "partitions_registered": registry.height,
            "partitions_materialized": done.height,
            "rows_in": int(done["rows_in"].sum()),
            "final_rows": int(done["final"].sum()),
            "mismatches": preview(bad, n=20),
        },
    )

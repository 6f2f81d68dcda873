"""Marts stage: the final table with near-duplicate images collapsed to one record per cluster."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import preview
from charassets.defs.partitions import table_asset
from charassets.defs.resources import LakeResource


@table_asset(
    "marts/character_attributes_deduplicated",
    kinds={"delta", "polars"},
)
def character_attributes_deduplicated(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The final table with a cluster id and size per image record, keeping one record (the largest image) per near-duplicate cluster."""
    table = lake.for_asset(context)
    clusters = (
        table.read("features", "image_clusters")
        if table.exists("features", "image_clusters")
        else pl.DataFrame(
            schema={
                "record_id": pl.String,
                "partition": pl.String,
                "cluster_id": pl.String,
                "cluster_size": pl.Int64,
                "representative": pl.Boolean,
            }
        )
    )
    partitions = sorted(table.partition_counts("marts", "character_attributes"))
    rows_in = rows_out = 0
    for key in partitions:  # one partition at a time: memory bounded by the largest
        mart = table.read("marts", "character_attributes", [key])
        view = mart.join(
            clusters.filter(pl.col("partition") == key).select("record_id", "cluster_id", "cluster_size", "representative"),
            on="record_id",
            how="left",
            maintain_order="left",
        )
        view = view.filter(pl.col("representative").fill_null(True)).drop("representative")
        table.write_partitions("marts", "character_attributes_deduplicated", view, [key])
        rows_in, rows_out = rows_in + mart.height, rows_out + view.height
    stale = sorted(set(table.partition_counts("marts", "character_attributes_deduplicated")) - set(partitions))
    if stale:  # partitions the final table no longer has: an empty overwrite removes them
        empty = table.scan("marts", "character_attributes_deduplicated").head(0).collect()
        table.write_partitions("marts", "character_attributes_deduplicated", empty, stale)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows_out,
            "rows_in_final_table": rows_in,
            "duplicates_collapsed": rows_in - rows_out,
            "partitions": len(partitions),
            "clusters_preview": preview(clusters.filter(pl.col("cluster_size") > 1).sort("cluster_id"), n=10),
        }
    )

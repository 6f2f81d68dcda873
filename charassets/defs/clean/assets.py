"""Clean stage: canonical tags per record."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition, preview, totals
from charassets.defs.partitions import for_each_partition, source_of, table_asset
from charassets.defs.raw.assets import REGISTRY
from charassets.defs.resources import CatalogResource, LakeResource
from charassets.domain.pipeline import clean_stage

ROW_ACCOUNTING = "row_accounting"


@table_asset(
    "clean/tags",
    kinds={"delta", "polars"},
    check_specs=[
        dg.AssetCheckSpec(
            ROW_ACCOUNTING,
            asset=["clean", "tags"],
            description="rows in the source chunk = clean rows + rejects, for every partition of the run",
        )
    ],
)
def tags(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource):
    """Normalised Danbooru tags per record: repaired, unweighted, canonical, de-duplicated, split by category."""
    table = lake.for_asset(context)
    sources, vocabulary = catalog.sources(), catalog.vocabulary()
    last: dict[str, pl.DataFrame] = {}

    def work(key: str) -> dict:
        records = table.read("raw", "records", [key])
        clean, st = clean_stage(records, sources.get(source_of(key)), vocabulary)
        table.write_partitions("clean", "tags", clean, [key])
        last["clean"] = clean
        return {"records": clean.height, **st.__dict__}

    stats = for_each_partition(context, work)
    keys = context.partition_keys
    # The check re-reads what is on disk, not what this function believes it wrote.
    registry = table.read(*REGISTRY, keys).select("partition", "row_count")
    clean_counts, reject_counts = table.partition_counts("clean", "tags"), table.partition_counts("raw", "rejects")
    counted = registry.join(
        pl.DataFrame(
            {"partition": keys, "clean": [clean_counts.get(k, 0) for k in keys], "rejects": [reject_counts.get(k, 0) for k in keys]}
        ),
        on="partition",
    )
    bad = counted.filter(pl.col("row_count") != pl.col("clean") + pl.col("rejects"))
    t = totals(
        stats,
        "records",
        "tokens_in",
        "mojibake_repaired",
        "weights_stripped",
        "empty_dropped",
        "duplicates_dropped",
        "aliases_resolved",
        "unknown_tags",
        "prompt_tags",
    )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": t["records"],
            **t,
            "vocabulary_tags": len(vocabulary),
            "per_partition": per_partition(stats),
            "preview": preview(last["clean"].select("record_id", "tags", "character", "unknown_tags", "prompt_tags")),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ROW_ACCOUNTING,
                passed=bad.height == 0,
                metadata={
                    "partitions_checked": counted.height,
                    "rows_in": int(counted["row_count"].sum()),
                    "clean": int(counted["clean"].sum()),
                    "rejects": int(counted["rejects"].sum()),
                    "mismatches": preview(bad, n=20),
                },
            )
        ],
    )

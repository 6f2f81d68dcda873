"""Raw stage: the partition registry, and records as read (with their rejects)."""

import dagster as dg
import polars as pl

from charassets.defs.exports.assets import EXPORT_DIR, JSONL_SUFFIX
from charassets.defs.metadata import per_partition, preview, totals
from charassets.defs.partitions import backfill_policy, for_each_partition, record_chunks, table_asset, table_spec
from charassets.defs.resources import CatalogResource, LakeResource
from charassets.domain.sources import REGISTRY_SCHEMA, Chunk, read_chunk, register
from charassets.domain.tables import lake_tables

REGISTRY = ("raw", "source_partitions")
# the lake tables holding rows per record chunk: a retired chunk's rows are deleted from each
RETIRED_WITH_CHUNK = [t.key for t in lake_tables() if t.per_chunk_rows]


def registered_chunks(table, partitions: list[str]) -> dict[str, Chunk]:
    """Registry rows of the given partitions (``table``: the asset's declared lake); a clear error for keys never registered."""
    reg = table.read(*REGISTRY).filter(pl.col("partition").is_in(partitions))
    chunks = {row["partition"]: Chunk.from_row(row) for row in reg.iter_rows(named=True)}
    missing = sorted(set(partitions) - set(chunks))
    if missing:
        raise dg.Failure(f"partitions not in raw/source_partitions (re-register the sources): {missing[:5]}")
    return chunks


@table_asset("raw/source_partitions", kinds={"delta", "polars"})
def source_partitions(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """Every chunk of every configured source file: the registry that record partitions are made from."""
    table = lake.for_asset(context)
    current = (
        pl.concat([register(s) for s in catalog.sources().sources]) if catalog.sources().sources else pl.DataFrame(schema=REGISTRY_SCHEMA)
    )
    known = table.read(*REGISTRY) if table.exists(*REGISTRY) else pl.DataFrame(schema=REGISTRY_SCHEMA)
    # a file replaced under the same name has a new content identity, so new partition keys: its old
    # partitions are retired explicitly (rows deleted from every table, keys removed), never left to mix
    retired = known.join(current.select("file").unique(), on="file", how="semi").join(
        current.select("partition"), on="partition", how="anti"
    )
    if retired.height:
        keys = retired.get_column("partition").to_list()
        # every per-chunk table of the registry: retiring is maintenance over the whole lake, not a read
        # this asset depends on, so it goes through the lake itself rather than the declared view
        whole = lake.lake()
        deleted = {f"{st}/{nm}": whole.delete_partitions(st, nm, keys) for st, nm in RETIRED_WITH_CHUNK}
        deleted["exports (files)"] = sum(
            lake.remove(f"{EXPORT_DIR}/{kind}/{key}.{suffix}")
            for key in keys
            for kind, suffix in (("jsonl", JSONL_SUFFIX), ("parquet", "parquet"))
        )
        context.log.warning(f"{len(keys)} partitions of replaced files retired: {keys[:5]}; rows deleted: {deleted}")
        for key in keys:
            context.instance.delete_dynamic_partition(record_chunks.name, key)
        known = known.join(retired.select("partition"), on="partition", how="anti")
    new = current.join(known.select("partition"), on="partition", how="anti")
    changed = current.join(known, on=["partition", "file_bytes", "row_count"], how="anti").join(
        new.select("partition"), on="partition", how="anti"
    )
    if changed.height:
        context.log.warning(
            f"{changed.height} registered chunks changed size on disk; registered files are treated as immutable: {changed.get_column('partition').to_list()[:5]}"
        )
    registry = pl.concat([known, new]).sort("source", "file", "chunk")
    table.write_table(*REGISTRY, registry)
    # every registered chunk is a partition of this instance, also one whose storage is newer
    # than the lake (a fresh or migrated Dagster instance over an existing lake)
    have = set(context.instance.get_dynamic_partitions(record_chunks.name))
    context.instance.add_dynamic_partitions(record_chunks.name, [k for k in registry.get_column("partition").to_list() if k not in have])
    per_source = registry.group_by("source").agg(pl.len().alias("partitions"), pl.col("row_count").sum().alias("rows")).sort("source")
    return dg.MaterializeResult(
        metadata={
            "partitions": registry.height,
            "new_partitions": new.height,
            "retired_partitions": retired.height,
            "changed_partitions": changed.height,
            "rows": int(registry.get_column("row_count").sum()),
            "largest_partition_rows": int(registry.get_column("row_count").max() or 0),
            "per_source": preview(per_source, n=50),
            "dagster/row_count": registry.height,
        }
    )


@dg.multi_asset(
    specs=[
        table_spec("raw/records", kinds={"delta", "polars"}),
        table_spec("raw/rejects", kinds={"delta", "polars"}),
    ],
    partitions_def=record_chunks,
    backfill_policy=backfill_policy,
)
def raw_records(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource):
    """Reads each chunk: good rows to raw/records, bad rows to raw/rejects."""
    table = lake.for_asset(context)
    chunks = registered_chunks(table, context.partition_keys)
    sources = catalog.sources()
    last: dict[str, pl.DataFrame] = {}

    def work(key: str) -> dict:
        chunk = chunks[key]
        records, rejects = read_chunk(chunk, sources.get(chunk.source))
        table.write_partitions("raw", "records", records, [key])
        table.write_partitions("raw", "rejects", rejects, [key])
        last.update(records=records, rejects=rejects)
        return {"rows_in": chunk.row_count, "records": records.height, "rejects": rejects.height}

    stats = for_each_partition(context, work, {("raw", "records"): "records", ("raw", "rejects"): "rejects"})
    t = totals(stats, "rows_in", "records", "rejects")
    yield dg.MaterializeResult(
        asset_key=["raw", "records"],
        metadata={
            "dagster/row_count": t["records"],
            **t,
            "per_partition": per_partition(stats),
            "preview": preview(last["records"].drop("file")),
        },
    )
    reasons = (
        last["rejects"].group_by("reason").len().sort("len", descending=True)
        if last["rejects"].height
        else pl.DataFrame({"reason": [], "len": []})
    )
    yield dg.MaterializeResult(
        asset_key=["raw", "rejects"],
        metadata={
            "dagster/row_count": t["rejects"],
            "reasons_last_partition": preview(reasons, n=20),
            "preview": preview(last["rejects"].drop("file")),
        },
    )

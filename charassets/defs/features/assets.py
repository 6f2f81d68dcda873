"""Features stage: record vectors from cached per-tag embeddings."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, EmbedderResource, LakeResource
from charassets.domain.models.features import (
    POOLED_CATEGORIES,
    RECORD_VECTOR_DTYPE,
    TAG_VECTORS,
    content_hashes,
    encode_full,
    feature_tags,
    load_tag_cache,
    pool,
    record_vector_column,
)


def pooled_tags(table, key: str) -> pl.DataFrame:
    """The columns of a clean partition that record vectors are made of (a third of its bytes to decode)."""
    return table.scan("clean", "tags", [key]).select("record_id", "partition", *POOLED_CATEGORIES).collect()


@table_asset("features/tag_vectors", kinds={"delta", "torch"})
def tag_vectors(
    context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """One vector per distinct tag and embedder: each chunk's tags not yet cached are encoded once (or taken from the bundled vectors) and appended."""
    table = lake.for_asset(context)
    model = embedder.embedder()
    cache = load_tag_cache(table, model)
    cached_before = cache.saved

    def work(key: str) -> dict:
        if embedder.mode == "full":  # whole tag lists are encoded by the embeddings asset: no per-tag cache
            return {"records": 0, "tags_encoded": 0}
        clean = pooled_tags(table, key)
        encoded = cache.ensure(feature_tags(clean).explode().drop_nulls())
        new = cache.new_frame()
        if new.height:  # appended with the lake's commit retries; readers de-duplicate by tag
            table.append(*TAG_VECTORS, new)
            cache.new_rows.clear()
        return {"records": clean.height, "tags_encoded": encoded}

    stats = for_each_partition(context, work, row_counts={TAG_VECTORS: "tags_encoded"})
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": cache.saved,
            "embedder": model.id,
            "tags_encoded": sum(s["tags_encoded"] for s in stats),
            "tags_cached_before": cached_before,
            "tags_cached": cache.saved,
            "tags_bundled_unused": len(cache.index) - cache.saved,
            "per_partition": per_partition(stats),
        }
    )


@table_asset(
    "features/embeddings",
    kinds={"delta", "torch"},
)
def embeddings(
    context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """One vector per record: the IDF-weighted mean of its tags' embeddings (each tag embedded once), reused while its tags are unchanged."""
    table = lake.for_asset(context)
    model = embedder.embedder()
    vocabulary = catalog.vocabulary()
    cache = load_tag_cache(table, model)
    stored = table.scan("features", "embeddings").collect_schema().get("vector") if table.exists("features", "embeddings") else None
    if stored is not None and stored != RECORD_VECTOR_DTYPE:
        raise dg.Failure(
            f"features/embeddings holds {stored} vectors, the layout before record vectors became float16 bytes: delete "
            f"{lake.root.rstrip('/')}/features/embeddings and materialize features/embeddings again (it is derived data)"
        )

    def work(key: str) -> dict:
        clean = pooled_tags(table, key)
        tags = feature_tags(clean)
        # the pooling weights come from the vocabulary's post counts: a new vocabulary is a new vector
        hashes = content_hashes(tags, f"{model.id}|{vocabulary.digest}", embedder.mode)
        frame = clean.select("record_id", "partition").with_columns(hashes.alias("content_hash"))
        previous = (
            table.read("features", "embeddings", [key]).select("content_hash", "weight_sum", "vector").unique("content_hash")
            if table.exists("features", "embeddings")
            else pl.DataFrame(schema={"content_hash": pl.String, "weight_sum": pl.Float32, "vector": RECORD_VECTOR_DTYPE})
        )
        reused = frame.join(previous, on="content_hash", how="inner")
        todo = frame.join(previous.select("content_hash"), on="content_hash", how="anti")
        todo_tags = tags.filter(frame.get_column("content_hash").is_in(todo.get_column("content_hash").to_list()).to_numpy())
        before = len(cache.index)
        if embedder.mode == "full":
            vectors, sums = encode_full(todo_tags, model), todo_tags.list.len().cast(pl.Float32).to_numpy()
        else:
            vectors, sums = pool(todo_tags, cache, vocabulary)
        computed = todo.with_columns(pl.Series("weight_sum", sums, dtype=pl.Float32), record_vector_column(vectors))
        out = pl.concat([reused.select(computed.columns), computed]).with_columns(pl.lit(model.id).alias("embedder"))
        out = frame.select("record_id").join(out, on="record_id", how="left", maintain_order="left")
        table.write_partitions("features", "embeddings", out, [key])
        missing = len(cache.index) - before
        if missing:
            context.log.warning(f"{key}: {missing} tags were not in features/tag_vectors (encoded now, not cached): materialize it first")
        return {"records": out.height, "vectors_computed": computed.height, "vectors_reused": reused.height, "tags_not_cached": missing}

    stats = for_each_partition(context, work)
    dim = model.dim
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["records"] for s in stats),
            "embedder": model.id,
            "mode": embedder.mode,
            "dim": dim,
            "vectors_computed": sum(s["vectors_computed"] for s in stats),
            "vectors_reused": sum(s["vectors_reused"] for s in stats),
            "tags_not_cached": sum(s["tags_not_cached"] for s in stats),
            "tags_cached": len(cache.index),
            "records_per_s_embedding": round(sum(s["records"] for s in stats) / max(1e-9, sum(s["seconds"] for s in stats))),
            "per_partition": per_partition(stats),
        }
    )

"""Features stage, image side: signals (faces, colours) and embeddings per image; near-duplicate clusters over all images."""

import dagster as dg
import numpy as np
import polars as pl

from charassets.defs.metadata import per_partition, preview
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.raw.images import image_partitions, tag_reader
from charassets.defs.resources import CatalogResource, ImageModelsResource, LakeResource
from charassets.domain.dedup import deduplicated, near_duplicate_clusters
from charassets.domain.images.embedders import ColorLayoutEmbedder, thumbnails
from charassets.domain.images.stage import signals_stage
from charassets.domain.models.features import list_vector_column, vector_matrix

EMBED_BATCH = 256


@table_asset("features/image_signals", kinds={"delta", "pillow"})
def image_signals(
    context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource, image_models: ImageModelsResource
) -> dg.MaterializeResult:
    """Per decoded image: faces and boxes, hair and eye colour named in CIELAB with calibrated confidence, flags (read by raw/images)."""
    table = lake.for_asset(context)
    ontology = catalog.ontology()
    with_images = image_partitions(table, catalog, context.partition_keys)
    last: list[pl.DataFrame] = []

    def work(key: str) -> dict:
        if key not in with_images or not table.exists("raw", "images"):
            return {"images": 0}
        chunk, spec = with_images[key]
        scan = table.scan("raw", "images", [key])
        # images fetched over http(s) are read from their working copy: a URL is fetched once per run
        names = scan.collect_schema().names()
        copy = pl.col("working_copy") if "working_copy" in names else pl.lit(None, pl.Binary).alias("working_copy")
        # the signals raw/images read from its own decode (tables written before it kept them: read again)
        read = pl.col("signals") if "signals" in names else pl.lit(None, pl.String).alias("signals")
        decoded = scan.select("record_id", "width", "height", copy, read).collect()
        records = table.read("raw", "records", [key]).join(decoded.select("record_id"), on="record_id", how="semi")
        signals = signals_stage(records, chunk, spec, image_models.backend, ontology, decoded, tag_reader(ontology))
        table.write_partitions("features", "image_signals", signals, [key])
        last[:] = [signals]
        counts = dict(signals.group_by("status").len().iter_rows())
        return {"images": signals.height, **{s: counts.get(s, 0) for s in ("ok", "ambiguous", "unreadable")}}

    stats = for_each_partition(context, work)
    done = [s for s in stats if s["images"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["images"] for s in stats),
            "backend": image_models.backend,
            **{s: sum(x.get(s, 0) for x in stats) for s in ("ok", "ambiguous", "unreadable")},
            "images_per_s": round(sum(s["images"] for s in done) / max(1e-9, sum(s["seconds"] for s in done)), 2),
            "per_partition": per_partition(stats),
            "preview": preview(last[0].drop("partition"), max_chars=120) if last else "no images in this run",
        }
    )


@table_asset("features/image_embeddings", kinds={"delta", "torch"})
def image_embeddings(context: dg.AssetExecutionContext, lake: LakeResource, image_models: ImageModelsResource) -> dg.MaterializeResult:
    """One unit vector per decoded image, from its thumbnail: the colour-layout descriptor offline, CLIP/SigLIP by config."""
    table = lake.for_asset(context)
    model = image_models.embedder()

    def work(key: str) -> dict:
        if not table.exists("raw", "images"):
            return {"images": 0}
        images = table.read("raw", "images", [key]).select("record_id", "partition", "thumbnail")
        if images.height == 0:
            return {"images": 0}
        blobs = images.get_column("thumbnail").to_list()
        vectors = np.concatenate([model.encode_images(thumbnails(blobs[i : i + EMBED_BATCH])) for i in range(0, len(blobs), EMBED_BATCH)])
        out = images.select("record_id", "partition").with_columns(pl.lit(model.id).alias("embedder"), list_vector_column(vectors))
        table.write_partitions("features", "image_embeddings", out, [key])
        return {"images": out.height, "dim": int(vectors.shape[1])}

    stats = for_each_partition(context, work)
    done = [s for s in stats if s["images"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["images"] for s in stats),
            "embedder": model.id,
            "images_per_s": round(sum(s["images"] for s in done) / max(1e-9, sum(s["seconds"] for s in done)), 1),
            "per_partition": per_partition(stats),
        }
    )


class ClusterConfig(dg.Config):
    """How near two images must be to count as one: perceptual-hash bits, and embedding cosine (semantic embedders only)."""

    max_hamming: int = 3
    min_cosine: float = 0.95
    use_embeddings: bool = True


@table_asset(
    "features/image_clusters",
    kinds={"delta", "faiss"},
)
def image_clusters(context: dg.AssetExecutionContext, config: ClusterConfig, lake: LakeResource) -> dg.MaterializeResult:
    """Near-duplicate clusters over every image: pHash within a Hamming radius (multi-index hashing) and CLIP-cosine neighbours (HNSW)."""
    table = lake.for_asset(context)
    schema = {
        "record_id": pl.String,
        "partition": pl.String,
        "cluster_id": pl.String,
        "cluster_size": pl.Int64,
        "representative": pl.Boolean,
    }
    if not table.exists("raw", "images"):
        table.write_table("features", "image_clusters", pl.DataFrame(schema=schema))
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "images": 0})
    images = table.scan("raw", "images").select("record_id", "partition", "row_index", "phash", "width", "height").collect()
    images = images.sort("partition", "row_index")
    vectors, used = None, "none"
    if config.use_embeddings and table.exists("features", "image_embeddings"):
        emb = table.scan("features", "image_embeddings").filter(pl.col("embedder") != ColorLayoutEmbedder().id)
        emb = emb.select("record_id", "vector").collect()
        # colour layout is no identity signal (two different pictures can share a palette): only semantic embedders link images
        if emb.height == images.height and emb.height:
            vectors = vector_matrix(images.select("record_id").join(emb, on="record_id", how="left").get_column("vector"))
            used = "cosine"
    first = near_duplicate_clusters(
        images.get_column("phash").to_list(), vectors, max_hamming=config.max_hamming, min_cosine=config.min_cosine
    )
    ids = images.get_column("record_id")
    out = images.with_columns(pl.Series("cluster_id", ids.to_numpy()[first] if len(first) else [], dtype=pl.String))
    out = out.with_columns(pl.len().over("cluster_id").cast(pl.Int64).alias("cluster_size"))
    keep = deduplicated(out).select("record_id")  # the largest image of each cluster
    out = out.with_columns(pl.col("record_id").is_in(keep.get_column("record_id").to_list()).alias("representative")).select(list(schema))
    table.write_table("features", "image_clusters", out)
    multi = out.filter(pl.col("cluster_size") > 1)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": out.height,
            "images": out.height,
            "clusters": out.get_column("cluster_id").n_unique(),
            "images_in_multi_clusters": multi.height,
            "duplicates_dropped_in_view": out.height - int(out.get_column("representative").sum()),
            "embedding_links": used,
            "largest_clusters": preview(
                multi.group_by("cluster_id").agg(pl.len().alias("size"), pl.col("record_id").head(4)).sort("size", descending=True), n=10
            ),
        }
    )

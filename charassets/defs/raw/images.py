"""Raw stage, image side: every referenced image decoded safely (facts, thumbnail and its signals), or quarantined with the reason.

The image signals (faces, colours) are read from the same decoded image as the facts:
one decode per picture; ``features/image_signals`` publishes them.
"""

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition, preview, totals
from charassets.defs.partitions import backfill_policy, for_each_partition, record_chunks, table_spec
from charassets.defs.raw.assets import registered_chunks
from charassets.defs.resources import CatalogResource, ImageModelsResource, LakeResource
from charassets.domain.images.signals import signals_for
from charassets.domain.images.stage import images_stage
from charassets.domain.pipeline import extract_one

IMAGES_ACCOUNTED = "every_image_accounted"


def tag_reader(ontology):
    """Tags -> the record the text path makes of them: what a tag-reading image backend (``wd:...``) is given."""
    return lambda tags: extract_one(", ".join(tags), ontology)


def image_partitions(table, catalog: CatalogResource, keys: list[str]) -> dict[str, tuple]:
    """``key -> (chunk, source spec)`` for the keys whose source has images to decode; other keys have no image rows."""
    chunks = registered_chunks(table, keys)
    sources = catalog.sources()
    specs = {k: sources.get(c.source) for k, c in chunks.items()}
    return {k: (chunks[k], s) for k, s in specs.items() if s.decodes_images}


@dg.multi_asset(
    specs=[
        table_spec("raw/images", kinds={"delta", "pillow"}),
        table_spec("raw/image_rejects", kinds={"delta", "polars"}),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            IMAGES_ACCOUNTED,
            asset=["raw", "images"],
            description="records with an image reference = decoded images + image rejects, for every partition of the run",
        )
    ],
    partitions_def=record_chunks,
    backfill_policy=backfill_policy,
)
def raw_images(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource, image_models: ImageModelsResource):
    """Decodes each chunk's images (sources with ``format: images`` or ``images: true``; other sources have none), and reads their signals."""
    table = lake.for_asset(context)
    with_images = image_partitions(table, catalog, context.partition_keys)
    ontology, backend = catalog.ontology(), image_models.backend
    reader = tag_reader(ontology)

    def signals(image):
        return signals_for(image, backend, ontology, reader)

    last: dict[str, pl.DataFrame] = {}
    referenced: dict[str, int] = {}

    def work(key: str) -> dict:
        if key not in with_images:
            return {"referenced": 0, "images": 0, "image_rejects": 0}
        chunk, spec = with_images[key]
        records = table.read("raw", "records", [key])
        images, rejects = images_stage(records, chunk, spec, signals)
        table.write_partitions("raw", "images", images, [key])
        table.write_partitions("raw", "image_rejects", rejects, [key])
        referenced[key] = records.filter(pl.col("image_ref").is_not_null()).height
        last.update(images=images, rejects=rejects)
        return {"referenced": referenced[key], "images": images.height, "image_rejects": rejects.height}

    stats = for_each_partition(context, work, {("raw", "images"): "images", ("raw", "image_rejects"): "image_rejects"})
    # the check re-reads what is on disk (once per run), not what this function believes it wrote
    decoded = table.partition_counts("raw", "images") if referenced else {}
    quarantined = table.partition_counts("raw", "image_rejects") if referenced else {}
    mismatches = [
        {"partition": k, "referenced": n, "written": decoded.get(k, 0) + quarantined.get(k, 0)}
        for k, n in referenced.items()
        if decoded.get(k, 0) + quarantined.get(k, 0) != n
    ]
    t = totals(stats, "referenced", "images", "image_rejects")
    images = last.get("images", pl.DataFrame())
    rejects = last.get("rejects", pl.DataFrame({"reason": []}, schema={"reason": pl.String}))
    yield dg.MaterializeResult(
        asset_key=["raw", "images"],
        metadata={
            "dagster/row_count": t["images"],
            **t,
            "partitions_with_images": len(with_images),
            "per_partition": per_partition(stats),
            "preview": preview(images.drop("thumbnail", "working_copy", "signals")) if images.height else "no images in this run",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=IMAGES_ACCOUNTED,
                asset_key=["raw", "images"],
                passed=not mismatches,
                metadata={"referenced": t["referenced"], "mismatches": dg.MetadataValue.json(mismatches[:20])},
            )
        ],
    )
    yield dg.MaterializeResult(
        asset_key=["raw", "image_rejects"],
        metadata={
            "dagster/row_count": t["image_rejects"],
            "reasons_last_partition": preview(rejects.group_by("reason").len().sort("len", descending=True), n=20, max_chars=120),
        },
    )

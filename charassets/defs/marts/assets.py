"""Marts stage: the final, validated per-character attribute table."""

import json

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition, preview
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.raw.images import image_partitions
from charassets.defs.resources import CatalogResource, LakeResource
from charassets.domain.pipeline import mart_stage, unknown_rates, value_counts
from charassets.domain.schema import SchemaViolation, json_schema, to_json_frame, validate_table

SCHEMA_FILE = "marts/character_attributes.schema.json"


def image_inputs(table, key: str) -> dict[str, pl.DataFrame | None]:
    """What the final table needs from the image side for one partition (see ``candidates.decide``)."""

    def read(stage: str, name: str) -> pl.DataFrame | None:
        return table.read(stage, name, [key]) if table.exists(stage, name) else None

    tagless = table.scan("clean", "tags", [key]).filter(pl.col("tags").list.len() == 0).select("record_id").collect()
    return {
        "tagless": tagless,
        "signals": read("features", "image_signals"),
        "image_rejects": read("raw", "image_rejects"),
        "image_predictions": read("models", "image_head_predictions"),
        "images": table.scan("raw", "images", [key]).drop("thumbnail", "working_copy", strict=False).collect()
        if table.exists("raw", "images")
        else None,
    }


ROWS_VALID = "rows_match_schema"
PLAUSIBLE = "plausible_unknown_rates"


@table_asset(
    "marts/character_attributes",
    kinds={"delta", "polars"},
    check_specs=[
        dg.AssetCheckSpec(
            ROWS_VALID,
            asset=["marts", "character_attributes"],
            description="every row written validates against the output model: every row as columns, a sample and every distinct value through pydantic",
        ),
        dg.AssetCheckSpec(
            PLAUSIBLE,
            asset=["marts", "character_attributes"],
            description="no field is unknown for more of the single-character rows than the ontology allows",
        ),
    ],
)
def character_attributes(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource):
    """One row per record in the output schema: attributes from tags, else the character's profile, else a confident head, else the image; rejects included."""
    table = lake.for_asset(context)
    with_images = image_partitions(table, catalog, context.partition_keys)
    ontology = catalog.ontology()
    profiles = table.read("marts", "character_profiles") if table.exists("marts", "character_profiles") else None
    schema_uri = lake.write_text(SCHEMA_FILE, json.dumps(json_schema(ontology), indent=2))
    frames: list[pl.DataFrame] = []

    def work(key: str) -> dict:
        predictions = table.read("models", "head_predictions", [key]) if table.exists("models", "head_predictions") else None
        images = image_inputs(table, key) if key in with_images else None
        mart = mart_stage(
            table.read("labels", "tag_attributes", [key]), table.read("raw", "rejects", [key]), ontology, profiles, predictions, images
        )
        try:
            validate_table(mart, ontology)
        except SchemaViolation as e:  # never write rows that break the contract
            raise dg.Failure(f"partition {key}: {e}") from None
        table.write_partitions("marts", "character_attributes", mart, [key])
        frames[:] = [mart]
        rates.append(unknown_rates(mart, ontology))
        counts = dict(mart.group_by("status").len().iter_rows())
        sources = {}
        for f in ontology.fields:
            if f.cardinality == "single":
                vc = mart.select(pl.col(f.key).struct.field("source")).to_series().value_counts()
                for src, n in vc.iter_rows():
                    if src in ("profile", "head", "image", "image_head"):
                        sources[f"filled_by_{src}"] = sources.get(f"filled_by_{src}", 0) + n
        image_flags = mart.select(pl.col("flags").explode()).to_series()
        contradictions = int(
            mart.select(pl.col("flags").list.eval(pl.element().str.starts_with("contradicts_profile")).list.any().sum()).item()
        )
        return {
            "rows": mart.height,
            **{s: counts.get(s, 0) for s in ("ok", "ambiguous", "no_character", "rejected")},
            "filled_by_profile": sources.get("filled_by_profile", 0),
            "filled_by_head": sources.get("filled_by_head", 0),
            "filled_by_image": sources.get("filled_by_image", 0) + sources.get("filled_by_image_head", 0),
            "contradicts_profile": contradictions,
            "image_only": int((image_flags == "image_only").sum()),
            "image_disagrees": int(image_flags.str.starts_with("image_disagrees").sum()),
        }

    rates: list[dict[str, float]] = []
    stats = for_each_partition(context, work)
    ok_rows = [s["ok"] for s in stats]
    # unknown rate over the run, weighted by each partition's ok rows
    run_rates = {
        f: round(sum(r.get(f, 0) * n for r, n in zip(rates, ok_rows, strict=True)) / max(1, sum(ok_rows)), 4)
        for f in (x.name for x in ontology.fields)
    }
    limits = {f.name: f.max_unknown_rate for f in ontology.fields if f.max_unknown_rate is not None}
    too_unknown = {f: run_rates[f] for f, lim in limits.items() if run_rates[f] > lim}
    mart = frames[-1]
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["rows"] for s in stats),
            **{
                s: sum(x[s] for x in stats)
                for s in (
                    "ok",
                    "ambiguous",
                    "no_character",
                    "rejected",
                    "filled_by_profile",
                    "filled_by_head",
                    "filled_by_image",
                    "contradicts_profile",
                    "image_only",
                    "image_disagrees",
                )
            },
            "unknown_rate_ok_rows": dg.MetadataValue.json(run_rates),
            "top_values_last_partition": dg.MetadataValue.json(value_counts(mart, ontology)),
            "json_schema": dg.MetadataValue.path(schema_uri),
            "per_partition": per_partition(stats),
            "preview": preview(
                to_json_frame(mart.filter(pl.col("status") == "ok"), ontology).select("id", "status", "attributes"), max_chars=300
            ),
        },
        check_results=[
            # reaching here means every row of every partition validated (a violation fails the step before writing)
            dg.AssetCheckResult(check_name=ROWS_VALID, passed=True, metadata={"rows_validated": sum(s["rows"] for s in stats)}),
            dg.AssetCheckResult(
                check_name=PLAUSIBLE,
                passed=not too_unknown,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"unknown for more ok rows than allowed: {too_unknown}" if too_unknown else None,
                metadata={
                    "unknown_rates": dg.MetadataValue.json(run_rates),
                    "limits": dg.MetadataValue.json(limits),
                    "over_limit": dg.MetadataValue.json(too_unknown),
                },
            ),
        ],
    )

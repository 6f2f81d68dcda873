"""Labels stage: attributes read off the tags through the ontology."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition, preview
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, LakeResource
from charassets.domain.models.training import sample_hashes
from charassets.domain.pipeline import label_stage


@table_asset(
    "labels/tag_attributes",
    kinds={"delta", "polars"},
)
def tag_attributes(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """Per record: subject count, status (ok / ambiguous / no_character), flags, each attribute with evidence and confidence, and its sample hash."""
    table = lake.for_asset(context)
    ontology = catalog.ontology()
    last: dict[str, pl.DataFrame] = {}

    def work(key: str) -> dict:
        labels = label_stage(table.read("clean", "tags", [key]), ontology)
        labels = labels.with_columns(sample_hashes(labels.get_column("record_id")))  # so training need not hash every record
        table.write_partitions("labels", "tag_attributes", labels, [key])
        last["labels"] = labels
        counts = dict(labels.group_by("status").len().iter_rows())
        return {
            "records": labels.height,
            **{s: counts.get(s, 0) for s in ("ok", "ambiguous", "no_character")},
            "conflicts": int(labels.select(pl.col("flags").list.eval(pl.element().str.starts_with("conflict:")).list.any().sum()).item()),
        }

    stats = for_each_partition(context, work)
    total = {k: sum(s[k] for s in stats) for k in ("records", "ok", "ambiguous", "no_character", "conflicts")}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total["records"],
            **total,
            "ontology_fields": len(ontology.fields),
            "per_partition": per_partition(stats),
            "preview": preview(last["labels"].select("record_id", "status", "subject_count", "flags", "hair_color", "eye_color")),
        }
    )

"""Exports: the final table as files per partition, for training jobs that read files."""

import io
import json

import dagster as dg

from charassets.defs.metadata import per_partition
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, LakeResource
from charassets.domain.schema import json_schema, to_json_frame

EXPORT_DIR = "exports/character_attributes"


@table_asset(
    "exports/character_attributes_files",
    kinds={"jsonl", "parquet"},
)
def character_attributes_files(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """The attribute table as one JSONL and one Parquet file per partition (keys exactly as the schema), with the JSON Schema beside them."""
    table = lake.for_asset(context)
    ontology = catalog.ontology()
    lake.write_text(f"{EXPORT_DIR}/schema.json", json.dumps(json_schema(ontology), indent=2))

    def work(key: str) -> dict:
        out = to_json_frame(table.read("marts", "character_attributes", [key]).sort("row_index"), ontology)
        lake.write_text(f"{EXPORT_DIR}/jsonl/{key}.jsonl", out.write_ndjson())
        buf = io.BytesIO()
        out.write_parquet(buf)
        lake.write_bytes(f"{EXPORT_DIR}/parquet/{key}.parquet", buf.getvalue())
        return {"rows": out.height}

    stats = for_each_partition(context, work)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["rows"] for s in stats),
            "directory": dg.MetadataValue.path(f"{lake.root.rstrip('/')}/{EXPORT_DIR}"),
            "per_partition": per_partition(stats),
        }
    )

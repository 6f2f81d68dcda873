"""Jobs: register sources; run the record path over partitions."""

from __future__ import annotations

import dagster as dg

from charassets.defs.partitions import record_chunks

register_sources = dg.define_asset_job(
    "register_sources",
    selection=dg.AssetSelection.assets(["raw", "source_partitions"]),
    description="Find new source files and add their chunks as partitions.",
)
PER_RECORD = dg.AssetSelection.groups("raw", "clean", "labels", "features", "marts", "exports") - dg.AssetSelection.assets(
    ["raw", "source_partitions"]
)
character_pipeline = dg.define_asset_job(
    "character_pipeline",
    selection=PER_RECORD,
    partitions_def=record_chunks,
    description="Raw records to exported attribute table, for the selected partitions.",
)
train_heads = dg.define_asset_job(
    "train_heads",
    selection=dg.AssetSelection.groups("models"),
    description="Train the attribute heads on every materialized partition and gate the champions.",
)

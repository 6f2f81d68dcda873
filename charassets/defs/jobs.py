"""Jobs: register sources; run the record path over partitions."""

from __future__ import annotations

import dagster as dg

from charassets.defs.partitions import record_chunks

register_sources = dg.define_asset_job(
    "register_sources",
    selection=dg.AssetSelection.assets(["raw", "source_partitions"]),
    description="Find new source files and add their chunks as partitions.",
)
character_pipeline = dg.define_asset_job(
    "character_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(["raw", "source_partitions"]),
    partitions_def=record_chunks,
    description="Raw records to exported attribute table, for the selected partitions.",
)

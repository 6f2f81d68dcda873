"""Jobs: register sources; per-record assets; training; publishing with the new models.

A full build is register_sources -> prepare_records -> train_heads -> publish (->
deduplicate, where there are images): profiles and heads need every partition, so the
final table is written once, after training.
``character_pipeline`` runs every per-record asset at once (new partitions on an
existing lake): the final table uses whatever champions and profiles exist then.
"""

import dagster as dg

from charassets.defs.partitions import record_chunks

register_sources = dg.define_asset_job(
    "register_sources",
    selection=dg.AssetSelection.assets(["raw", "source_partitions"]),
    description="Find new source files and add their chunks as partitions.",
)
DEDUPLICATE = dg.AssetSelection.assets(["features", "image_clusters"], ["marts", "character_attributes_deduplicated"])
PER_RECORD = (
    dg.AssetSelection.groups("raw", "clean", "labels", "features", "marts", "exports")
    - dg.AssetSelection.assets(["raw", "source_partitions"], ["marts", "character_profiles"])
    - DEDUPLICATE
) | dg.AssetSelection.assets(["models", "head_predictions"], ["models", "image_head_predictions"])
PUBLISH = dg.AssetSelection.assets(
    ["models", "head_predictions"],
    ["models", "image_head_predictions"],
    ["marts", "character_attributes"],
    ["exports", "character_attributes_files"],
)

character_pipeline = dg.define_asset_job(
    "character_pipeline",
    selection=PER_RECORD,
    partitions_def=record_chunks,
    description="Raw records to exported attribute table, for the selected partitions.",
)
prepare_records = dg.define_asset_job(
    "prepare_records",
    selection=PER_RECORD - PUBLISH,
    partitions_def=record_chunks,
    description="Per-record assets up to labels and embeddings: what training needs (a full build publishes after training).",
)
HEADS = [dg.AssetKey(["models", "attribute_heads"]), dg.AssetKey(["models", "image_heads"])]  # train_heads without the profiles
train_heads = dg.define_asset_job(
    "train_heads",
    selection=dg.AssetSelection.assets(*HEADS, ["marts", "character_profiles"]),
    description="Train the attribute heads (on tag and on image embeddings) and build character profiles from every materialized partition.",
)
build_profiles = dg.define_asset_job(
    "build_profiles", selection=dg.AssetSelection.assets(["marts", "character_profiles"]), description="Rebuild character profiles only."
)
publish = dg.define_asset_job(
    "publish",
    selection=PUBLISH,
    partitions_def=record_chunks,
    description="Re-apply the current champion heads and profiles to the final table and exports (after training).",
)
deduplicate = dg.define_asset_job(
    "deduplicate",
    selection=DEDUPLICATE,
    description="Cluster near-duplicate images over every partition and write the deduplicated view of the final table.",
)
report = dg.define_asset_job(
    "report",
    selection=dg.AssetSelection.assets(["reports", "dataset_report"]),
    description="Build the dataset report (HTML and JSON under <lake>/reports) from every partition.",
)

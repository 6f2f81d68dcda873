"""Models stage, image side: attribute heads on image embeddings, trained with the images' own tags as weak labels."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import per_partition
from charassets.defs.models.assets import GATE, HeadTraining, heads_result, sample_training_data, train_log_and_gate, training_tags
from charassets.defs.models.predictions import champion_heads, prediction_struct
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, ImageModelsResource, LakeResource, MlflowResource
from charassets.domain.dedup import near_duplicate_clusters
from charassets.domain.models import registry as registry
from charassets.domain.models.features import vector_matrix
from charassets.domain.models.heads import HeadConfig

PREFIX = "image_"  # registered as charassets-head-image-<field>


@table_asset(
    "models/image_heads",
    kinds={"torch", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            GATE,
            asset=["models", "image_heads"],
            blocking=True,
            description="each new image-head version takes the `champion` alias only if it beats the current champion on the same validation records",
        )
    ],
)
def image_heads(
    context: dg.AssetExecutionContext,
    config: HeadTraining,
    lake: LakeResource,
    catalog: CatalogResource,
    image_models: ImageModelsResource,
    mlflow_store: MlflowResource,
):
    """One classifier per attribute on image vectors; labels come from the tags of the records that have both (weak supervision)."""
    table = lake.for_asset(context)
    ontology, model = catalog.ontology(), image_models.embedder()
    wanted = set(config.fields)
    fields = [f for f in ontology.fields if f.values and ((wanted & {f.name, f.key}) if wanted else "image_head" in f.fill)]
    partitions = sorted(
        set(table.partition_counts("labels", "tag_attributes")) & set(table.partition_counts("features", "image_embeddings"))
    )
    if not partitions:
        yield dg.MaterializeResult(metadata={"heads": "none trained: no partition has both tag labels and image embeddings"})
        yield dg.AssetCheckResult(check_name=GATE, passed=True, metadata={"comparisons": "none"})
        return
    vectors = ("features", "image_embeddings")
    cands, emb = sample_training_data(table, fields, partitions, config.per_class, vectors, only_with_vectors=True)
    groups = near_duplicate_groups(table, emb.select("record_id", "partition"))
    cands = {k: None if c is None else c.join(groups, on="record_id", how="left") for k, c in cands.items()}
    registry.configure(mlflow_store.tracking_uri, mlflow_store.experiment, mlflow_store.artifact_root)
    data_tags = training_tags(context, table, partitions, model.id, vectors)
    head_config = HeadConfig(hidden=config.hidden, epochs=config.epochs, lr=config.lr)
    summary, gate_rows, skipped = train_log_and_gate(
        context, fields, cands, emb, None, None, head_config, config.per_class, data_tags, key_prefix=PREFIX
    )
    yield heads_result(summary, gate_rows, skipped, len(partitions), mlflow_store.tracking_uri)


def near_duplicate_groups(table, records: pl.DataFrame, max_hamming: int = 6) -> pl.DataFrame:
    """``record_id -> group`` for the sampled images: near duplicates (pHash within ``max_hamming`` bits) share a group,
    so they land on the same side of the train/validation split."""
    hashes = (
        table.scan("raw", "images", sorted(set(records.get_column("partition").to_list())))
        .select("record_id", "phash")
        .join(records.lazy().select("record_id"), on="record_id", how="semi")
        .collect()
        .sort("record_id")
    )
    first = near_duplicate_clusters(hashes.get_column("phash").to_list(), max_hamming=max_hamming)
    ids = hashes.get_column("record_id").to_numpy()
    return hashes.select("record_id").with_columns(pl.Series("group", ids[first] if len(first) else [], dtype=pl.String))


@table_asset(
    "models/image_head_predictions",
    kinds={"delta", "torch"},
)
def image_head_predictions(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    catalog: CatalogResource,
    image_models: ImageModelsResource,
    mlflow_store: MlflowResource,
) -> dg.MaterializeResult:
    """Per image and attribute: the champion image head's value, its probability, and whether it clears the threshold."""
    table = lake.for_asset(context)
    ontology, model = catalog.ontology(), image_models.embedder()
    registry.configure(mlflow_store.tracking_uri)
    heads = champion_heads(context, ontology, getattr(model, "dim", None), PREFIX)  # a CLIP model knows its size once loaded

    def work(key: str) -> dict:
        if not heads or not table.exists("features", "image_embeddings"):
            return {"images": 0, "heads": len(heads)}
        emb = table.read("features", "image_embeddings", [key])
        if emb.height == 0:
            return {"images": 0, "heads": len(heads)}
        vectors = vector_matrix(emb.get_column("vector"))
        cols = []
        for fkey, (head, name) in heads.items():
            if head.dim != vectors.shape[1]:
                continue
            cols.append(prediction_struct(head, head.predict_proba(vectors), name, fkey, probs=False))
        out = emb.select("record_id", "partition").with_columns(cols)
        table.write_partitions("models", "image_head_predictions", out, [key])
        return {"images": out.height, "heads": len(cols)}

    stats = for_each_partition(context, work)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["images"] for s in stats),
            "embedder": model.id,
            "heads": dg.MetadataValue.json(
                {k: {"model": n, "classes": h.classes, "firing": h.firing_classes} for k, (h, n) in heads.items()}
            ),
            "per_partition": per_partition(stats),
        }
    )

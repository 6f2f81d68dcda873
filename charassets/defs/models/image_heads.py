"""Models stage, image side: attribute heads on image embeddings, trained with the images' own tags as weak labels."""

import dagster as dg

from charassets.defs.metadata import per_partition
from charassets.defs.models.training import GATE, HeadTraining, gate_spec, heads_result
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, ImageModelsResource, LakeResource, MlflowResource
from charassets.domain.models.champion import train_log_and_gate
from charassets.domain.models.features import vector_matrix
from charassets.domain.models.heads import HeadConfig
from charassets.domain.models.predict import champion_heads, prediction_struct
from charassets.domain.models.sampling import (
    head_fields,
    labelled_partitions,
    near_duplicate_groups,
    sample_training_data,
    training_tags,
    with_groups,
)

PREFIX = "image_"  # registered as charassets-head-image-<field>
VECTORS = ("features", "image_embeddings")


@table_asset("models/image_heads", kinds={"torch", "mlflow"}, check_specs=[gate_spec("models/image_heads", "image-head")])
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
    fields = head_fields(ontology, config.fields, "image_head")
    partitions = labelled_partitions(table, VECTORS)
    if not partitions:
        yield dg.MaterializeResult(metadata={"heads": "none trained: no partition has both tag labels and image embeddings"})
        yield dg.AssetCheckResult(check_name=GATE, passed=True, metadata={"comparisons": "none"})
        return
    cands, emb = sample_training_data(table, fields, partitions, config.per_class, VECTORS, only_with_vectors=True)
    cands = with_groups(cands, near_duplicate_groups(table, emb.select("record_id", "partition")))
    outcome = train_log_and_gate(
        mlflow_store.store(),
        fields,
        cands,
        emb,
        None,
        None,
        HeadConfig(hidden=config.hidden, epochs=config.epochs, lr=config.lr),
        config.per_class,
        training_tags(table, partitions, model.id, VECTORS, context.run_id),
        key_prefix=PREFIX,
        log=context.log,
    )
    yield heads_result(outcome, len(partitions), mlflow_store.tracking_uri)


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
    # a CLIP model knows its size once loaded
    heads = champion_heads(mlflow_store.store(), ontology, getattr(model, "dim", None), PREFIX, log=context.log)

    def work(key: str) -> dict:
        if not heads or not table.exists(*VECTORS):
            return {"images": 0, "heads": len(heads)}
        emb = table.read(*VECTORS, [key])
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

"""Champion heads applied to every record of a partition."""

import dagster as dg

from charassets.defs.metadata import per_partition
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, EmbedderResource, LakeResource, MlflowResource
from charassets.domain.models.features import load_tag_cache, vector_matrix
from charassets.domain.models.heads import masked_features
from charassets.domain.models.predict import champion_heads, needs_prediction, prediction_struct


@table_asset(
    "models/head_predictions",
    kinds={"delta", "torch"},
)
def head_predictions(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    catalog: CatalogResource,
    embedder: EmbedderResource,
    mlflow_store: MlflowResource,
) -> dg.MaterializeResult:
    """Per record that may need it (a gap in a head's field, or one of a calibration sample): each champion head's value, its confidence, and whether it fires."""
    table = lake.for_asset(context)
    ontology, model = catalog.ontology(), embedder.embedder()
    heads = champion_heads(mlflow_store.store(), ontology, model.dim, log=context.log)
    cache = load_tag_cache(table, model) if heads else None
    weights = cache.weights(catalog.vocabulary()) if cache else None

    def work(key: str) -> dict:
        # only the columns used: a third of the labels' bytes, and the vectors without their content hashes
        emb = table.scan("features", "embeddings", [key]).select("record_id", "partition", "weight_sum", "vector").collect()
        out = emb.select("record_id", "partition").clear()
        if heads and emb.height:
            labels = table.scan("labels", "tag_attributes", [key]).select("record_id", "status", *heads).collect()
            wanted = labels.filter(needs_prediction(labels, list(heads))).select("record_id")
            emb = emb.join(wanted, on="record_id", how="semi")
            out = emb.select("record_id", "partition")
        if heads and emb.height:  # a partition may have no record a head could fill (no ok record at all)
            joined = emb.join(labels.select("record_id", *heads), on="record_id", how="left", maintain_order="left")
            vectors = vector_matrix(joined.get_column("vector"))
            sums = joined.get_column("weight_sum").to_numpy()
            cols = []
            for fkey, (head, name) in heads.items():
                evidence = joined.get_column(fkey).struct.field("evidence")
                proba = head.predict_proba(masked_features(vectors, sums, evidence, cache, weights))
                cols.append(prediction_struct(head, proba, name, fkey, probs=False))
            out = out.with_columns(cols)
        table.write_partitions("models", "head_predictions", out, [key])
        return {"records": out.height, "predicted": out.height, "heads": len(heads)}

    stats = for_each_partition(context, work)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(s["records"] for s in stats),
            "heads": dg.MetadataValue.json(
                {k: {"model": n, "classes": h.classes, "firing": h.firing_classes} for k, (h, n) in heads.items()}
            ),
            "per_partition": per_partition(stats),
        }
    )

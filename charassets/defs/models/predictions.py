"""Champion heads applied to every record of a partition."""

import dagster as dg
import numpy as np
import polars as pl

from charassets.defs.features.assets import load_tag_cache
from charassets.defs.metadata import per_partition
from charassets.defs.partitions import for_each_partition, table_asset
from charassets.defs.resources import CatalogResource, EmbedderResource, LakeResource, MlflowResource
from charassets.domain.models import registry as registry
from charassets.domain.models.features import vector_matrix
from charassets.domain.models.heads import label_sets, masked_features


def prediction_struct(head, proba: np.ndarray, model: str, key: str, probs: bool = True) -> pl.Series:
    """One head's output as a struct column: value, confidence, above_threshold, model (and all class probabilities).

    ``above_threshold``: the value clears its class's own threshold (a class without one
    never does). ``confidence`` is then the class's calibrated precision on validation
    data (what a filled value carries), else the raw probability. Multi-label heads give
    the classes clearing their own thresholds, with the weakest precision as confidence.
    """
    if head.multilabel:
        chosen = head.predict_sets(proba)
        value = label_sets(chosen, head.classes)
        precision = np.where(chosen, head.calibrated(np.arange(len(head.classes)))[None, :], 1.0).min(1)
        conf, above = np.where(chosen.any(1), precision, proba.max(1)), chosen.any(1)
    else:
        top = proba.argmax(1)
        value, above = np.asarray(head.classes)[top], head.fires(proba)
        conf = np.where(above, head.calibrated(top), proba.max(1))
    columns = {
        "value": value,
        "confidence": conf.astype(np.float32),
        "above_threshold": above,
        "model": pl.repeat(model, len(proba), dtype=pl.String, eager=True),
    }
    if probs:
        columns["probs"] = pl.Series(proba.astype(np.float32)).cast(pl.List(pl.Float32))
    return pl.DataFrame(columns).to_struct(key)


CALIBRATION_ROWS = 2_000  # tag-labelled records per partition predicted too: what checks a head on this data


def needs_prediction(labels: pl.DataFrame, keys: list[str]) -> pl.Expr:
    """The records a head is run on: ``ok`` records with a gap in some head's field (what it may fill), and
    up to ``CALIBRATION_ROWS`` others (by record-id hash) on which the fill step checks the head against the tags."""
    ok = pl.col("status") == "ok"
    gap = pl.any_horizontal(
        (pl.col(k).struct.field("value") == "unknown") & (pl.col(k).struct.field("evidence").list.len() == 0) for k in keys
    )
    rank = pl.col("record_id").hash(seed=7).rank("ordinal").over(ok & ~gap)
    return ok & (gap | (rank <= CALIBRATION_ROWS))


def champion_heads(context: dg.AssetExecutionContext, ontology, dim: int | None, prefix: str = "") -> dict:
    """``field key -> (head, "<model>@v<version>")`` of every champion whose input size fits ``dim`` (unknown: all)."""
    heads = {}
    source = "image_head" if prefix else "head"
    for f in [f for f in ontology.fields if f.values and source in f.fill]:  # closed attributes whose fill policy allows a head
        champ = registry.champion(prefix + f.key)
        if not champ:
            continue
        head = registry.load_head(champ[1])
        if dim is None or head.dim == dim:
            heads[f.key] = (head, f"{registry.model_name(prefix + f.key)}@v{champ[0]}")
        else:
            context.log.warning(f"{f.name}: champion v{champ[0]} expects {head.dim}-d vectors, the embedder gives {dim}: skipped")
    return heads


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
    registry.configure(mlflow_store.tracking_uri)  # read-only: champions
    heads = champion_heads(context, ontology, model.dim)
    cache = load_tag_cache(table, model) if heads else None
    weights = cache.weights(catalog.vocabulary()) if cache else None

    def work(key: str) -> dict:
        emb = table.read("features", "embeddings", [key])
        out = emb.select("record_id", "partition").clear()
        if heads and emb.height:
            labels = table.read("labels", "tag_attributes", [key])
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

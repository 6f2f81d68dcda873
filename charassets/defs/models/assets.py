"""Models stage: attribute heads trained on record vectors, versioned in MLflow."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from charassets.defs.features.assets import load_tag_cache
from charassets.defs.metadata import preview
from charassets.defs.partitions import table_asset
from charassets.defs.resources import CatalogResource, EmbedderResource, LakeResource, MlflowResource
from charassets.domain.models import registry as registry
from charassets.domain.models.features import vector_matrix
from charassets.domain.models.heads import HeadConfig, evaluate, evaluate_multilabel
from charassets.domain.models.training import (
    field_candidates,
    merge_candidates,
    merge_multi,
    multi_candidates,
    plots,
    train_field,
    train_multi_field,
    with_sample_hash,
)

GATE = "challenger_beats_champion"


class HeadTraining(dg.Config):
    """Hyperparameters for a training run of the heads (editable in the UI's launchpad)."""

    per_class: int = 2000
    hidden: int = 128
    epochs: int = 40
    lr: float = 3e-3
    fields: list[str] = []  # display names or keys; empty: every closed field whose fill policy lets a head fill it


def _flat_metrics(result) -> dict[str, float]:
    m = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float) and v == v}  # NaN: nothing to log
    m.update({f"baseline_{k}_macro_f1": v for k, v in result.baselines.items()})
    for cls, st in result.metrics["per_class"].items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in cls)
        m[f"f1_{safe}"] = float(st["f1-score"])
        m[f"recall_{safe}"] = float(st["recall"])
    return m


@table_asset(
    "models/attribute_heads",
    kinds={"torch", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            GATE,
            asset=["models", "attribute_heads"],
            blocking=True,
            description="each new head version takes the `champion` alias only if it beats the current champion on the same validation records",
        )
    ],
)
def attribute_heads(
    context: dg.AssetExecutionContext,
    config: HeadTraining,
    lake: LakeResource,
    catalog: CatalogResource,
    embedder: EmbedderResource,
    mlflow_store: MlflowResource,
):
    """One classifier per attribute, trained on rule labels across all partitions (bounded sample), each run an MLflow model version."""
    table = lake.for_asset(context)
    ontology, vocabulary, model = catalog.ontology(), catalog.vocabulary(), embedder.embedder()
    wanted = set(config.fields)
    # every attribute with a closed set of values: single-label heads, and multi-label heads for list fields
    # by default only heads that may fill something are trained (the policy's "head" source); any closed
    # field can still be trained on request, to study it in MLflow
    fields = [f for f in ontology.fields if f.values and ((wanted & {f.name, f.key}) if wanted else "head" in f.fill)]
    partitions = sorted(set(table.partition_counts("labels", "tag_attributes")) & set(table.partition_counts("features", "embeddings")))
    if not partitions:
        raise dg.Failure("no partition has both labels and embeddings: materialize the record assets first")
    cands, emb = sample_training_data(table, fields, partitions, config.per_class, ("features", "embeddings"))
    cache = load_tag_cache(table, model)
    weights = cache.weights(vocabulary)
    registry.configure(mlflow_store.tracking_uri, mlflow_store.experiment, mlflow_store.artifact_root)
    data_tags = training_tags(context, table, partitions, model.id, ("features", "embeddings"))
    head_config = HeadConfig(hidden=config.hidden, epochs=config.epochs, lr=config.lr)
    summary, gate_rows, skipped = train_log_and_gate(context, fields, cands, emb, cache, weights, head_config, config.per_class, data_tags)
    yield heads_result(summary, gate_rows, skipped, len(partitions), mlflow_store.tracking_uri)


def sample_training_data(
    table, fields: list, partitions: list[str], per_class: int, vectors: tuple[str, str], only_with_vectors: bool = False
) -> tuple[dict[str, pl.DataFrame | None], pl.DataFrame]:
    """Per field, a bounded per-class sample of labelled records across partitions, and the vectors of those records.

    ``only_with_vectors``: sample among the records that have a row in ``vectors`` (images are a subset of records).
    """
    cands: dict[str, pl.DataFrame | None] = {f.key: None for f in fields}
    for key in partitions:
        labels = table.read("labels", "tag_attributes", [key])
        if only_with_vectors:
            labels = labels.join(table.scan(*vectors, [key]).select("record_id").collect(), on="record_id", how="semi")
        labels = with_sample_hash(labels)  # hashed once, used by every field
        for f in fields:
            if f.cardinality == "multi":
                cands[f.key] = merge_multi(cands[f.key], multi_candidates(labels, f, per_class), per_class)
            else:
                cands[f.key] = merge_candidates(cands[f.key], field_candidates(labels, f, per_class), per_class)
    ids = pl.concat([c.select("record_id") for c in cands.values() if c is not None]).unique()
    emb = pl.concat([table.scan(*vectors, [k]).join(ids.lazy(), on="record_id", how="semi").collect() for k in partitions])
    return cands, emb


def training_tags(context: dg.AssetExecutionContext, table, partitions: list[str], embedder_id: str, vectors: tuple[str, str]) -> dict:
    """What a head version was trained on, as MLflow tags: embedder, partitions, the Delta versions read, the Dagster run."""
    return {
        "embedder": embedder_id,
        "inputs": "image embeddings" if vectors[1] == "image_embeddings" else "tag embeddings",
        "partitions": str(len(partitions)),
        "partitions_digest": hashlib.sha1(",".join(partitions).encode()).hexdigest()[:12],
        "delta_version_labels": str(table.table_stats("labels", "tag_attributes")["version"]),
        "delta_version_embeddings": str(table.table_stats(*vectors)["version"]),
        "dagster_run_id": context.run_id,
    }


def train_log_and_gate(
    context: dg.AssetExecutionContext,
    fields: list,
    cands: dict[str, pl.DataFrame | None],
    emb: pl.DataFrame,
    cache,
    weights,
    head_config: HeadConfig,
    per_class: int,
    data_tags: dict[str, str],
    key_prefix: str = "",
) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Train one head per field on its sampled records' vectors, log each to MLflow as a new version, gate the champion.

    ``key_prefix`` names a family of heads on other vectors (``image_``: heads on image embeddings).
    """
    summary, gate_rows, skipped = [], [], {}
    for f in fields:
        cand = cands[f.key]
        joined = cand.join(emb, on="record_id", how="inner") if cand is not None else None
        result = None
        if joined is not None and joined.height:
            vectors = vector_matrix(joined.get_column("vector"))
            trainer = train_multi_field if f.cardinality == "multi" else train_field
            result = trainer(
                f, joined, vectors, joined.get_column("weight_sum").to_numpy() if cache is not None else None, cache, weights, head_config
            )
        if result is None:
            skipped[f.name] = "fewer than two classes with enough labels"
            continue
        digest = training_digest(key_prefix + f.key, joined, head_config, per_class, data_tags.get("embedder", ""))
        if registry.champion_tags(key_prefix + f.key).get("training_digest") == digest:
            champ = registry.champion(key_prefix + f.key)
            gate_rows.append(
                {
                    "field": f.name,
                    "version": champ[0],
                    "promoted": False,
                    "unchanged": True,
                    "challenger_macro_f1": round(result.metrics["macro_f1"], 4),
                    "champion_macro_f1": None,
                    "champion_version": champ[0],
                    "decision": f"unchanged: same data and config as champion v{champ[0]}, no new version",
                }
            )
            context.log.info(f"{f.name}: same data and config as champion v{champ[0]}: unchanged, no new version")
            continue
        beats_majority = result.metrics["macro_f1"] > result.baselines["majority"]
        with tempfile.TemporaryDirectory() as tmp:
            files = plots(result, Path(tmp))
            report = Path(tmp) / "report.json"
            report.write_text(
                json.dumps({"metrics": result.metrics, "baselines": result.baselines, "label_counts": result.label_counts}, indent=2)
            )
            files["report"] = str(report)
            logged = registry.log_head(
                result.head,
                key_prefix + f.key,
                params={
                    "field": f.name,
                    "inputs": "image embeddings" if key_prefix else "tag embeddings",
                    "n_train": result.n_train,
                    "n_val": result.n_val,
                    "classes": ",".join(result.head.classes),
                    "per_class_cap": per_class,
                    **{f"head_{k}": v for k, v in head_config.__dict__.items()},
                },
                metrics=_flat_metrics(result),
                tags={
                    **data_tags,
                    "beats_majority": str(beats_majority).lower(),
                    "fills": str(bool(result.head.meta.get("fills"))).lower(),
                    "training_digest": digest,
                },
                files=files,
            )
        gate = _champion_gate(key_prefix + f.key, logged, result)
        gate_rows.append({"field": f.name, "unchanged": False, **gate})
        summary.append(
            {
                "field": f.name,
                "version": logged.version,
                "macro_f1": round(result.metrics["macro_f1"], 4),
                "majority": round(result.baselines["majority"], 4),
                "character_rule": round(result.baselines["character_rule"], 4),
                "beats_majority": beats_majority,
                "fills": bool(result.head.meta.get("fills")),
                "classes_firing": len(result.head.firing_classes),
                "coverage_at_threshold": round(result.metrics["coverage_at_threshold"], 3),
                "n_train": result.n_train,
                "n_val": result.n_val,
                "champion": gate["champion_version"],
            }
        )
        context.log.info(
            f"{f.name}: macro-F1 {result.metrics['macro_f1']:.3f} (majority {result.baselines['majority']:.3f}), {gate['decision']}"
        )
    return summary, gate_rows, skipped


def heads_result(summary: list[dict], gate_rows: list[dict], skipped: dict, partitions: int, tracking_uri: str) -> dg.MaterializeResult:
    """Metadata of a training run (per-head table, macro-F1 against baselines) and the champion gate's result."""
    flagged = [s["field"] for s in summary if not s["beats_majority"]]
    # a challenger that lost is recorded (the champion stays in service); an unchanged one is not a challenger at all
    lost = [g for g in gate_rows if not g["promoted"] and not g.get("unchanged")]
    return dg.MaterializeResult(
        metadata={
            "heads": preview(pl.DataFrame(summary), n=50) if summary else "none trained",
            "macro_f1": dg.MetadataValue.json({s["field"]: s["macro_f1"] for s in summary}),
            "baselines": dg.MetadataValue.json(
                {s["field"]: {"majority": s["majority"], "character_rule": s["character_rule"]} for s in summary}
            ),
            "not_better_than_majority": dg.MetadataValue.json(flagged),
            "not_filling": dg.MetadataValue.json([s["field"] for s in summary if not s["fills"]]),
            "unchanged": dg.MetadataValue.json([g["field"] for g in gate_rows if g.get("unchanged")]),
            "skipped": dg.MetadataValue.json(skipped),
            "partitions_seen": partitions,
            "mlflow_tracking_uri": tracking_uri,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=GATE,
                passed=not lost,
                severity=dg.AssetCheckSeverity.WARN,  # a losing challenger is recorded; the champion stays in service
                metadata={"comparisons": preview(pl.DataFrame(gate_rows), n=50) if gate_rows else "none"},
            )
        ],
    )


def training_digest(field_key: str, sample: pl.DataFrame, config: HeadConfig, per_class: int, embedder_id: str) -> str:
    """What decides a head's weights: the sampled records, their labels and vectors, the config, the embedder."""
    label = "label" if "label" in sample.columns else "labels"
    cols = [pl.col("record_id"), pl.col(label).cast(pl.List(pl.String)) if sample.schema[label] != pl.String else pl.col(label)]
    cols += [pl.col("vector")] if "vector" in sample.columns else []
    body = sample.select(cols).sort("record_id").hash_rows(seed=0).sort().to_numpy().tobytes()
    head = json.dumps([field_key, config.__dict__, per_class, embedder_id], sort_keys=True, default=str).encode()
    return hashlib.sha1(head + body).hexdigest()[:16]


def _champion_gate(field_key: str, logged: "registry.LoggedHead", result) -> dict:
    """Promote the new version if there is no comparable champion or it beats the champion on the same validation rows."""
    current = registry.champion(field_key)
    new_f1 = result.metrics["macro_f1"]
    if current is None:
        decision, promoted, old_f1 = "first version: champion", True, None
    else:
        old = registry.load_head(current[1])
        if old.classes != result.head.classes or old.dim != result.head.dim or old.multilabel != result.head.multilabel:
            decision, promoted, old_f1 = "champion not comparable (classes or embedder changed): challenger promoted", True, None
        else:
            proba = old.predict_proba(result.val_x)
            if old.multilabel:
                old_f1 = evaluate_multilabel(old.classes, result.val_y, old.predict_sets(proba).astype(int))["macro_f1"]
            else:
                old_f1 = evaluate(old.classes, result.val_y, proba.argmax(1))["macro_f1"]
            promoted = new_f1 > old_f1
            decision = f"challenger {new_f1:.4f} vs champion v{current[0]} {old_f1:.4f}: " + ("promoted" if promoted else "champion kept")
    if promoted:
        registry.promote(field_key, logged.version)
    registry.record_comparison(
        field_key, logged.version, {"gate_decision": decision, "champion_macro_f1_same_val": old_f1, "macro_f1": new_f1}
    )
    champ = registry.champion(field_key)
    return {
        "version": logged.version,
        "promoted": promoted,
        "challenger_macro_f1": round(new_f1, 4),
        "champion_macro_f1": None if old_f1 is None else round(old_f1, 4),
        "champion_version": champ[0] if champ else None,
        "decision": decision,
    }

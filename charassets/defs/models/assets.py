"""Models stage: attribute heads trained on record vectors, versioned in MLflow."""

import dagster as dg

from charassets.defs.models.training import HeadTraining, gate_spec, heads_result
from charassets.defs.partitions import table_asset
from charassets.defs.resources import CatalogResource, EmbedderResource, LakeResource, MlflowResource
from charassets.domain.models.champion import train_log_and_gate
from charassets.domain.models.features import load_tag_cache
from charassets.domain.models.heads import HeadConfig
from charassets.domain.models.sampling import head_fields, labelled_partitions, sample_training_data, training_tags

VECTORS = ("features", "embeddings")


@table_asset("models/attribute_heads", kinds={"torch", "mlflow"}, check_specs=[gate_spec("models/attribute_heads", "head")])
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
    # every attribute with a closed set of values: single-label heads, and multi-label heads for list fields
    fields = head_fields(ontology, config.fields, "head")
    partitions = labelled_partitions(table, VECTORS)
    if not partitions:
        raise dg.Failure("no partition has both labels and embeddings: materialize the record assets first")
    cands, emb = sample_training_data(table, fields, partitions, config.per_class, VECTORS)
    cache = load_tag_cache(table, model)
    store = mlflow_store.store()
    outcome = train_log_and_gate(
        store,
        fields,
        cands,
        emb,
        cache,
        cache.weights(vocabulary),
        HeadConfig(hidden=config.hidden, epochs=config.epochs, lr=config.lr),
        config.per_class,
        training_tags(table, partitions, model.id, VECTORS, context.run_id),
        log=context.log,
    )
    yield heads_result(outcome, len(partitions), mlflow_store.tracking_uri)

"""The Dagster code location: loads the stage assets and picks resources from the environment.

Environment (all optional): ``CHARASSETS_HOME`` (default ``./.charassets``),
``CHARASSETS_LAKE`` (lake root URI, default ``$CHARASSETS_HOME/lake``),
``CHARASSETS_SOURCES`` (sources YAML; default: the generated demo dataset),
``CHARASSETS_VOCABULARY`` / ``CHARASSETS_TAG_ALIASES`` (tag vocabulary CSVs),
``CHARASSETS_ONTOLOGY`` (attribute ontology YAML), ``CHARASSETS_DEMO_RECORDS``,
``CHARASSETS_EMBEDDER`` (``minilm`` | ``hashing:<dim>`` | ``hf:<id or path>``), ``CHARASSETS_EMBED_MODE``
(``pooled`` | ``full``), ``CHARASSETS_DEVICE``, ``MLFLOW_TRACKING_URI`` (default: sqlite under the home),
``CHARASSETS_IMAGE_BACKEND`` (``animeface`` | ``wd:<folder or hub id>`` | ``clip:<hub id or path>``), ``CHARASSETS_IMAGE_EMBEDDER``
(``colorlayout`` | ``clip:<hub id or path>``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from charassets.defs import checks
from charassets.defs.clean.assets import tags
from charassets.defs.exports.assets import character_attributes_files
from charassets.defs.features.assets import embeddings, tag_vectors
from charassets.defs.features.images import image_clusters, image_embeddings, image_signals
from charassets.defs.jobs import (
    build_profiles,
    character_pipeline,
    deduplicate,
    prepare_records,
    publish,
    register_sources,
    report,
    train_heads,
)
from charassets.defs.labels.assets import tag_attributes
from charassets.defs.maintenance import maintain_lake_job, maintenance_schedule
from charassets.defs.marts.assets import character_attributes
from charassets.defs.marts.deduplicated import character_attributes_deduplicated
from charassets.defs.marts.profiles import character_profiles
from charassets.defs.models.assets import attribute_heads
from charassets.defs.models.image_heads import image_head_predictions, image_heads
from charassets.defs.models.predictions import head_predictions
from charassets.defs.raw.assets import raw_records, source_partitions
from charassets.defs.raw.images import raw_images
from charassets.defs.reports.assets import dataset_report
from charassets.defs.resources import DEMO_RECORDS, CatalogResource, EmbedderResource, ImageModelsResource, LakeResource, MlflowResource
from charassets.domain.ontology import DEFAULT_ONTOLOGY


def resources_from_env(env: dict[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The one place where the environment chooses lake, sources, vocabulary and ontology."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("CHARASSETS_HOME", ".charassets")).resolve()
    return {
        "lake": LakeResource(
            root=env.get("CHARASSETS_LAKE", str(home / "lake")),
            storage_options=json.loads(env.get("CHARASSETS_STORAGE_OPTIONS", "{}")),
        ),
        "catalog": CatalogResource(
            sources_path=env.get("CHARASSETS_SOURCES"),
            demo_dir=str(home / "demo"),
            demo_records=int(env.get("CHARASSETS_DEMO_RECORDS", DEMO_RECORDS)),
            vocabulary_path=env.get("CHARASSETS_VOCABULARY"),
            aliases_path=env.get("CHARASSETS_TAG_ALIASES"),
            ontology_path=env.get("CHARASSETS_ONTOLOGY", str(DEFAULT_ONTOLOGY)),
            prior_profiles_path=env.get("CHARASSETS_PRIOR_PROFILES"),
        ),
        "embedder": EmbedderResource(
            spec=env.get("CHARASSETS_EMBEDDER", "minilm"),
            batch_size=int(env.get("CHARASSETS_EMBED_BATCH", "128")),
            device=env.get("CHARASSETS_DEVICE", "cpu"),
            mode=env.get("CHARASSETS_EMBED_MODE", "pooled"),
        ),
        "image_models": ImageModelsResource(
            backend=env.get("CHARASSETS_IMAGE_BACKEND", "animeface"),
            embedder_spec=env.get("CHARASSETS_IMAGE_EMBEDDER", "colorlayout"),
            device=env.get("CHARASSETS_DEVICE", "cpu"),
        ),
        "mlflow_store": MlflowResource(
            tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            artifact_root=None if "MLFLOW_TRACKING_URI" in env else str(home / "mlartifacts"),
        ),
    }


ASSETS = [
    source_partitions,
    raw_records,
    tags,
    tag_attributes,
    tag_vectors,
    embeddings,
    character_attributes,
    character_attributes_files,
    attribute_heads,
    head_predictions,
    character_profiles,
    raw_images,
    image_signals,
    image_embeddings,
    image_clusters,
    image_heads,
    image_head_predictions,
    character_attributes_deduplicated,
    dataset_report,
]


def build_definitions(env: dict[str, str] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=[checks.row_accounting_all_partitions],
        jobs=[
            register_sources,
            character_pipeline,
            prepare_records,
            train_heads,
            build_profiles,
            publish,
            deduplicate,
            report,
            maintain_lake_job,
        ],
        schedules=[maintenance_schedule],
        resources=resources_from_env(env),
        # one process per run: partitions are processed in turn inside it (see defs/partitions.py)
        executor=dg.in_process_executor,
    )


defs = build_definitions()

"""Resources: where the lake is, and which sources, vocabulary and ontology to use."""

from __future__ import annotations

import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import fsspec

from charassets.domain.demo import generate
from charassets.domain.lake import Lake, fsspec_options
from charassets.domain.ontology import DEFAULT_ONTOLOGY, Ontology
from charassets.domain.sources import SourcesConfig
from charassets.domain.tables import DeclaredLake, table
from charassets.domain.tags.vocabulary import Vocabulary

if TYPE_CHECKING:
    from charassets.domain.models.registry import ModelStore

DEMO_RECORDS = 24_000


class LakeResource(dg.ConfigurableResource):
    """The Delta lake root (a local path or an object-store URI) and its storage options."""

    root: str
    storage_options: dict[str, str] = {}

    def lake(self) -> Lake:
        """The whole lake, for code outside an asset (runner, checks, maintenance)."""
        return Lake(self.root, dict(self.storage_options))

    def for_asset(self, context: dg.AssetExecutionContext) -> DeclaredLake:
        """The lake as this asset may use it: the tables its registry entries read, and the ones it writes."""
        owned = [table("/".join(k.path)) for k in context.assets_def.keys]
        return DeclaredLake.for_tables(self.lake(), owned)

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write a side file (schema manifest, export) under the root; replaced by a rename, never half-written."""
        uri = f"{self.root.rstrip('/')}/{relative}"
        fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(self.root, dict(self.storage_options)))
        fs.makedirs(str(Path(path).parent), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # one name per writer: two publishers never share a temp file
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
        return uri

    def remove(self, relative: str) -> bool:
        """Delete a side file under the root if it exists (a retired partition's export); whether it did."""
        uri = f"{self.root.rstrip('/')}/{relative}"
        fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(self.root, dict(self.storage_options)))
        if not fs.exists(path):
            return False
        fs.rm(path)
        return True

    def write_text(self, relative: str, text: str) -> str:
        return self.write_bytes(relative, text.encode("utf-8"))


@lru_cache(maxsize=4)
def _vocabulary(path: str | None, aliases: str | None) -> Vocabulary:
    return Vocabulary.from_csv(path, aliases) if path else Vocabulary.embedded()


@lru_cache(maxsize=4)
def _ontology(path: str) -> Ontology:
    return Ontology.load(path)


class CatalogResource(dg.ConfigurableResource):
    """Sources file, tag vocabulary and attribute ontology.

    Without a sources file the embedded demo dataset is generated (deterministically) at
    ``demo_dir`` on first use, so a fresh clone has data to run on.
    """

    sources_path: str | None = None
    demo_dir: str = ".charassets/demo"
    demo_records: int = DEMO_RECORDS
    vocabulary_path: str | None = None
    aliases_path: str | None = None
    ontology_path: str = str(DEFAULT_ONTOLOGY)
    prior_profiles_path: str | None = None

    def sources(self) -> SourcesConfig:
        path = Path(self.sources_path) if self.sources_path else Path(self.demo_dir) / "sources.yaml"
        if not self.sources_path and not path.exists():
            generate(self.demo_dir, n=self.demo_records, images=True)  # the shipped pictures too: the demo shows both paths
        return SourcesConfig.from_yaml(path)

    def vocabulary(self) -> Vocabulary:
        return _vocabulary(self.vocabulary_path, self.aliases_path)

    def ontology(self) -> Ontology:
        return _ontology(self.ontology_path)


@lru_cache(maxsize=4)
def _embedder(spec: str, batch_size: int, device: str):
    from charassets.domain.models.embedders import make_embedder

    return make_embedder(spec, batch_size=batch_size, device=device)


class EmbedderResource(dg.ConfigurableResource):
    """Which text embedder makes record vectors: ``minilm`` (offline default), ``hashing[:dim]``, or ``hf:<id or path>``."""

    spec: str = "minilm"
    batch_size: int = 128
    device: str = "cpu"
    mode: str = "pooled"  # or "full": encode each record's whole tag list

    def embedder(self):
        return _embedder(self.spec, self.batch_size, self.device)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry: a server URI, or the embedded sqlite store under the project home."""

    tracking_uri: str
    artifact_root: str | None = None
    experiment: str = "charassets-attribute-heads"

    def store(self) -> ModelStore:
        """The heads' model store bound to this URI (its own MLflow client; no process-wide MLflow setting)."""
        from charassets.domain.models.registry import ModelStore

        return ModelStore(self.tracking_uri, self.experiment, self.artifact_root)


@lru_cache(maxsize=2)
def _image_embedder(spec: str, device: str):
    from charassets.domain.images.embedders import load_image_embedder

    return load_image_embedder(spec, device)


class ImageModelsResource(dg.ConfigurableResource):
    """The image side: the signal backend (``animeface`` offline default, ``wd:<folder or hub id>`` or ``clip:<hub id or path>``)
    and the image embedder (``colorlayout`` offline default, or ``clip:<hub id or path>``)."""

    backend: str = "animeface"
    embedder_spec: str = "colorlayout"
    device: str = "cpu"

    def embedder(self):
        return _image_embedder(self.embedder_spec, self.device)

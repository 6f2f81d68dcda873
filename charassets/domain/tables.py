"""Every table of the platform, once: its key, its storage, what it reads, whether it is maintained.

This registry is the lineage. The Dagster asset specs and their deps (``defs/tables.py``),
the maintenance list, the retirement of replaced partitions and the structure test are
generated from it; nothing else spells a table's key. An asset reads the lake through
``DeclaredLake``, bound to the tables it declares: reading an undeclared table raises
``UndeclaredTable``, so the graph the UI draws is the graph the code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from charassets.domain.lake import Lake


@dataclass(frozen=True)
class Table:
    """One asset's output. ``storage``: ``delta`` (a lake table), ``mlflow`` (registered models) or ``files`` (side files)."""

    stage: str
    name: str
    description: str
    reads: tuple[str, ...] = ()  # "stage/name" of every table this one is computed from
    partitioned: bool = True  # the asset has one partition per record chunk (else it is built over the whole lake)
    storage: str = "delta"
    maintained: bool = True  # compacted, checkpointed and vacuumed by the maintenance job
    per_chunk_rows: bool = True  # holds rows with a record chunk's ``partition`` (deleted when the chunk is retired)

    @property
    def key(self) -> tuple[str, str]:
        return (self.stage, self.name)

    @property
    def path(self) -> str:
        return f"{self.stage}/{self.name}"


def _t(path: str, description: str, reads: Sequence[str] = (), **kwargs) -> Table:
    stage, name = path.split("/")
    return Table(stage, name, description, tuple(reads), **kwargs)


RECORD_TABLES: tuple[Table, ...] = (
    _t(
        "raw/source_partitions",
        "Chunk registry: one row per chunk of every source file (byte range, rows, content digest).",
        partitioned=False,
    ),
    _t("raw/records", "Records read from the source chunk, with their raw tag strings.", ["raw/source_partitions"]),
    _t("raw/rejects", "Rows of the chunk that could not be read, with the reason (quarantine).", ["raw/source_partitions"]),
    _t("clean/tags", "Normalised Danbooru tags per record.", ["raw/records", "raw/rejects", "raw/source_partitions"]),
    _t(
        "labels/tag_attributes",
        "Attributes, status and flags from each record's tags alone (and the hash that places the record in training samples).",
        ["clean/tags"],
    ),
    _t(
        "features/tag_vectors",
        "One vector per (embedder, tag): the cache record vectors are pooled from; each tag is encoded once.",
        ["clean/tags"],
        per_chunk_rows=False,  # materialized per chunk (its new tags), stored as one append-only cache
    ),
    _t("features/embeddings", "One vector per record, pooled from its tags' vectors.", ["clean/tags", "features/tag_vectors"]),
    _t(
        "models/attribute_heads",
        "One classifier per attribute over record vectors, trained, gated and versioned in MLflow.",
        ["labels/tag_attributes", "features/embeddings", "features/tag_vectors"],
        partitioned=False,
        storage="mlflow",
        maintained=False,
    ),
    _t(
        "models/head_predictions",
        "Champion heads' predictions where the tags leave a gap, plus a calibration sample.",
        ["features/embeddings", "labels/tag_attributes", "features/tag_vectors", "models/attribute_heads"],
    ),
    _t(
        "marts/character_profiles",
        "Per character and field: the value its records agree on, with a posterior confidence.",
        ["labels/tag_attributes"],
        partitioned=False,
    ),
)

IMAGE_TABLES: tuple[Table, ...] = (
    _t("raw/images", "Per record with an image: decoded facts and a thumbnail.", ["raw/records", "raw/source_partitions"]),
    _t("raw/image_rejects", "Images that could not be read or decoded, with the reason.", ["raw/records", "raw/source_partitions"]),
    _t("features/image_signals", "Faces and named colours per decoded image.", ["raw/images", "raw/records", "raw/source_partitions"]),
    _t("features/image_embeddings", "One vector per decoded image.", ["raw/images"]),
    _t(
        "features/image_clusters",
        "Near-duplicate image clusters over the whole lake.",
        ["raw/images", "features/image_embeddings"],
        partitioned=False,
    ),
    _t(
        "models/image_heads",
        "Attribute heads over image vectors, trained on the tags of records that have both.",
        ["labels/tag_attributes", "features/image_embeddings", "raw/images"],
        partitioned=False,
        storage="mlflow",
        maintained=False,
    ),
    _t("models/image_head_predictions", "Image heads' predictions per decoded image.", ["features/image_embeddings", "models/image_heads"]),
)

OUTPUT_TABLES: tuple[Table, ...] = (
    _t(
        "marts/character_attributes",
        "The final table: one row per record, every attribute decided by one precedence of sources.",
        [
            "labels/tag_attributes",
            "raw/rejects",
            "clean/tags",
            "marts/character_profiles",
            "models/head_predictions",
            "raw/source_partitions",
            "raw/images",
            "raw/image_rejects",
            "features/image_signals",
            "models/image_head_predictions",
        ],
    ),
    _t(
        "exports/character_attributes_files",
        "The final table as one JSON Lines file per partition.",
        ["marts/character_attributes"],
        storage="files",
        maintained=False,
    ),
    _t(
        "marts/character_attributes_deduplicated",
        "The final table with near-duplicate images marked, one representative per cluster.",
        ["marts/character_attributes", "features/image_clusters"],
        partitioned=False,  # rebuilt over the whole lake (clusters span chunks), stored per chunk
    ),
    _t(
        "reports/dataset_report",
        "The dataset report (HTML and JSON) over every partition.",
        [
            "marts/character_attributes",
            "clean/tags",
            "marts/character_profiles",
            "raw/images",
            "features/image_clusters",
            "models/attribute_heads",
        ],
        partitioned=False,
        storage="files",
        maintained=False,
    ),
)

TABLES: dict[str, Table] = {t.path: t for t in (*RECORD_TABLES, *IMAGE_TABLES, *OUTPUT_TABLES)}


def table(path: str) -> Table:
    """The registered table at ``stage/name``; an unknown path is an error, never a new table."""
    try:
        return TABLES[path]
    except KeyError:
        raise KeyError(f"{path!r} is not a registered table: add it to charassets/domain/tables.py") from None


def lake_tables() -> list[Table]:
    """The Delta tables, in lineage order."""
    return [t for t in TABLES.values() if t.storage == "delta"]


def maintained_tables() -> list[Table]:
    return [t for t in lake_tables() if t.maintained]


class UndeclaredTable(RuntimeError):
    """An asset touched a table it does not declare: the lineage in the UI would be wrong."""


@dataclass
class DeclaredLake:
    """The lake as one asset may use it: read what it declares, write what it owns.

    Duck-types ``Lake`` for the calls assets and domain helpers make. ``seen`` records each
    table read, so a test can check that every declared dependency is really read.
    """

    lake: Lake
    owner: str
    reads: frozenset[str]
    writes: frozenset[str]
    seen: set[str] = field(default_factory=set)

    @classmethod
    def for_tables(cls, lake: Lake, owned: Sequence[Table]) -> DeclaredLake:
        reads = frozenset(r for t in owned for r in t.reads)
        writes = frozenset(t.path for t in owned)
        return cls(lake, ",".join(sorted(writes)), reads | writes, writes)

    # --- reads -------------------------------------------------------------------------
    def _read(self, stage: str, name: str) -> None:
        path = f"{stage}/{name}"
        if path not in self.reads:
            raise UndeclaredTable(f"{self.owner} reads {path} but does not declare it (charassets/domain/tables.py)")
        if path not in self.writes:
            self.seen.add(path)
            SEEN_READS.setdefault(self.owner, set()).add(path)

    def exists(self, stage: str, name: str) -> bool:
        self._read(stage, name)
        return self.lake.exists(stage, name)

    def scan(self, stage: str, name: str, partitions: Sequence[str] | None = None) -> pl.LazyFrame:
        self._read(stage, name)
        return self.lake.scan(stage, name, partitions)

    def read(self, stage: str, name: str, partitions: Sequence[str] | None = None) -> pl.DataFrame:
        self._read(stage, name)
        return self.lake.read(stage, name, partitions)

    def partition_counts(self, stage: str, name: str) -> dict[str, int]:
        self._read(stage, name)
        return self.lake.partition_counts(stage, name)

    def table_stats(self, stage: str, name: str) -> dict[str, int]:
        self._read(stage, name)
        return self.lake.table_stats(stage, name)

    def uri(self, stage: str, name: str) -> str:
        self._read(stage, name)
        return self.lake.uri(stage, name)

    # --- writes ------------------------------------------------------------------------
    def _write(self, stage: str, name: str) -> None:
        if f"{stage}/{name}" not in self.writes:
            raise UndeclaredTable(f"{self.owner} writes {stage}/{name}, which it does not own")

    def write_partitions(self, stage: str, name: str, df: pl.DataFrame, partitions: Sequence[str]) -> int:
        self._write(stage, name)
        return self.lake.write_partitions(stage, name, df, partitions)

    def write_table(self, stage: str, name: str, df: pl.DataFrame) -> int:
        self._write(stage, name)
        return self.lake.write_table(stage, name, df)

    def append(self, stage: str, name: str, df: pl.DataFrame) -> int:
        self._write(stage, name)
        return self.lake.append(stage, name, df)

    @property
    def root(self) -> str:
        return self.lake.root

    @property
    def storage_options(self) -> dict[str, str]:
        return self.lake.storage_options


# owner -> tables it was seen reading in this process (for the lineage test)
SEEN_READS: dict[str, set[str]] = {}

"""What a head is trained on: which fields, a bounded per-class sample of labelled records, and how that is recorded.

``table`` is a lake-like object (``read``, ``scan``, ``partition_counts``, ``table_stats``):
the whole lake, or an asset's declared part of it.
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from charassets.domain.dedup import near_duplicate_clusters
from charassets.domain.lake import READ_BATCH_ROWS, partition_batches
from charassets.domain.models.features import compact_vectors
from charassets.domain.models.heads import HeadConfig
from charassets.domain.models.training import (
    SAMPLE_HASH,
    class_bounds,
    field_candidates,
    merge_candidates,
    merge_multi,
    multi_candidates,
    with_sample_hash,
)

LABELS = ("labels", "tag_attributes")


def head_fields(ontology, wanted: list[str], source: str) -> list:
    """The closed fields to train heads for: those named in ``wanted`` (display name or key), or by default every
    field whose fill policy lets ``source`` (``head``, ``image_head``) fill it.

    Any closed field can still be trained on request, to study it in MLflow.
    """
    names = set(wanted)
    return [f for f in ontology.fields if f.values and ((names & {f.name, f.key}) if names else source in f.fill)]


def labelled_partitions(table, vectors: tuple[str, str]) -> list[str]:
    """The partitions that hold both tag labels and ``vectors``."""
    return sorted(set(table.partition_counts(*LABELS)) & set(table.partition_counts(*vectors)))


def sample_training_data(
    table,
    fields: list,
    partitions: list[str],
    per_class: int,
    vectors: tuple[str, str],
    only_with_vectors: bool = False,
    batch_rows: int = READ_BATCH_ROWS,
) -> tuple[dict[str, pl.DataFrame | None], pl.DataFrame]:
    """Per field, a bounded per-class sample of labelled records across partitions, and the vectors of those records.

    ``only_with_vectors``: sample among the records that have a row in ``vectors`` (images are a subset of records).
    ``batch_rows``: labelled rows read at once (the sample is the same whatever it is).
    """
    cands: dict[str, pl.DataFrame | None] = {f.key: None for f in fields}
    # only what a sample holds, and only ``ok`` records (the only ones a head learns from)
    columns = ["record_id", "partition", "status", "characters", *(f.key for f in fields)]
    if SAMPLE_HASH in table.scan(*LABELS).collect_schema():  # hashed when labelled (labels written before: hashed here)
        columns.append(SAMPLE_HASH)
    counts = table.partition_counts(*LABELS)
    for batch in partition_batches(partitions, counts, batch_rows):
        labels = table.scan(*LABELS, batch).select(columns).filter(pl.col("status") == "ok").collect()
        if only_with_vectors:  # by record and partition: the same id may be another partition's record (a post in two files)
            have = table.scan(*vectors, batch).select("record_id", "partition").collect()
            labels = labels.join(have, on=["record_id", "partition"], how="semi")
        labels = with_sample_hash(labels)  # each field sorts only the rows that may enter its sample
        # a batch sampled at once gives what its partitions sampled one after another give, unless an id repeats across
        # them (a post in two files: its copies tie on the hash): then one after another, in order, as before batches
        parts = (
            [labels]
            if labels.get_column("record_id").n_unique() == labels.height
            else [labels.filter(pl.col("partition") == k) for k in batch]
        )
        for part in parts:
            for f in fields:
                if f.cardinality == "multi":
                    cands[f.key] = merge_multi(cands[f.key], multi_candidates(part, f, per_class), per_class)
                else:
                    found = field_candidates(part, f, per_class, class_bounds(cands[f.key], per_class))
                    cands[f.key] = merge_candidates(cands[f.key], found, per_class)
    ids = pl.concat([c.select("record_id") for c in cands.values() if c is not None]).unique().get_column("record_id")
    # one scan of every partition, filtered by id as it is read (the filter reaches the Parquet reader, which decodes
    # the vectors of matching rows only; a semi-join per partition decoded every vector: 5M records, 5.0 -> 1.8-2.4 s)
    emb = table.scan(*vectors, partitions).filter(pl.col("record_id").is_in(ids.implode())).collect()
    # in the partitions' order, each in its own row order: the order heads are trained in (``train_log_and_gate``)
    return cands, compact_vectors(emb.sort("partition", maintain_order=True))


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


def with_groups(cands: dict[str, pl.DataFrame | None], groups: pl.DataFrame) -> dict[str, pl.DataFrame | None]:
    """Each field's sample with its records' near-duplicate group (kept together by the split)."""
    return {k: None if c is None else c.join(groups, on="record_id", how="left") for k, c in cands.items()}


def training_tags(table, partitions: list[str], embedder_id: str, vectors: tuple[str, str], run_id: str) -> dict[str, str]:
    """What a head version was trained on, as MLflow tags: embedder, partitions, the Delta versions read, the run."""
    return {
        "embedder": embedder_id,
        "inputs": "image embeddings" if vectors[1] == "image_embeddings" else "tag embeddings",
        "partitions": str(len(partitions)),
        "partitions_digest": hashlib.sha1(",".join(partitions).encode()).hexdigest()[:12],
        "delta_version_labels": str(table.table_stats(*LABELS)["version"]),
        "delta_version_embeddings": str(table.table_stats(*vectors)["version"]),
        "dagster_run_id": run_id,
    }


def training_digest(field_key: str, sample: pl.DataFrame, config: HeadConfig, per_class: int, embedder_id: str) -> str:
    """What decides a head's weights: the sampled records, their labels and vectors, the config, the embedder."""
    label = "label" if "label" in sample.columns else "labels"
    cols = [pl.col("record_id"), pl.col(label).cast(pl.List(pl.String)) if sample.schema[label] != pl.String else pl.col(label)]
    cols += [pl.col("vector")] if "vector" in sample.columns else []
    body = sample.select(cols).sort("record_id").hash_rows(seed=0).sort().to_numpy().tobytes()
    head = json.dumps([field_key, config.__dict__, per_class, embedder_id], sort_keys=True, default=str).encode()
    return hashlib.sha1(head + body).hexdigest()[:16]

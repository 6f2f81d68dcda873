"""The record path as plain functions, one per stage; assets and the CLI call these.

raw records --clean_stage--> clean tags --label_stage--> tag attributes --mart_stage--> attribute table
"""

from __future__ import annotations

import polars as pl

from charassets.domain.extraction import extract_attributes
from charassets.domain.ontology import Ontology
from charassets.domain.sources import SourceSpec
from charassets.domain.tags import CATEGORY_COLUMNS, CleaningStats, clean_tags
from charassets.domain.vocabulary import Vocabulary

KEY_COLUMNS = ("record_id", "source_id", "source", "partition", "row_index")
EMPTY_LIST = pl.lit([], dtype=pl.List(pl.String))


def clean_stage(records: pl.DataFrame, spec: SourceSpec, vocabulary: Vocabulary) -> tuple[pl.DataFrame, CleaningStats]:
    """Raw records of one source -> one row of canonical tag lists per record."""
    columns = {k: f"{k}_raw" for k in ("tags", *CATEGORY_COLUMNS) if k in spec.mapping.tag_columns()}
    clean, stats = clean_tags(records, columns, spec.tag_separator, vocabulary)
    return records.select(*KEY_COLUMNS, "rating").join(clean, on="record_id", how="left", maintain_order="left"), stats


def label_stage(clean: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """Clean tags -> status, subject count, flags and one attribute struct per field."""
    labels = extract_attributes(clean, ontology)
    return clean.select(*KEY_COLUMNS).join(labels, on="record_id", how="left", maintain_order="left")


def mart_stage(labels: pl.DataFrame, rejects: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """The final table: every labelled record plus every rejected row (status ``rejected``)."""
    fields = [f.key for f in ontology.fields]
    ok = labels.select(
        *KEY_COLUMNS,
        "status",
        pl.lit(None, dtype=pl.String).alias("reason"),
        "subject_count",
        "flags",
        "characters",
        "unknown_tags",
        *fields,
    )
    bad = rejects.select(
        *KEY_COLUMNS,
        pl.lit("rejected").alias("status"),
        "reason",
        pl.lit(None, dtype=pl.Int32).alias("subject_count"),
        EMPTY_LIST.alias("flags"),
        EMPTY_LIST.alias("characters"),
        EMPTY_LIST.alias("unknown_tags"),
        *(pl.lit(None, dtype=ok.schema[k]).alias(k) for k in fields),
    )
    return pl.concat([ok, bad]).sort("partition", "row_index")


def unknown_rates(mart: pl.DataFrame, ontology: Ontology) -> dict[str, float]:
    """Share of ``ok`` records whose field is unknown (single) or empty (multi)."""
    ok = mart.filter(pl.col("status") == "ok")
    if ok.height == 0:
        return {}
    rates = {}
    for f in ontology.fields:
        value = pl.col(f.key).struct.field("value")
        unknown = value.list.len() == 0 if f.cardinality == "multi" else value == "unknown"
        rates[f.name] = round(float(ok.select(unknown.mean()).item()), 4)
    return rates


def value_counts(mart: pl.DataFrame, ontology: Ontology, top: int = 8) -> dict[str, dict[str, int]]:
    """Most frequent values per field among ``ok`` records."""
    ok = mart.filter(pl.col("status") == "ok")
    out = {}
    for f in ontology.fields:
        value = pl.col(f.key).struct.field("value")
        vc = ok.select(value.explode() if f.cardinality == "multi" else value).drop_nulls().to_series().value_counts(sort=True).head(top)
        out[f.name] = dict(zip(vc[:, 0].to_list(), vc[:, 1].to_list(), strict=True))
    return out


def extract_one(tag_string: str, ontology: Ontology | None = None, vocabulary: Vocabulary | None = None) -> dict:
    """One tag string through every stage, as the JSON object the table holds for it."""
    from charassets.domain.schema import to_json_frame
    from charassets.domain.sources import RAW_SCHEMA, Chunk, validate_records

    ontology = ontology or Ontology.load()
    vocabulary = vocabulary or Vocabulary.embedded()
    spec = SourceSpec(name="cli", uri="-", layout="ordered")
    chunk = Chunk(partition="cli", source="cli", file="-", format="jsonl", row_start=0, row_count=1, byte_start=0, byte_end=0)
    raw = pl.DataFrame(
        [{"source_id": "1", "source": "cli", "partition": "cli", "file": "-", "row_index": 0, "tags_raw": tag_string}], schema=RAW_SCHEMA
    )
    records, rejects = validate_records(raw, spec, chunk)
    clean, _ = clean_stage(records, spec, vocabulary)
    mart = mart_stage(label_stage(clean, ontology), rejects, ontology)
    return to_json_frame(mart, ontology).drop("partition", "source").row(0, named=True)

"""The record path as plain functions, one per stage; assets and the CLI call these.

raw records --clean_stage--> clean tags --label_stage--> tag attributes --mart_stage--> attribute table
                        profiles, heads, image signals, image heads --candidates.decide--^
"""

from __future__ import annotations

import json

import polars as pl

from charassets.domain.candidates import decide
from charassets.domain.ontology import Ontology
from charassets.domain.schema import IMAGE_DTYPE
from charassets.domain.sources import SourceSpec
from charassets.domain.tags.cleaning import CATEGORY_COLUMNS, CleaningStats, clean_tags
from charassets.domain.tags.extraction import extract_attributes
from charassets.domain.tags.profiles import usable
from charassets.domain.tags.vocabulary import Vocabulary

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


def image_facts(images: pl.DataFrame | None, signals: pl.DataFrame | None, image_rejects: pl.DataFrame | None) -> pl.DataFrame:
    """``record_id`` and the ``image`` struct of the output: reference, hash, size, faces (or just the reference of a rejected image)."""
    parts = []
    if images is not None and images.height:
        decoded = images.select(
            "record_id", pl.col("image_ref").alias("ref"), "sha256", "phash", "width", "height", "format", "mode", "frames"
        )
        if signals is not None:
            decoded = decoded.join(signals.select("record_id", "backend", "faces", "face_boxes"), on="record_id", how="left")
        parts.append(decoded)
    if image_rejects is not None and image_rejects.height:
        parts.append(image_rejects.select("record_id", pl.col("image_ref").alias("ref")))
    names = list(IMAGE_DTYPE.to_schema())
    if not parts:
        return pl.DataFrame(schema={"record_id": pl.String, "image": IMAGE_DTYPE})
    facts = pl.concat(parts, how="diagonal_relaxed")
    facts = facts.with_columns([pl.lit(None).alias(n) for n in names if n not in facts.columns])
    facts = facts.with_columns(pl.col("face_boxes").fill_null(pl.lit([], dtype=pl.List(pl.List(pl.Int32)))))
    return facts.select("record_id", pl.struct(names).cast(IMAGE_DTYPE).alias("image"))


def mart_stage(
    labels: pl.DataFrame,
    rejects: pl.DataFrame,
    ontology: Ontology,
    profiles: pl.DataFrame | None = None,
    predictions: pl.DataFrame | None = None,
    images: dict[str, pl.DataFrame | None] | None = None,
) -> pl.DataFrame:
    """The final table: every labelled record (gaps filled from profiles, heads and images) plus every rejected row.

    Every value is decided by ``candidates.decide`` (one precedence of sources). ``images``, for a
    partition with images: ``tagless``, ``signals``, ``image_rejects``, ``image_predictions``
    and ``images`` frames.
    """
    fields = [f.key for f in ontology.fields]
    labels = decide(labels, ontology, usable(profiles) if profiles is not None else None, predictions, images)
    if images and any(images.get(k) is not None and images[k].height for k in ("signals", "image_rejects")):
        labels = labels.join(
            image_facts(images.get("images"), images.get("signals"), images.get("image_rejects")),
            on="record_id",
            how="left",
            maintain_order="left",
        )
    if "image" not in labels.columns:
        labels = labels.with_columns(pl.lit(None, dtype=IMAGE_DTYPE).alias("image"))
    ok = labels.select(
        *KEY_COLUMNS,
        "status",
        (pl.col("reason") if "reason" in labels.columns else pl.lit(None, dtype=pl.String)).alias("reason"),
        "subject_count",
        "flags",
        "characters",
        "unknown_tags",
        *fields,
        "image",
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
        pl.lit(None, dtype=IMAGE_DTYPE).alias("image"),
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


def extract_one(tag_string: str, ontology: Ontology | None = None, vocabulary: Vocabulary | None = None, image=None) -> dict:
    """One tag string (and, optionally, the ``ImageSignals`` of its picture) through every stage, as the table's JSON object.

    With an image, the values are decided by the same resolver as the graph's (``candidates.decide``):
    tags first, a confident reading fills what they leave open, a differing one is flagged.
    """
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
    images = None
    if image is not None:
        signals = pl.DataFrame(
            {
                "record_id": records.get_column("record_id"),
                "status": [image.status],
                "faces": [len(image.faces)],
                "flags": [list(image.flags)],
                "attributes": [json.dumps(image.attributes)],
            },
            schema_overrides={"faces": pl.Int32, "flags": pl.List(pl.String)},
        )
        tagless = records.filter(pl.col("tags_raw").fill_null("").str.strip_chars() == "").select("record_id")
        images = {"tagless": tagless, "signals": signals}
    mart = mart_stage(label_stage(clean, ontology), rejects, ontology, images=images)
    return to_json_frame(mart, ontology).drop("partition", "source").row(0, named=True)

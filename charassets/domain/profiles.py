"""Character profiles: each named character's usual look, from its single-character records.

A profile row is (character, field, value, support, agreement): the majority value of a
single-valued field over the character's ``ok`` records that state it, how many records
say so, and what share of them agree. Counts are summed partition by partition, so
memory grows with the number of characters, not records.
"""

from __future__ import annotations

import polars as pl

from charassets.domain.extraction import UNKNOWN
from charassets.domain.ontology import Ontology

COUNT_SCHEMA = {"character": pl.String, "field": pl.String, "value": pl.String, "n": pl.Int64}
PROFILE_SCHEMA = {
    "character": pl.String,
    "field": pl.String,
    "value": pl.String,
    "support": pl.Int64,
    "records": pl.Int64,
    "agreement": pl.Float64,
}
MIN_SUPPORT = 3
MIN_AGREEMENT = 0.6


def profile_fields(ontology: Ontology) -> list:
    return [f for f in ontology.fields if f.cardinality == "single" and f.values]


def value_counts(labels: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """(character, field, value, n) over records showing exactly one named character."""
    single = labels.filter((pl.col("status") == "ok") & (pl.col("characters").list.len() == 1)).with_columns(
        pl.col("characters").list.first().alias("character")
    )
    parts = [
        single.select("character", pl.lit(f.key).alias("field"), pl.col(f.key).struct.field("value").alias("value"))
        .filter(pl.col("value") != UNKNOWN)
        .group_by("character", "field", "value")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        for f in profile_fields(ontology)
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=COUNT_SCHEMA)


def merge_counts(a: pl.DataFrame | None, b: pl.DataFrame) -> pl.DataFrame:
    both = b if a is None else pl.concat([a, b])
    return both.group_by("character", "field", "value").agg(pl.col("n").sum())


OTHER = "__other__"


def profiles_as_counts(profiles: pl.DataFrame) -> pl.DataFrame:
    """Existing profiles back to counts (the majority value, and the rest as one 'other' bucket), to merge with new data."""
    return pl.concat(
        [
            profiles.select("character", "field", "value", pl.col("support").alias("n")),
            profiles.filter(pl.col("records") > pl.col("support")).select(
                "character", "field", pl.lit(OTHER).alias("value"), (pl.col("records") - pl.col("support")).alias("n")
            ),
        ]
    ).cast(COUNT_SCHEMA)


def build_profiles(counts: pl.DataFrame) -> pl.DataFrame:
    """Majority value per (character, field) with its support and agreement (ties: alphabetical, deterministic)."""
    if counts.height == 0:
        return pl.DataFrame(schema=PROFILE_SCHEMA)
    return (
        counts.sort(["character", "field", "n", "value"], descending=[False, False, True, False])
        .group_by("character", "field", maintain_order=True)
        .agg(pl.col("value").first(), pl.col("n").first().alias("support"), pl.col("n").sum().alias("records"))
        .with_columns((pl.col("support") / pl.col("records")).round(4).alias("agreement"))
        .select(list(PROFILE_SCHEMA))
    )


def usable(profiles: pl.DataFrame, min_support: int = MIN_SUPPORT, min_agreement: float = MIN_AGREEMENT) -> pl.DataFrame:
    """Profiles trustworthy enough to fill a gap or flag a contradiction."""
    return profiles.filter((pl.col("support") >= min_support) & (pl.col("agreement") >= min_agreement) & (pl.col("value") != OTHER))

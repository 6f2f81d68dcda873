"""Tag vocabulary: canonical Danbooru tag names, their categories and their aliases.

Reads the tagcomplete CSV format (no header: ``tag, category, post_count, aliases``,
aliases comma-joined) and, optionally, a Danbooru alias dump
(``antecedent_name, consequent_name, status``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

CATEGORY_NAMES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}
EMBEDDED_VOCABULARY = Path(__file__).resolve().parent.parent / "data" / "vocabulary.csv"


@dataclass(frozen=True)
class Vocabulary:
    """Canonical tags (``tag, category, post_count``) and an ``alias -> tag`` map."""

    tags: pl.DataFrame
    aliases: pl.DataFrame

    @classmethod
    def from_csv(cls, path: str | Path, aliases_path: str | Path | None = None) -> Vocabulary:
        raw = pl.read_csv(
            path,
            has_header=False,
            new_columns=["tag", "category_code", "post_count", "aliases"],
            schema_overrides={"tag": pl.String, "category_code": pl.Int64, "post_count": pl.Int64, "aliases": pl.String},
            quote_char='"',
            truncate_ragged_lines=True,
        ).filter(pl.col("tag").is_not_null())
        tags = raw.select(
            pl.col("tag").str.to_lowercase(),
            pl.col("category_code").replace_strict(CATEGORY_NAMES, default="general", return_dtype=pl.String).alias("category"),
            pl.col("post_count").fill_null(0),
        ).unique("tag", keep="first")
        # Aliases starting with "/" are autocomplete shortcuts, not spellings of the tag.
        aliases = (
            raw.select("tag", pl.col("aliases").str.split(","))
            .explode("aliases")
            .select(pl.col("aliases").str.strip_chars().str.to_lowercase().alias("alias"), pl.col("tag").str.to_lowercase())
            .filter(pl.col("alias").is_not_null() & (pl.col("alias") != "") & ~pl.col("alias").str.starts_with("/"))
        )
        if aliases_path is not None:
            dump = pl.read_csv(aliases_path, columns=["antecedent_name", "consequent_name", "status"], infer_schema=False)
            aliases = pl.concat(
                [
                    aliases,
                    dump.filter(pl.col("status") == "active").select(
                        pl.col("antecedent_name").str.to_lowercase().alias("alias"),
                        pl.col("consequent_name").str.to_lowercase().alias("tag"),
                    ),
                ]
            )
        # A spelling that is itself a canonical tag is never rewritten.
        aliases = aliases.join(tags.select(pl.col("tag").alias("alias")), on="alias", how="anti").unique("alias", keep="first")
        return cls(tags=tags, aliases=aliases)

    @classmethod
    def embedded(cls) -> Vocabulary:
        """The small vocabulary shipped with the project, enough for the demo data."""
        return cls.from_csv(EMBEDDED_VOCABULARY)

    def __len__(self) -> int:
        return self.tags.height

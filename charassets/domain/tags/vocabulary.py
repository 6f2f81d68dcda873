"""Tag vocabulary: canonical Danbooru tag names, their categories and their aliases.

The embedded default is the full Danbooru tag list (140k tags with categories, post
counts and aliases; MIT, from a1111-sd-webui-tagcomplete, see
``charassets/data/DANBOORU_TAGS_LICENSE.txt``), bundled as zstd Parquet, plus the
project's own rows (``vocabulary.csv``: every tag the ontology and the demo catalogue
use), so the ontology's tags are always known whatever Danbooru calls them.

Reads the tagcomplete CSV format (no header: ``tag, category, post_count, aliases``,
aliases comma-joined) and, optionally, a Danbooru alias dump
(``antecedent_name, consequent_name, status``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import polars as pl

CATEGORY_NAMES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
EMBEDDED_DANBOORU = DATA_DIR / "danbooru_tags.parquet"
EMBEDDED_VOCABULARY = DATA_DIR / "vocabulary.csv"  # the project's own rows (ontology + demo catalogue)
RAW_SCHEMA = {"tag": pl.String, "category_code": pl.Int64, "post_count": pl.Int64, "aliases": pl.String}


def shared_data_dir() -> Path:
    """Where the shared reference data lives: ``$CHARASSETS_SHARED_DATA``, default ``../shared/data`` from the project root."""
    default = Path(__file__).resolve().parents[4] / "shared" / "data"
    return Path(os.environ.get("CHARASSETS_SHARED_DATA", default))


def read_tagcomplete_csv(path: str | Path) -> pl.DataFrame:
    """A tagcomplete CSV as raw rows (``tag, category_code, post_count, aliases``)."""
    return pl.read_csv(
        path,
        has_header=False,
        new_columns=list(RAW_SCHEMA),
        schema_overrides=RAW_SCHEMA,
        quote_char='"',
        truncate_ragged_lines=True,
    ).filter(pl.col("tag").is_not_null())


def bundled_rows(csv_path: str | Path) -> pl.DataFrame:
    """The derived form that is bundled: every row, sorted by tag, types fixed (what ``make vocab`` writes)."""
    return read_tagcomplete_csv(csv_path).sort("tag", maintain_order=True).cast(RAW_SCHEMA)


def write_bundled(csv_path: str | Path, out: str | Path = EMBEDDED_DANBOORU) -> Path:
    """Rewrite the bundled Danbooru vocabulary from the tagcomplete CSV (zstd Parquet, about 1.5 MB)."""
    bundled_rows(csv_path).write_parquet(out, compression="zstd", compression_level=19, statistics=False)
    return Path(out)


@dataclass(frozen=True)
class Vocabulary:
    """Canonical tags (``tag, category, post_count``) and an ``alias -> tag`` map."""

    tags: pl.DataFrame
    aliases: pl.DataFrame
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_rows(cls, raw: pl.DataFrame, aliases_path: str | Path | None = None) -> Vocabulary:
        """From raw tagcomplete rows; the first row of a tag wins (so list the preferred source first)."""
        tags = raw.select(
            pl.col("tag").str.to_lowercase(),
            pl.col("category_code").replace_strict(CATEGORY_NAMES, default="general", return_dtype=pl.String).alias("category"),
            pl.col("post_count").fill_null(0),
        ).unique("tag", keep="first", maintain_order=True)
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
    def from_csv(cls, path: str | Path, aliases_path: str | Path | None = None) -> Vocabulary:
        return cls.from_rows(read_tagcomplete_csv(path), aliases_path)

    @classmethod
    def embedded(cls) -> Vocabulary:
        """The bundled Danbooru vocabulary plus the project's own tags (loaded once per process)."""
        return _embedded()

    def _compact(self, categories: tuple[str, ...]) -> pl.DataFrame:
        """``compact -> tag`` over tags of ``categories`` whose name without separators is unambiguous."""
        chosen = self.tags.filter(pl.col("category").is_in(list(categories))).select("tag")
        spellings = pl.concat(
            [
                chosen.select(pl.col("tag").alias("spelling"), "tag"),
                self.aliases.join(chosen, on="tag", how="semi").select(pl.col("alias").alias("spelling"), "tag"),
            ]
        ).filter(pl.col("spelling").str.contains(r"[_\-]"))
        compact = spellings.select(pl.col("spelling").str.replace_all(r"[_\-]", "").alias("compact"), "tag").unique()
        unique = compact.group_by("compact").agg(pl.col("tag").first(), pl.len().alias("n")).filter(pl.col("n") == 1).drop("n")
        taken = pl.concat([self.tags.select(pl.col("tag").alias("compact")), self.aliases.select(pl.col("alias").alias("compact"))])
        return unique.join(taken, on="compact", how="anti")

    @cached_property
    def compact_index(self) -> pl.DataFrame:
        """``compact -> tag`` for general tags whose name without separators is unambiguous (``shorthair`` -> ``short_hair``).

        Canonical tags and aliases both count; a compact form two different tags share
        (or that is itself a tag) maps to nothing, so a run-together spelling is only ever
        resolved when exactly one tag fits. Only general tags: a run-together word could be
        anyone's name.
        """
        return self._compact(("general",))

    @cached_property
    def separated_index(self) -> pl.DataFrame:
        """Like ``compact_index``, for spellings that do keep separators but swap them
        (``oda-nobunaga-(koha-ace)`` for ``oda_nobunaga_(koha-ace)``): every category but artists'."""
        return self._compact(("general", "character", "copyright", "meta"))

    @cached_property
    def spellings(self) -> pl.DataFrame:
        """``tag -> target``: every canonical tag (to itself) and every alias (to its tag)."""
        return pl.concat(
            [
                self.tags.select("tag", pl.col("tag").alias("target")),
                self.aliases.select(pl.col("alias").alias("tag"), pl.col("tag").alias("target")),
            ]
        )

    @cached_property
    def names_with_colon(self) -> frozenset[str]:
        """Tags and aliases containing a colon (``code:002``): names, never prompt weights."""
        return frozenset(self.spellings.filter(pl.col("tag").str.contains(":")).get_column("tag").to_list())

    @cached_property
    def digest(self) -> str:
        """A fingerprint of the tags and their post counts (what pooling weights depend on)."""
        rows = self.tags.select("tag", "post_count").sort("tag").hash_rows(seed=0).to_numpy().tobytes()
        return hashlib.blake2b(rows, digest_size=8).hexdigest()

    def __len__(self) -> int:
        return self.tags.height


@cache
def _embedded() -> Vocabulary:
    project = read_tagcomplete_csv(EMBEDDED_VOCABULARY)
    danbooru = pl.read_parquet(EMBEDDED_DANBOORU) if EMBEDDED_DANBOORU.exists() else project.clear()
    return Vocabulary.from_rows(pl.concat([danbooru.cast(RAW_SCHEMA), project.cast(RAW_SCHEMA)]))

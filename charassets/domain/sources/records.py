"""The raw record and reject schemas, and the checks every format's rows go through.

A reader turns each row into a record or a reject with its reason (``frames_from_objects``
for readers that yield one Python object per row); ``validate_records`` then gives every
record its ``record_id`` and quarantines those without id, without tags, too long or repeated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import polars as pl

from charassets.domain.sources.chunks import Chunk, file_digest

if TYPE_CHECKING:
    from charassets.domain.sources.config import ColumnMapping, SourceSpec

MAX_TAG_CHARS = 32_768
EXCERPT_CHARS = 200
TAG_FIELDS = ("tags", "general", "character", "copyright", "artist", "meta")
EMBEDDED = "embedded"  # image_ref of an image whose bytes are in the source table itself

# where a row came from: every raw record and every reject carries these
_ORIGIN = {
    "record_id": pl.String,
    "source_id": pl.String,
    "source": pl.String,
    "partition": pl.String,
    "file": pl.String,
    "row_index": pl.Int64,
}
RAW_SCHEMA = {**_ORIGIN, **{f"{f}_raw": pl.String for f in TAG_FIELDS}, "rating": pl.String, "image_ref": pl.String}
REJECT_SCHEMA = {**_ORIGIN, "reason": pl.String, "raw_excerpt": pl.String}


def frames_from_objects(
    objs: Iterable[tuple[int, Any, str]], spec: SourceSpec, chunk: Chunk, excerpt_is_id: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records and rejects of ``(row index, object or the Exception saying why there is none, excerpt)`` rows.

    Nothing in a row's content can fail the chunk. ``excerpt_is_id``: the excerpt is the
    row's id, known even when the rest of the row is unreadable (an image's path).
    """
    good: list[dict] = []
    bad: list[dict] = []
    m, sep = spec.mapping, spec.tag_separator
    for row_index, obj, excerpt in objs:
        base = {"source": spec.name, "partition": chunk.partition, "file": chunk.file, "row_index": row_index}
        excerpt = excerpt.encode("utf-8", "replace").decode("utf-8")
        if excerpt_is_id:
            base["source_id"] = excerpt
        try:
            _one_row(obj, excerpt, base, m, sep, good, bad)
        except Exception as e:  # noqa: BLE001 - whatever a row holds, it becomes a reject, never a failed run
            bad.append(
                {**base, "source_id": None, "reason": f"unreadable row: {type(e).__name__}: {e}", "raw_excerpt": excerpt[:EXCERPT_CHARS]}
            )
    return pl.DataFrame(good, schema=RAW_SCHEMA), pl.DataFrame(bad, schema=REJECT_SCHEMA)


def _one_row(obj: Any, excerpt: str, base: dict, m: ColumnMapping, sep: str, good: list[dict], bad: list[dict]) -> None:
    """One row: appended to ``good`` as a record, or to ``bad`` with the reason."""
    if isinstance(obj, Exception):
        bad.append({**base, "reason": str(obj), "raw_excerpt": excerpt[:EXCERPT_CHARS]})
        return
    if not isinstance(obj, dict):
        bad.append({**base, "reason": f"row is a JSON {type(obj).__name__}, expected an object", "raw_excerpt": excerpt[:EXCERPT_CHARS]})
        return
    rec: dict[str, Any] = dict(base)
    errors = []
    if m.id:
        sid = obj.get(m.id)
        rec["source_id"] = None if sid is None or isinstance(sid, dict | list) else str(sid)
    for f, col in m.tag_columns().items():
        text, err = _as_text(obj.get(col), sep)
        rec[f"{f}_raw"] = text
        if err:
            errors.append(f"field {col!r} {err}")
    for key, col in (("rating", m.rating), ("image_ref", m.image)):
        if col and obj.get(col) is not None:
            rec[key] = str(obj.get(col))
    if (field := _unencodable(rec)) is not None:
        errors.append(f"field {field!r} is not valid Unicode (a lone surrogate)")
        rec["source_id"] = None if field == "source_id" else rec.get("source_id")
    if errors:
        bad.append({**base, "source_id": rec.get("source_id"), "reason": "; ".join(errors), "raw_excerpt": excerpt[:EXCERPT_CHARS]})
    else:
        good.append(rec)


def _as_text(value: Any, separator: str) -> tuple[str | None, str | None]:
    """A field value as text, or an error when its type makes no sense."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return separator.join(value), None
    return None, f"is of type {type(value).__name__}, expected text"


def _unencodable(rec: dict[str, Any]) -> str | None:
    """The first text field that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` from JSON), if any."""
    for k, v in rec.items():
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return k
    return None


def validate_records(df: pl.DataFrame, spec: SourceSpec, chunk: Chunk) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each row a stable ``record_id``; quarantine rows without id, without tags (or an image to decode), too long, or repeated."""
    df = df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c) for c, t in RAW_SCHEMA.items()])
    tag_cols = [f"{f}_raw" for f in spec.mapping.tag_columns()]
    sep = spec.tag_separator
    # no tag column at all (an image-only table): every row is blank of tags, and lives by its image
    blank = pl.all_horizontal(
        pl.lit(True),
        *(pl.col(c).fill_null("").str.replace_all(f"[\\s{'' if sep.strip() == '' else sep}]+", "").str.len_chars() == 0 for c in tag_cols),
    )
    if spec.decodes_images:  # an image is a record on its own; its tags are optional
        blank = blank & pl.col("image_ref").is_null()
    too_long = pl.any_horizontal(pl.lit(False), *(pl.col(c).fill_null("").str.len_chars() > MAX_TAG_CHARS for c in tag_cols))
    if spec.mapping.id:
        sid = pl.col("source_id").str.strip_chars()
        missing_id = sid.is_null() | (sid == "")
        record_id = pl.lit(f"{spec.name}:") + sid
    else:
        missing_id = pl.lit(False)
        digest = file_digest(chunk.file.rsplit("/", 1)[-1])
        record_id = pl.lit(f"{spec.name}:{digest}:") + pl.col("row_index").cast(pl.String)
    df = df.with_columns(record_id.alias("record_id"))
    first_row = pl.col("row_index").min().over("record_id")
    reason = (
        pl.when(missing_id)
        .then(pl.lit(f"missing id (column {spec.mapping.id!r})"))
        .when(blank)
        .then(pl.lit("no tags and no image" if spec.decodes_images else "no tags"))
        .when(too_long)
        .then(pl.lit(f"tag string longer than {MAX_TAG_CHARS} characters"))
        .when(pl.col("row_index") != first_row)
        .then(pl.lit("duplicate id (first seen at row ") + first_row.cast(pl.String) + pl.lit(")"))
    )
    df = df.with_columns(reason.alias("_reason"))
    rejects = df.filter(pl.col("_reason").is_not_null()).select(
        pl.when(missing_id).then(None).otherwise(pl.col("record_id")).alias("record_id"),
        "source_id",
        "source",
        "partition",
        "file",
        "row_index",
        pl.col("_reason").alias("reason"),
        (pl.concat_str([pl.col(c).fill_null("") for c in tag_cols], separator=" | ") if tag_cols else pl.col("image_ref").fill_null(""))
        .str.slice(0, EXCERPT_CHARS)
        .alias("raw_excerpt"),
    )
    return df.filter(pl.col("_reason").is_null()).drop("_reason"), rejects

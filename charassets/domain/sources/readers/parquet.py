"""Parquet (``.parquet``, and any file whose suffix names no other format): columns read and cast by Polars."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import fsspec
import polars as pl
import pyarrow.parquet as pq

from charassets.domain.sources.chunks import UNREADABLE, Chunk, Cuts, SourceError
from charassets.domain.sources.files import list_table_files
from charassets.domain.sources.records import EMBEDDED, RAW_SCHEMA, REJECT_SCHEMA

if TYPE_CHECKING:
    from charassets.domain.sources.config import SourceSpec


def parquet_identity(f: Any, size: int) -> str:
    """Size plus a hash of the footer (schema, row groups, offsets and statistics): changes when the content does."""
    f.seek(max(0, size - 65_536))
    return f"{size}:{hashlib.blake2b(f.read(), digest_size=8).hexdigest()}"


def _cut(spec: SourceSpec, uri: str) -> Cuts:
    fs, path = fsspec.core.url_to_fs(uri)
    size = fs.size(path)
    with fsspec.open(uri, "rb") as f:
        identity = parquet_identity(f, size)
        try:
            f.seek(0)
            n = pq.ParquetFile(f).metadata.num_rows
        except Exception:  # noqa: BLE001 - not a Parquet file (truncated, corrupt): one row, quarantined with the reason
            return Cuts(identity, size, [(0, size, 0, 1)], format=UNREADABLE)
    step = spec.rows_per_partition
    return Cuts(identity, size, [(0, size, s, min(step, n - s)) for s in range(0, n, step)])


def _image_column(lf: pl.LazyFrame, col: str, dtype: Any) -> pl.LazyFrame:
    """Bytes in the table: the reference says so (``EMBEDDED``); a path or URL stays as it is."""
    if dtype == pl.Binary:
        return lf.with_columns(pl.when(pl.col(col).is_not_null()).then(pl.lit(EMBEDDED)).alias(col))
    fields = [f.name for f in dtype.fields] if isinstance(dtype, pl.Struct) else []
    if "bytes" in fields:  # a Hugging Face Image column: {bytes, path}
        path = pl.col(col).struct.field("path") if "path" in fields else pl.lit(None, dtype=pl.String)
        return lf.with_columns(pl.when(pl.col(col).struct.field("bytes").is_not_null()).then(pl.lit(EMBEDDED)).otherwise(path).alias(col))
    return lf


def _read(chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    m = spec.mapping
    wanted = {"source_id": m.id, **{f"{f}_raw": c for f, c in m.tag_columns().items()}, "rating": m.rating, "image_ref": m.image}
    lf = pl.scan_parquet(chunk.file)
    schema = lf.collect_schema()
    if m.image and m.image in schema:
        lf = _image_column(lf, m.image, schema[m.image])
        schema = lf.collect_schema()
    missing = [c for k, c in wanted.items() if c and c not in schema and k not in ("rating", "image_ref")]
    if missing:
        raise SourceError(f"source {spec.name!r}: columns {missing} not in {chunk.file} (has {list(schema)})")
    exprs, type_errors = [], []
    for key, col in wanted.items():
        if not col or col not in schema:
            exprs.append(pl.lit(None, dtype=pl.String).alias(key))
            continue
        dtype = schema[col]
        if dtype == pl.String:
            exprs.append(pl.col(col).alias(key))
        elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
            exprs.append(pl.col(col).list.join(spec.tag_separator).alias(key))
        elif key in ("source_id", "rating") or dtype.is_numeric():
            if key.endswith("_raw"):
                type_errors.append(f"field {col!r} is {dtype}, expected text")
                exprs.append(pl.lit(None, dtype=pl.String).alias(key))
            else:
                exprs.append(pl.col(col).cast(pl.String).alias(key))
        else:
            exprs.append(pl.col(col).cast(pl.String, strict=False).alias(key))
    df = lf.slice(chunk.row_start, chunk.row_count).select(exprs).collect()
    df = df.with_columns(
        pl.lit(spec.name).alias("source"),
        pl.lit(chunk.partition).alias("partition"),
        pl.lit(chunk.file).alias("file"),
        pl.int_range(chunk.row_start, chunk.row_start + df.height, dtype=pl.Int64).alias("row_index"),
    )
    if type_errors:  # a whole column of the wrong type: every row is quarantined with the reason
        rejects = df.select(
            pl.lit(None, dtype=pl.String).alias("record_id"),
            "source_id",
            "source",
            "partition",
            "file",
            "row_index",
            pl.lit("; ".join(type_errors)).alias("reason"),
            pl.lit("").alias("raw_excerpt"),
        )
        return pl.DataFrame(schema=RAW_SCHEMA), rejects
    return df, pl.DataFrame(schema=REJECT_SCHEMA)


class ParquetReader:
    """A ``SourceReader`` for Parquet: a file is cut by row counts from its footer; a file that is not Parquet is one quarantined row."""

    description = "a Parquet file"
    suffixes = (".parquet",)
    layout = None
    decodes_images = False
    list_files = staticmethod(list_table_files)

    def cut(self, spec: SourceSpec, uri: str) -> Cuts:
        return _cut(spec, uri)

    def read(self, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
        return _read(chunk, spec)

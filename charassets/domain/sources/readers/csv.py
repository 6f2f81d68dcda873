"""CSV (``.csv``): a header row, then one record per row; quoted fields may span lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fsspec

from charassets.domain.sources.files import list_table_files
from charassets.domain.sources.lines import chunk_records, csv_line_state, cut_lines, split_records
from charassets.domain.sources.records import EXCERPT_CHARS, frames_from_objects

if TYPE_CHECKING:
    import polars as pl

    from charassets.domain.sources.chunks import Chunk, Cuts
    from charassets.domain.sources.config import SourceSpec

csv.field_size_limit(2**31 - 1)  # a huge field is quarantined as too long, not a crash of the reader


def csv_fields(record: bytes) -> list[str] | ValueError:
    """One CSV record's fields, or the reason it cannot be read."""
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        return ValueError("row is not valid UTF-8")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        return ValueError(f"invalid CSV: {e}")
    if len(rows) != 1:  # the splitter gives one record; a bare carriage return can still end a line for the reader
        return ValueError(f"invalid CSV: the row reads as {len(rows)} rows")
    if csv_line_state(record, False):
        return ValueError("invalid CSV: a quoted field is never closed")
    return rows[0]


def _objects(chunk: Chunk) -> Iterator[tuple[int, Any, str]]:
    with fsspec.open(chunk.file, "rb") as f:
        header_record = next((r for _, r in split_records(iter(f), csv_quotes=True)), b"")
    header = csv_fields(header_record.decode("utf-8-sig", "replace").encode())
    if isinstance(header, ValueError):
        raise ValueError(f"{chunk.file}: the header row cannot be read ({header})")
    for row, record in enumerate(chunk_records(chunk, csv_quotes=True), chunk.row_start):
        fields = csv_fields(record)
        obj: Any
        if isinstance(fields, ValueError):
            obj = fields
        elif len(fields) != len(header):
            obj = ValueError(f"expected {len(header)} fields, got {len(fields)}")
        else:
            obj = dict(zip(header, fields, strict=True))
        yield row, obj, record[:EXCERPT_CHARS].decode("utf-8", "replace")


class CsvReader:
    """A ``SourceReader`` for CSV."""

    description = "a CSV file"
    suffixes = (".csv",)
    layout = None
    decodes_images = False
    list_files = staticmethod(list_table_files)

    def cut(self, spec: SourceSpec, uri: str) -> Cuts:
        return cut_lines(spec, uri, csv_quotes=True)

    def read(self, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
        return frames_from_objects(_objects(chunk), spec, chunk)

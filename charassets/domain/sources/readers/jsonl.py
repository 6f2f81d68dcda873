"""JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from charassets.domain.sources.files import list_table_files
from charassets.domain.sources.lines import chunk_records, cut_lines
from charassets.domain.sources.records import EXCERPT_CHARS, frames_from_objects

if TYPE_CHECKING:
    import polars as pl

    from charassets.domain.sources.chunks import Chunk, Cuts
    from charassets.domain.sources.config import SourceSpec


def json_object(line: bytes) -> Any:
    """One JSONL row as an object, or the reason it is not one (never raises for the content of the row)."""
    try:
        return json.loads(line)
    except UnicodeDecodeError:
        return ValueError("row is not valid UTF-8")
    except json.JSONDecodeError as e:
        return ValueError(f"invalid JSON: {e.msg} at column {e.colno}")
    except RecursionError:
        return ValueError("invalid JSON: nested too deeply")
    except ValueError as e:  # e.g. an integer with too many digits
        return ValueError(f"invalid JSON: {e}")


def _objects(chunk: Chunk) -> Iterator[tuple[int, Any, str]]:
    for row, line in enumerate(chunk_records(chunk, csv_quotes=False), chunk.row_start):
        yield row, json_object(line), line[:EXCERPT_CHARS].decode("utf-8", "replace")


class JsonlReader:
    """A ``SourceReader`` for JSON Lines."""

    description = "a JSON Lines file"
    suffixes = (".jsonl", ".ndjson", ".json")
    layout = None
    decodes_images = False
    list_files = staticmethod(list_table_files)

    def cut(self, spec: SourceSpec, uri: str) -> Cuts:
        return cut_lines(spec, uri, csv_quotes=False)

    def read(self, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
        return frames_from_objects(_objects(chunk), spec, chunk)

"""The plug-in point for source formats: the ``SourceReader`` protocol and ``READERS``, the formats by their name in the config.

Adding a format is one module here (a class with the protocol's members) and one line in
``READERS``; the config then accepts its name, and a file with one of its suffixes is
read with it when a source names no format.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from charassets.domain.sources.chunks import SourceError
from charassets.domain.sources.readers.csv import CsvReader
from charassets.domain.sources.readers.images import ImageFolderReader
from charassets.domain.sources.readers.jsonl import JsonlReader
from charassets.domain.sources.readers.parquet import ParquetReader

if TYPE_CHECKING:
    import polars as pl

    from charassets.domain.sources.chunks import Chunk, Cuts
    from charassets.domain.sources.config import SourceSpec


@runtime_checkable
class SourceReader(Protocol):
    """What a source format provides: how a source of it is listed, how one file is cut into chunks, how a chunk is read."""

    description: str  # what one of its files is, for messages: "a CSV file", "an image folder"
    suffixes: tuple[str, ...]  # file suffixes that mean this format when a source names none
    layout: tuple[dict[str, str], str] | None  # (column mapping, tag separator) of records of one fixed shape; None: mapped per source
    decodes_images: bool  # its records' images are always decoded (as ``images: true``)

    def list_files(self, spec: SourceSpec, suffixes: Collection[str]) -> list[tuple[str, str]]:
        """``(uri, relative name)`` of each file (or folder) of the source, sorted; ``suffixes``: every registered format's."""
        ...

    def cut(self, spec: SourceSpec, uri: str) -> Cuts:
        """One file cut into chunks of at most ``spec.rows_per_partition`` rows, with the identity of its content."""
        ...

    def read(self, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
        """A chunk's rows as raw records (``RAW_SCHEMA``) or rejects with their reason (``REJECT_SCHEMA``): one per registered row.

        Raises ``SourceError`` for a fault of the configuration; any other exception
        (content it cannot parse at all) quarantines every row of the chunk.
        """
        ...


READERS: dict[str, SourceReader] = {
    "parquet": ParquetReader(),
    "jsonl": JsonlReader(),
    "csv": CsvReader(),
    "images": ImageFolderReader(),
}
DEFAULT_FORMAT = "parquet"  # a file whose suffix names no format


def reader(name: str) -> SourceReader:
    """The reader of a format, or an error naming the registered ones."""
    try:
        return READERS[name]
    except KeyError:
        raise SourceError(f"unknown source format {name!r}: the registered formats are {', '.join(sorted(READERS))}") from None


def known_suffixes() -> set[str]:
    """Every registered format's file suffixes: those a folder source is searched for."""
    return {s for r in READERS.values() for s in r.suffixes}


def format_of_suffix(suffix: str) -> str:
    """The format a file's (lower-case) suffix says; ``DEFAULT_FORMAT`` when none does."""
    return next((name for name, r in READERS.items() if suffix in r.suffixes), DEFAULT_FORMAT)

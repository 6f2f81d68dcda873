"""The chunk registry's vocabulary: a registry row (``Chunk``), how a reader cuts a file (``Cuts``), partition keys, errors.

A chunk is one partition of a source: at most ``rows_per_partition`` records of one file
(or image folder), with the stable key ``<source>-<file digest>-<chunk>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import polars as pl

REGISTRY_SCHEMA = {
    "partition": pl.String,
    "source": pl.String,
    "file": pl.String,
    "format": pl.String,
    "chunk": pl.Int32,
    "row_start": pl.Int64,
    "row_count": pl.Int64,
    "byte_start": pl.Int64,
    "byte_end": pl.Int64,
    "file_bytes": pl.Int64,
}
UNREADABLE = "unreadable"  # the format of the one chunk of a file that could not be read when it was registered


class SourceError(ValueError):
    """A fault of the configuration or of the registered files, not of a row's content: the run fails with it."""


class SourceChanged(SourceError):
    """A registered file or folder changed on disk since it was registered."""


@dataclass(frozen=True)
class Chunk:
    """One registry row: where a partition's records live."""

    partition: str
    source: str
    file: str
    format: str
    row_start: int
    row_count: int
    byte_start: int
    byte_end: int
    file_bytes: int | None = None  # size of the file (of the folder's images) when it was registered

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Chunk:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class Cuts:
    """How a reader cut one file (or folder) into chunks."""

    identity: str  # the content's identity: part of every partition key, so a file replaced under its name is new partitions
    file_bytes: int  # the size registered with each chunk
    bounds: list[tuple[int, int, int, int]]  # per chunk: (byte_start, byte_end, row_start, rows)
    format: str | None = None  # the chunks' format when not the reader's own (``UNREADABLE``)


def file_digest(relative_name: str, content: str = "") -> str:
    return hashlib.sha1(f"{relative_name}|{content}".encode() if content else relative_name.encode()).hexdigest()[:8]


def partition_key(source: str, relative_name: str, chunk: int, content: str = "") -> str:
    """``<source>-<digest of the file's name and content identity>-<chunk>``: a file replaced under the same name is a new partition."""
    return f"{source}-{file_digest(relative_name, content)}-{chunk:04d}"

"""Sources of records: declared in config, listed, cut into chunks, read safely.

A source is a path or URI (local, ``hf://datasets/...``, ``s3://...``: anything fsspec
opens) to Parquet, JSONL or CSV files, plus a column mapping; or (``format: images``) a
folder tree of images, each optionally with a sidecar ``.txt`` of comma-separated tags
(the kohya training-set layout), one record per image. A table source whose image column
holds bytes (a Hugging Face ``Image`` column), a relative path or a URL sets
``images: true`` to have its images decoded. Registering a source cuts
each file into chunks of at most ``rows_per_partition`` records; each chunk is one
partition with a stable key ``<source>-<file digest>-<chunk>``. Registering again only
adds chunks for new files (or rows appended to a line-based file).

Reading a chunk never fails on bad rows: each row either becomes a record or a reject
with a reason, so rows in = records + rejects.

Modules: ``config`` (the sources file), ``chunks`` (a registry row, keys, errors),
``registry`` (``register``, ``read_chunk``), ``records`` (raw schemas, row checks),
``files`` and ``lines`` (listing; the line-based splitter), and ``readers``: one module
per format behind the ``SourceReader`` protocol, registered in ``READERS``.
"""

from charassets.domain.sources.chunks import Chunk, Cuts, SourceChanged, SourceError, file_digest, partition_key
from charassets.domain.sources.config import IMAGE_ROWS_PER_PARTITION, LAYOUTS, MAX_PARTITION_ROWS, ColumnMapping, SourcesConfig, SourceSpec
from charassets.domain.sources.readers import READERS, SourceReader
from charassets.domain.sources.readers.images import IMAGE_SUFFIXES, folder_listing
from charassets.domain.sources.records import (
    EMBEDDED,
    EXCERPT_CHARS,
    MAX_TAG_CHARS,
    RAW_SCHEMA,
    REJECT_SCHEMA,
    TAG_FIELDS,
    validate_records,
)
from charassets.domain.sources.registry import REGISTRY_SCHEMA, list_files, read_chunk, register

__all__ = [
    "EMBEDDED",
    "EXCERPT_CHARS",
    "IMAGE_ROWS_PER_PARTITION",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "MAX_PARTITION_ROWS",
    "MAX_TAG_CHARS",
    "RAW_SCHEMA",
    "READERS",
    "REGISTRY_SCHEMA",
    "REJECT_SCHEMA",
    "TAG_FIELDS",
    "Chunk",
    "ColumnMapping",
    "Cuts",
    "SourceChanged",
    "SourceError",
    "SourceReader",
    "SourceSpec",
    "SourcesConfig",
    "file_digest",
    "folder_listing",
    "list_files",
    "partition_key",
    "read_chunk",
    "register",
    "validate_records",
]

"""The chunk registry: a source's files listed and cut into chunks (``register``), and a chunk read back (``read_chunk``).

Both go through the source's reader in ``READERS``. Reading a chunk never fails on bad
rows: each row either becomes a record or a reject with a reason, so rows in = records + rejects.
"""

from __future__ import annotations

import polars as pl

from charassets.domain.sources.chunks import REGISTRY_SCHEMA, UNREADABLE, Chunk, SourceError, partition_key
from charassets.domain.sources.config import SourceSpec
from charassets.domain.sources.files import list_table_files
from charassets.domain.sources.readers import known_suffixes, reader
from charassets.domain.sources.records import RAW_SCHEMA, REJECT_SCHEMA, validate_records


def list_files(spec: SourceSpec) -> list[tuple[str, str]]:
    """``(uri, relative name)`` of each data file of a source, sorted (for an image folder: each folder holding images)."""
    lister = reader(spec.format).list_files if spec.format else list_table_files
    return lister(spec, known_suffixes())


def register(spec: SourceSpec) -> pl.DataFrame:
    """Chunks of every file of a source, as registry rows (one per partition)."""
    rows = []
    for uri, rel in list_files(spec):
        fmt = spec.format_of(uri)
        cuts = reader(fmt).cut(spec, uri)
        for i, (b0, b1, r0, n_rows) in enumerate(cuts.bounds):
            key = partition_key(spec.name, rel, i, cuts.identity)
            rows.append((key, spec.name, uri, cuts.format or fmt, i, r0, n_rows, b0, b1, cuts.file_bytes))
    return pl.DataFrame(rows, schema=REGISTRY_SCHEMA, orient="row")


def read_chunk(chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records and rejects of one chunk; ``records.height + rejects.height == chunk.row_count``.

    Whatever the content does to a reader (a corrupt Parquet page, a file that is not
    Parquet at all), the chunk's rows come back as rejects with the reason; only a fault
    of the system (the file gone or unreachable, the configuration) fails the run.
    """
    try:
        records, rejects = _read_chunk(chunk, spec)
    except (FileNotFoundError, PermissionError, ConnectionError, TimeoutError, SourceError):
        raise  # the file gone or unreachable, or the configuration wrong: a fault of the system
    # (other OSErrors come from readers on corrupt content: pyarrow raises "Couldn't deserialize thrift" as one)
    except Exception as e:  # noqa: BLE001 - content the reader cannot parse: every row of the chunk, quarantined
        reason = f"unreadable {chunk.format} chunk: {type(e).__name__}: {str(e)[:300]}"
        rows = [
            {
                "record_id": None,
                "source_id": None,
                "source": spec.name,
                "partition": chunk.partition,
                "file": chunk.file,
                "row_index": i,
                "reason": reason,
                "raw_excerpt": "",
            }
            for i in range(chunk.row_start, chunk.row_start + chunk.row_count)
        ]
        no_records = validate_records(pl.DataFrame(schema=RAW_SCHEMA), spec, chunk)[0]
        return no_records, pl.DataFrame(rows, schema=REJECT_SCHEMA)
    if records.height + rejects.height != chunk.row_count:  # the registry and the reader disagree: a fault of the system
        raise RuntimeError(
            f"{chunk.partition}: registered with {chunk.row_count} rows, read {records.height + rejects.height}: re-register the source"
        )
    return records, rejects


def _read_chunk(chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    if chunk.format == UNREADABLE:
        raise ValueError("the file could not be read when it was registered")
    records, rejects = reader(chunk.format).read(chunk, spec)
    records, more = validate_records(records, spec, chunk)
    return records, pl.concat([rejects, more]).select(list(REJECT_SCHEMA))

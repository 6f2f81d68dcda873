"""Line-based files (JSONL, CSV): the one record splitter that both cuts a file into chunks and reads a chunk back.

A JSONL record is a line; a CSV record ends at a newline outside a quoted field. Because
the chunk cutter and the readers use this one splitter, the rows a chunk is registered
with are, by construction, the rows its reader yields.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fsspec

from charassets.domain.sources.chunks import Chunk, Cuts

if TYPE_CHECKING:
    from charassets.domain.sources.config import SourceSpec


def csv_line_state(line: bytes, in_quotes: bool) -> bool:
    """Whether a CSV record is still inside a quoted field at the end of ``line``.

    The CSV grammar, as Python's reader applies it: a quote opens a quoted field only at
    the start of a field (``4,1girl "smile`` has no quoted field); inside one, ``""`` is a
    quote and a lone ``"`` closes it. Linear in the line's length.
    """
    i, n, field_start = 0, len(line), not in_quotes
    while i < n:
        if in_quotes:
            j = line.find(b'"', i)
            if j < 0:
                return True
            if j + 1 < n and line[j + 1] == 0x22:
                i = j + 2
                continue
            in_quotes, field_start, i = False, False, j + 1
        elif field_start and line[i] == 0x22:
            in_quotes, field_start, i = True, False, i + 1
        else:
            j = line.find(b",", i)
            if j < 0:
                return False
            i, field_start = j + 1, True
    return in_quotes


def split_records(lines: Iterator[bytes], csv_quotes: bool) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, record bytes)`` of each record of a line-based file, blank lines included."""
    offset, start, parts, in_quotes = 0, 0, [], False
    for line in lines:
        if not parts:
            start = offset
        offset += len(line)
        if csv_quotes and (in_quotes or b'"' in line):
            in_quotes = csv_line_state(line, in_quotes)
        parts.append(line)
        if not in_quotes:
            yield start, b"".join(parts) if len(parts) > 1 else parts[0]
            parts = []
    if parts:  # a quote never closed: the record it opened is bad, and the lines after it are records again
        yield start, parts[0]
        offset = start + len(parts[0])
        for rel, record in split_records(iter(parts[1:]), csv_quotes):
            yield offset + rel, record


def line_boundaries(f: Any, rows_per_chunk: int, csv_quotes: bool, hasher: Any = None) -> list[tuple[int, int, int, int]]:
    """Cut a line-based file into chunks of whole records: ``(byte_start, byte_end, row_start, rows)``.

    Blank records are not rows. For CSV the header record is skipped. ``hasher`` (a
    hashlib object), when given, sees every byte: the file's content identity in the same pass.
    """
    chunks, start, rows_in_chunk, row, end = [], None, 0, 0, 0
    header_pending = csv_quotes
    for offset, record in split_records(iter(f), csv_quotes):
        if hasher is not None:
            hasher.update(record)
        end = offset + len(record)
        if header_pending:
            header_pending = False
            continue
        if not record.strip():
            continue
        if start is None:
            start = offset
        rows_in_chunk += 1
        if rows_in_chunk == rows_per_chunk:
            chunks.append((start, end, row, rows_in_chunk))
            row += rows_in_chunk
            start, rows_in_chunk = None, 0
    if rows_in_chunk:
        chunks.append((start or 0, end, row, rows_in_chunk))
    return chunks


def cut_lines(spec: SourceSpec, uri: str, csv_quotes: bool) -> Cuts:
    """A line-based file in chunks of whole records; its identity is its size and a hash of every byte."""
    fs, path = fsspec.core.url_to_fs(uri)
    size = fs.size(path)
    hasher = hashlib.blake2b(digest_size=8)
    with fsspec.open(uri, "rb") as f:
        bounds = line_boundaries(f, spec.rows_per_partition, csv_quotes, hasher)
    return Cuts(f"{size}:{hasher.hexdigest()}", size, bounds)


def chunk_records(chunk: Chunk, csv_quotes: bool) -> Iterator[bytes]:
    """The records of a chunk's byte range, blank ones skipped: one per registered row."""
    with fsspec.open(chunk.file, "rb") as f:
        f.seek(chunk.byte_start)
        data = f.read(chunk.byte_end - chunk.byte_start)
    for _, record in split_records(iter(io.BytesIO(data)), csv_quotes):
        if record.strip():
            yield record

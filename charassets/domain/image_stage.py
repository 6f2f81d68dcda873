"""The image path as plain functions: image bytes of a chunk's records, decoded images, image signals.

raw records --images_stage--> raw/images (+ raw/image_rejects) --signals_stage--> features/image_signals

Every record that references an image ends in exactly one of ``raw/images`` and
``raw/image_rejects`` (with the reason): images in = decoded + quarantined. Bytes are read
a few at a time, so memory is bounded by a batch whatever the partition size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import fsspec
import polars as pl

from charassets.domain.images import ImageRejected, confine, decode_image
from charassets.domain.sources import EMBEDDED, Chunk, SourceSpec

MAX_IMAGE_BYTES = 64 * 2**20
READ_BATCH = 64

IMAGE_SCHEMA = {
    "record_id": pl.String,
    "partition": pl.String,
    "row_index": pl.Int64,
    "image_ref": pl.String,
    "file_bytes": pl.Int64,
    "width": pl.Int32,
    "height": pl.Int32,
    "format": pl.String,
    "mode": pl.String,
    "frames": pl.Int32,
    "sha256": pl.String,
    "phash": pl.String,
    "thumbnail": pl.Binary,  # WebP, longest side 256: for embeddings, previews and the app
}
IMAGE_REJECT_SCHEMA = {
    "record_id": pl.String,
    "partition": pl.String,
    "row_index": pl.Int64,
    "image_ref": pl.String,
    "reason": pl.String,
}
SIGNAL_SCHEMA = {
    "record_id": pl.String,
    "partition": pl.String,
    "backend": pl.String,
    "status": pl.String,  # ok (one face) | ambiguous (several, or none) | unreadable
    "faces": pl.Int32,
    "face_boxes": pl.List(pl.List(pl.Int32)),  # x, y, width, height per face
    "flags": pl.List(pl.String),
    "attributes": pl.String,  # JSON: field key -> {value, confidence, evidence, source}
}


def read_ref(ref: str, root: str) -> bytes:
    """Bytes of an image reference: a URL as it is, a relative path inside ``root`` (never outside it)."""
    if "://" in ref:
        with fsspec.open(ref, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    elif "://" not in root:
        path = confine(root, ref)
        if not path.is_file():
            raise ImageRejected(f"file not found: {ref}")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageRejected(f"file larger than {MAX_IMAGE_BYTES:,} bytes: {ref}")
        data = path.read_bytes()
    else:
        parts = PurePosixPath(ref).parts
        if PurePosixPath(ref).is_absolute() or ".." in parts:
            raise ImageRejected(f"path escapes the source root: {ref}")
        with fsspec.open(f"{root.rstrip('/')}/{ref}", "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(f"file larger than {MAX_IMAGE_BYTES:,} bytes: {ref}")
    return data


def _embedded_bytes(chunk: Chunk, spec: SourceSpec) -> Iterator[tuple[int, bytes | None]]:
    """``(row index, bytes)`` of the chunk's rows from a Parquet image column (binary, or a struct with ``bytes``).

    One pass, ``READ_BATCH`` rows at a time, over the row groups that hold the chunk: each
    row group's image data is read once, however the chunk's rows fall into batches.
    """
    import pyarrow.parquet as pq

    col, lo, hi = spec.mapping.image, chunk.row_start, chunk.row_start + chunk.row_count
    with fsspec.open(chunk.file, "rb") as f:
        pf = pq.ParquetFile(f)
        groups, first, start = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if start < hi and start + n > lo:
                groups.append(g)
                first = start if first is None else first
            start += n
        row = first or 0
        for batch in pf.iter_batches(batch_size=READ_BATCH, row_groups=groups, columns=[col]):
            values = batch.column(0)
            if hasattr(values, "field"):  # a struct column: its bytes field
                values = values.field("bytes")
            for value in values.to_pylist():
                if lo <= row < hi:
                    yield row, value
                row += 1


def image_payloads(records: pl.DataFrame, chunk: Chunk, spec: SourceSpec) -> Iterator[tuple[dict[str, Any], bytes | ImageRejected]]:
    """Each record with an ``image_ref`` (in row order), and its bytes or the reason they cannot be had."""
    # a folder source's paths are under its root; a table's relative paths under the table file's folder
    root = spec.uri if spec.format == "images" else chunk.file.rsplit("/", 1)[0]
    rows = records.filter(pl.col("image_ref").is_not_null()).select("record_id", "partition", "row_index", "image_ref").sort("row_index")
    embedded = _embedded_bytes(chunk, spec) if rows.get_column("image_ref").eq(EMBEDDED).any() else iter(())
    at, data_at = -1, None
    for row in rows.iter_rows(named=True):
        ref = row["image_ref"]
        try:
            if ref == EMBEDDED:
                while at < row["row_index"]:  # records and the column are both in row order: one forward pass
                    at, data_at = next(embedded, (row["row_index"] + 1, None))
                data = data_at if at == row["row_index"] else None
            else:
                data = read_ref(ref, root)
            if data is None:
                raise ImageRejected("no image bytes in the row")
        except ImageRejected as e:
            yield row, e
        except (OSError, ValueError) as e:  # missing remote file, network or permission error
            yield row, ImageRejected(f"cannot read {ref}: {type(e).__name__}: {e}")
        else:
            yield row, data


def images_stage(records: pl.DataFrame, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decode every referenced image of a chunk: facts and a thumbnail per image, or a quarantine row with the reason."""
    good, bad = [], []
    for row, payload in image_payloads(records, chunk, spec):
        try:
            if isinstance(payload, ImageRejected):
                raise payload
            d = decode_image(payload)
        except ImageRejected as e:
            bad.append({**row, "reason": str(e)})
            continue
        good.append(
            {
                **row,
                "file_bytes": len(payload),
                "width": d.width,
                "height": d.height,
                "format": d.format,
                "mode": d.mode,
                "frames": d.frames,
                "sha256": d.sha256,
                "phash": d.phash,
                "thumbnail": d.thumbnail(),
            }
        )
    return pl.DataFrame(good, schema=IMAGE_SCHEMA), pl.DataFrame(bad, schema=IMAGE_REJECT_SCHEMA)


def signals_stage(records: pl.DataFrame, chunk: Chunk, spec: SourceSpec, backend: str, ontology) -> pl.DataFrame:
    """Faces, subject count and colour attributes of each decoded image (full resolution, re-read from the source)."""
    from charassets.domain.image_signals import signals_for

    rows = []
    for row, payload in image_payloads(records, chunk, spec):
        base = {"record_id": row["record_id"], "partition": row["partition"], "backend": backend}
        try:
            if isinstance(payload, ImageRejected):
                raise payload
            s = signals_for(decode_image(payload).image, backend, ontology)
        except ImageRejected as e:  # the file changed or vanished since raw/images read it
            rows.append({**base, "status": "unreadable", "faces": None, "face_boxes": [], "flags": [str(e)], "attributes": "{}"})
            continue
        rows.append(
            {
                **base,
                "status": s.status,
                "faces": len(s.faces),
                "face_boxes": [list(f.box) for f in s.faces],
                "flags": s.flags,
                "attributes": json.dumps(s.attributes),
            }
        )
    return pl.DataFrame(rows, schema=SIGNAL_SCHEMA)

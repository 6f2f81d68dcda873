"""The image path as plain functions: image bytes of a chunk's records, decoded images, image signals.

raw records --images_stage--> raw/images (+ raw/image_rejects) --signals_stage--> features/image_signals

Every record that references an image ends in exactly one of ``raw/images`` and
``raw/image_rejects`` (with the reason): images in = decoded + quarantined. Bytes are read
a few at a time, so memory is bounded by a batch whatever the partition size.

Which references may be read, and how a URL is fetched (byte cap, timeouts, public
addresses only, redirects checked), is ``image_fetch``'s policy. A URL is fetched once per
run: ``raw/images`` keeps a working copy of each image it fetched over http(s), and
``features/image_signals`` reads that copy; local files, object-store files and
embedded bytes are read again from the source (its own storage). Embedded bytes obey the
same cap as files.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import polars as pl

from charassets.domain.images.backends import TagReader
from charassets.domain.images.decode import ImageRejected, decode_image
from charassets.domain.images.fetch import MAX_IMAGE_BYTES, LocalPath, RemoteURL, fetch_url, is_remote, resolve_reference
from charassets.domain.sources import EMBEDDED, Chunk, SourceSpec

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
    # images fetched over http(s) only (null otherwise): the file itself when small, else lossless WebP with a
    # longest side of 1024; features/image_signals reads it, so that a URL is fetched once per run
    "working_copy": pl.Binary,
    # the image signals (JSON, SIGNAL_SCHEMA's fields) read from this very decode: features/image_signals publishes them
    "signals": pl.String,
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


def read_ref(ref: str, root: str, spec: SourceSpec, fetch: bool = True) -> bytes:
    """Bytes of an image reference, as the policy (``image_fetch.resolve_reference``) allows; ``ImageRejected`` says why not.

    ``fetch=False`` refuses URLs instead of fetching them (a stage that must not fetch again).
    """
    target = resolve_reference(ref, root, spec)
    if isinstance(target, RemoteURL):
        if not fetch:
            raise ImageRejected(f"not fetched again (raw/images keeps no working copy of it): {ref}")
        return fetch_url(target.url)
    if isinstance(target, LocalPath):
        if not target.path.is_file():
            raise ImageRejected(f"file not found: {ref}")
        if target.path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageRejected(f"file larger than {MAX_IMAGE_BYTES:,} bytes: {ref}")
        data = target.path.read_bytes()
    else:  # under an object-store root, with the source's own storage
        with fsspec.open(target.url, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(f"file larger than {MAX_IMAGE_BYTES:,} bytes: {ref}")
    return data


def _embedded_bytes(chunk: Chunk, spec: SourceSpec) -> Iterator[tuple[int, bytes | ImageRejected | None]]:
    """``(row index, bytes)`` of the chunk's rows from a Parquet image column (binary, or a struct with ``bytes``).

    One pass, ``READ_BATCH`` rows at a time, over the row groups that hold the chunk: each
    row group's image data is read once, however the chunk's rows fall into batches. A value
    over ``MAX_IMAGE_BYTES`` comes as ``ImageRejected`` (measured in Arrow, never copied).
    """
    import pyarrow.compute as pc
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
            sizes = pc.binary_length(values).to_pylist()
            for i, size in enumerate(sizes):
                if lo <= row < hi:
                    if size is not None and size > MAX_IMAGE_BYTES:
                        yield row, ImageRejected(f"embedded image larger than {MAX_IMAGE_BYTES:,} bytes ({size:,})")
                    else:
                        yield row, values[i].as_py()
                row += 1


def image_root(chunk: Chunk, spec: SourceSpec) -> str:
    """Where a chunk's relative image paths are: a folder source's root; a table file's folder."""
    return spec.uri if spec.format == "images" else chunk.file.rsplit("/", 1)[0]


def image_payloads(
    records: pl.DataFrame, chunk: Chunk, spec: SourceSpec, fetch: bool = True
) -> Iterator[tuple[dict[str, Any], bytes | ImageRejected]]:
    """Each record with an ``image_ref`` (in row order), and its bytes or the reason they cannot be had.

    ``fetch=False``: URLs are not fetched (they come back as ``ImageRejected``).
    """
    root = image_root(chunk, spec)
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
                if isinstance(data, ImageRejected):
                    raise data
            else:
                data = read_ref(ref, root, spec, fetch=fetch)
            if data is None:
                raise ImageRejected("no image bytes in the row")
        except ImageRejected as e:
            yield row, e
        except (OSError, ValueError) as e:  # missing remote file, network or permission error
            yield row, ImageRejected(f"cannot read {ref}: {type(e).__name__}: {e}")
        else:
            yield row, data


def signal_row(s, sx: float = 1.0, sy: float = 1.0) -> dict:
    """``ImageSignals`` as a row of ``features/image_signals`` (boxes scaled by ``sx``, ``sy`` to the picture's pixels)."""
    boxes = [[round(x * sx), round(y * sy), round(w * sx), round(h * sy)] for x, y, w, h in (f.box for f in s.faces)]
    return {"status": s.status, "faces": len(s.faces), "face_boxes": boxes, "flags": s.flags, "attributes": json.dumps(s.attributes)}


def images_stage(
    records: pl.DataFrame, chunk: Chunk, spec: SourceSpec, signals: Callable[[Any], Any] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decode every referenced image of a chunk: facts and a thumbnail per image, or a quarantine row with the reason.

    An image fetched over http(s) also keeps a working copy (``DecodedImage.working_copy``),
    so that no later stage fetches it again. ``signals`` (a decoded RGB image ->
    ``ImageSignals``) is run on the same decoded image: one decode per picture for every
    signal; its result is the ``signals`` column that ``features/image_signals`` publishes.
    """
    root = image_root(chunk, spec)
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
                "working_copy": d.working_copy(payload) if row["image_ref"] != EMBEDDED and is_remote(row["image_ref"], root) else None,
                "signals": None
                if signals is None
                else json.dumps(signal_row(signals(d.image), d.width / d.image.width, d.height / d.image.height)),
            }
        )
    return pl.DataFrame(good, schema=IMAGE_SCHEMA), pl.DataFrame(bad, schema=IMAGE_REJECT_SCHEMA)


def signals_stage(
    records: pl.DataFrame,
    chunk: Chunk,
    spec: SourceSpec,
    backend: str,
    ontology,
    working: pl.DataFrame | None = None,
    tag_reader: TagReader | None = None,
) -> pl.DataFrame:
    """Faces, subject count and colour attributes of each decoded image.

    ``working``: the partition's ``raw/images`` rows (``record_id``, ``width``, ``height``,
    ``working_copy``). An image with a working copy is read from it (face boxes scaled back
    to the picture's own size); any other is re-read from the source, at full resolution.
    A URL is never fetched here: without a working copy it is ``unreadable``.
    ``tag_reader`` (tags -> record) is what a tag-reading backend (``wd:...``) needs.
    """
    from charassets.domain.images.signals import signals_for

    done = {}  # read when raw/images decoded the picture: published as they are, no second decode
    if working is not None and "signals" in working.columns:
        done = dict(working.filter(pl.col("signals").is_not_null()).select("record_id", "signals").iter_rows())
    ready = records.filter(pl.col("record_id").is_in(list(done))).select("record_id", "partition", "row_index")
    records = records.filter(~pl.col("record_id").is_in(list(done)))
    copies = {}
    if working is not None and "working_copy" in working.columns:
        for r in working.filter(pl.col("working_copy").is_not_null()).iter_rows(named=True):
            copies[r["record_id"]] = (r["working_copy"], r["width"], r["height"])
    from_source = records.filter(~pl.col("record_id").is_in(list(copies)))
    from_copies = records.filter(pl.col("record_id").is_in(list(copies)) & pl.col("image_ref").is_not_null())
    with_copies = (
        (row, copies[row["record_id"]]) for row in from_copies.select("record_id", "partition", "row_index").iter_rows(named=True)
    )
    rows = []
    for row in ready.iter_rows(named=True):
        rows.append(
            (
                row["row_index"],
                {"record_id": row["record_id"], "partition": row["partition"], "backend": backend, **json.loads(done[row["record_id"]])},
            )
        )
    for row, payload in itertools.chain(image_payloads(from_source, chunk, spec, fetch=False), with_copies):
        base = {"record_id": row["record_id"], "partition": row["partition"], "backend": backend}
        try:
            if isinstance(payload, ImageRejected):
                raise payload
            sx = sy = 1.0
            if isinstance(payload, tuple):  # a working copy, and the picture's own size
                payload, width, height = payload
                image = decode_image(payload).image
                sx, sy = width / image.width, height / image.height
            else:
                image = decode_image(payload).image
            s = signals_for(image, backend, ontology, tag_reader)
        except ImageRejected as e:  # the file changed or vanished since raw/images read it
            rows.append(
                (row["row_index"], {**base, "status": "unreadable", "faces": None, "face_boxes": [], "flags": [str(e)], "attributes": "{}"})
            )
            continue
        rows.append((row["row_index"], {**base, **signal_row(s, sx, sy)}))
    rows.sort(key=lambda r: r[0])  # row order, as before
    return pl.DataFrame([r for _, r in rows], schema=SIGNAL_SCHEMA)

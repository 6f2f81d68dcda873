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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
import polars as pl
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TAG_CHARS = 32_768
MAX_PARTITION_ROWS = 100_000
EXCERPT_CHARS = 200
csv.field_size_limit(2**31 - 1)  # a huge field is quarantined as too long, not a crash of the reader
TAG_FIELDS = ("tags", "general", "character", "copyright", "artist", "meta")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
EMBEDDED = "embedded"  # image_ref of an image whose bytes are in the source table itself
IMAGE_ROWS_PER_PARTITION = 1_000  # images cost ~0.2 s each: smaller partitions keep runs short

RAW_SCHEMA = {
    "record_id": pl.String,
    "source_id": pl.String,
    "source": pl.String,
    "partition": pl.String,
    "file": pl.String,
    "row_index": pl.Int64,
    **{f"{f}_raw": pl.String for f in TAG_FIELDS},
    "rating": pl.String,
    "image_ref": pl.String,
}
REJECT_SCHEMA = {
    "record_id": pl.String,
    "source_id": pl.String,
    "source": pl.String,
    "partition": pl.String,
    "file": pl.String,
    "row_index": pl.Int64,
    "reason": pl.String,
    "raw_excerpt": pl.String,
}
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


class ColumnMapping(BaseModel):
    """Which input column holds what. ``tags`` is one ordered string; the others are per category."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = "id"
    tags: str | None = None
    general: str | None = None
    character: str | None = None
    copyright: str | None = None
    artist: str | None = None
    meta: str | None = None
    rating: str | None = None
    image: str | None = None

    def tag_columns(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in TAG_FIELDS if getattr(self, f)}


LAYOUTS: dict[str, tuple[ColumnMapping, str]] = {
    # one ordered, comma-separated tag string per row (training-prompt style)
    "ordered": (ColumnMapping(id="id", tags="tags", rating="rating", image="image"), ","),
    # Danbooru's post export: one space-separated string per tag category
    "danbooru": (
        ColumnMapping(
            id="id",
            general="tag_string_general",
            character="tag_string_character",
            copyright="tag_string_copyright",
            artist="tag_string_artist",
            meta="tag_string_meta",
            rating="rating",
            image="file_url",
        ),
        " ",
    ),
}


class SourceSpec(BaseModel):
    """One source of records, as declared in the sources file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    uri: str
    format: Literal["parquet", "jsonl", "csv", "images"] | None = None
    layout: Literal["ordered", "danbooru"] = "ordered"
    columns: ColumnMapping | None = None
    separator: str | None = None
    rows_per_partition: int = Field(default=50_000, ge=1, le=MAX_PARTITION_ROWS)
    images: bool = False  # decode the image column (always on for ``format: images``)
    # image references may be http(s) URLs, fetched with a byte cap, timeouts and only from public
    # addresses (image_fetch); off: only paths under the source's own root (never file://, s3://...)
    remote_images: bool = False

    @model_validator(mode="after")
    def _needs_tags(self) -> SourceSpec:
        if self.decodes_images and "rows_per_partition" not in self.model_fields_set:
            self.rows_per_partition = IMAGE_ROWS_PER_PARTITION
        if self.format == "images":
            if self.columns is not None:
                raise ValueError(f"source {self.name!r}: an image folder has no columns to map")
        elif not self.mapping.tag_columns() and not (self.images and self.mapping.image):
            raise ValueError(f"source {self.name!r}: the column mapping names no tag column (and no decoded image column)")
        if self.images and not self.mapping.image:
            raise ValueError(f"source {self.name!r}: images: true, but the column mapping names no image column")
        return self

    @property
    def mapping(self) -> ColumnMapping:
        if self.format == "images":  # one record per image file: its path is its id, its sidecar its tags
            return ColumnMapping(id="path", tags="tags", image="path")
        return self.columns or LAYOUTS[self.layout][0]

    @property
    def tag_separator(self) -> str:
        if self.format == "images":
            return ","
        return self.separator if self.separator is not None else LAYOUTS[self.layout][1]

    @property
    def decodes_images(self) -> bool:
        return self.format == "images" or self.images

    def format_of(self, file: str) -> str:
        if self.format:
            return self.format
        suffix = PurePosixPath(file.split("?")[0]).suffix.lower()
        return {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix, "parquet")


class SourcesConfig(BaseModel):
    """The sources file: a list of sources (relative paths are relative to the file)."""

    model_config = ConfigDict(extra="forbid")
    sources: list[SourceSpec]

    @model_validator(mode="after")
    def _unique(self) -> SourcesConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names: {names}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> SourcesConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        for s in data.get("sources", []):
            uri = str(s.get("uri", ""))
            if "://" not in uri and not Path(uri).is_absolute():
                s["uri"] = str((path.parent / uri).resolve())
        return cls.model_validate(data)

    def get(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source named {name!r} (known: {[s.name for s in self.sources]})")


# ---------------------------------------------------------------------------- files


def _glob_base(path: str) -> str:
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return str(PurePosixPath(*parts[:i]))
    return str(PurePosixPath(path).parent)


def list_files(spec: SourceSpec) -> list[tuple[str, str]]:
    """``(uri, relative name)`` of each data file of a source, sorted (for an image folder: each folder holding images)."""
    fs, path = fsspec.core.url_to_fs(spec.uri)
    if spec.format == "images":
        return _image_folders(spec, fs, path)
    if any(c in path for c in "*?["):
        found, base = fs.glob(path), _glob_base(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if PurePosixPath(p).suffix.lower() in {".parquet", ".jsonl", ".ndjson", ".json", ".csv"}]
        base = path
    else:
        found, base = [path], str(PurePosixPath(path).parent)
    if not found:
        raise FileNotFoundError(f"source {spec.name!r}: no files at {spec.uri}")
    local = spec.uri.startswith("/") or "://" not in spec.uri
    out = []
    for p in sorted(found):
        uri = p if local else fs.unstrip_protocol(p)
        out.append((uri, str(PurePosixPath(p).relative_to(base)) if p.startswith(base) else PurePosixPath(p).name))
    return out


def _is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _image_folders(spec: SourceSpec, fs: Any, root: str) -> list[tuple[str, str]]:
    if not fs.isdir(root):
        raise FileNotFoundError(f"source {spec.name!r}: {spec.uri} is not a folder")
    folders = sorted({str(PurePosixPath(p).parent) for p in fs.find(root) if _is_image(p)})
    if not folders:
        raise FileNotFoundError(f"source {spec.name!r}: no images under {spec.uri}")
    local = spec.uri.startswith("/") or "://" not in spec.uri
    return [(d if local else fs.unstrip_protocol(d), str(PurePosixPath(d).relative_to(root))) for d in folders]


def folder_listing(folder_uri: str) -> tuple[list[tuple[str, int]], set[str]]:
    """One listing of a folder: ``(name, bytes)`` of its images sorted by name (the rows of an image folder), and every file name."""
    fs, path = fsspec.core.url_to_fs(folder_uri)
    files = [(PurePosixPath(e["name"]).name, int(e.get("size") or 0)) for e in fs.ls(path, detail=True) if e["type"] == "file"]
    return sorted((n, b) for n, b in files if _is_image(n)), {n for n, _ in files}


def file_digest(relative_name: str, content: str = "") -> str:
    return hashlib.sha1(f"{relative_name}|{content}".encode() if content else relative_name.encode()).hexdigest()[:8]


def partition_key(source: str, relative_name: str, chunk: int, content: str = "") -> str:
    """``<source>-<digest of the file's name and content identity>-<chunk>``: a file replaced under the same name is a new partition."""
    return f"{source}-{file_digest(relative_name, content)}-{chunk:04d}"


def _parquet_identity(f: Any, size: int) -> str:
    """Size plus a hash of the footer (schema, row groups, offsets and statistics): changes when the content does."""
    f.seek(max(0, size - 65_536))
    return f"{size}:{hashlib.blake2b(f.read(), digest_size=8).hexdigest()}"


def _csv_line_state(line: bytes, in_quotes: bool) -> bool:
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


def _records(lines: Iterator[bytes], csv_quotes: bool) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, record bytes)`` of each record of a line-based file, blank lines included.

    A JSONL record is a line; a CSV record ends at a newline outside a quoted field. The
    chunk cutter and the readers both use this one splitter, so the rows a chunk is
    registered with are, by construction, the rows its reader yields.
    """
    offset, start, parts, in_quotes = 0, 0, [], False
    for line in lines:
        if not parts:
            start = offset
        offset += len(line)
        if csv_quotes and (in_quotes or b'"' in line):
            in_quotes = _csv_line_state(line, in_quotes)
        parts.append(line)
        if not in_quotes:
            yield start, b"".join(parts) if len(parts) > 1 else parts[0]
            parts = []
    if parts:  # a quote never closed: the record it opened is bad, and the lines after it are records again
        yield start, parts[0]
        offset = start + len(parts[0])
        for rel, record in _records(iter(parts[1:]), csv_quotes):
            yield offset + rel, record


def _line_boundaries(f: Any, rows_per_chunk: int, csv_quotes: bool, hasher: Any = None) -> tuple[list[tuple[int, int, int, int]], int]:
    """Cut a line-based file into chunks of whole records: ``(byte_start, byte_end, row_start, rows)``.

    Blank records are not rows. For CSV the header record is skipped. ``hasher`` (a
    hashlib object), when given, sees every byte: the file's content identity in the same pass.
    """
    chunks, start, rows_in_chunk, row, end = [], None, 0, 0, 0
    header_pending = csv_quotes
    for offset, record in _records(iter(f), csv_quotes):
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
    return chunks, end


def register(spec: SourceSpec) -> pl.DataFrame:
    """Chunks of every file of a source, as registry rows (one per partition)."""
    rows = []
    fs, _ = fsspec.core.url_to_fs(spec.uri)
    for uri, rel in list_files(spec):
        fmt = spec.format_of(uri)
        if fmt == "images":
            images, _ = folder_listing(uri)
            size, n, step = sum(b for _, b in images), len(images), spec.rows_per_partition
            identity = hashlib.blake2b("\n".join(f"{name}:{b}" for name, b in images).encode(), digest_size=8).hexdigest()
            bounds = [(0, 0, s, min(step, n - s)) for s in range(0, n, step)]
            for i, (b0, b1, r0, n_rows) in enumerate(bounds):
                rows.append((partition_key(spec.name, rel, i, identity), spec.name, uri, fmt, i, r0, n_rows, b0, b1, size))
            continue
        size = fs.size(fsspec.core.url_to_fs(uri)[1])
        if fmt == "parquet":
            with fsspec.open(uri, "rb") as f:
                identity = _parquet_identity(f, size)
                try:
                    f.seek(0)
                    n = pq.ParquetFile(f).metadata.num_rows
                except Exception:  # noqa: BLE001 - not a Parquet file (truncated, corrupt): one row, quarantined with the reason
                    rows.append((partition_key(spec.name, rel, 0, identity), spec.name, uri, "unreadable", 0, 0, 1, 0, size, size))
                    continue
            step = spec.rows_per_partition
            bounds = [(0, size, s, min(step, n - s)) for s in range(0, n, step)]
        else:
            hasher = hashlib.blake2b(digest_size=8)
            with fsspec.open(uri, "rb") as f:
                bounds, _ = _line_boundaries(f, spec.rows_per_partition, csv_quotes=fmt == "csv", hasher=hasher)
            identity = f"{size}:{hasher.hexdigest()}"
        for i, (b0, b1, r0, n_rows) in enumerate(bounds):
            rows.append((partition_key(spec.name, rel, i, identity), spec.name, uri, fmt, i, r0, n_rows, b0, b1, size))
    return pl.DataFrame(rows, schema=REGISTRY_SCHEMA, orient="row")


# ---------------------------------------------------------------------------- reading


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


def _as_text(value: Any, separator: str) -> tuple[str | None, str | None]:
    """A field value as text, or an error when its type makes no sense."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return separator.join(value), None
    return None, f"is of type {type(value).__name__}, expected text"


def _unencodable(rec: dict[str, Any]) -> str | None:
    """The first text field that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` from JSON), if any."""
    for k, v in rec.items():
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return k
    return None


def _rows_from_objects(objs: Iterator[tuple[int, Any, str]], spec: SourceSpec, chunk: Chunk) -> tuple[list[dict], list[dict]]:
    """Rows as records, or as rejects with their reason: nothing in a row's content can fail the chunk."""
    good, bad = [], []
    for row_index, obj, excerpt in objs:
        base = {"source": spec.name, "partition": chunk.partition, "file": chunk.file, "row_index": row_index}
        excerpt = excerpt.encode("utf-8", "replace").decode("utf-8")
        if chunk.format == "images":  # an image's id is its path, known even when its sidecar is unreadable
            base["source_id"] = excerpt
        try:
            _one_row(obj, excerpt, base, spec, good, bad)
        except Exception as e:  # noqa: BLE001 - whatever a row holds, it becomes a reject, never a failed run
            bad.append(
                {**base, "source_id": None, "reason": f"unreadable row: {type(e).__name__}: {e}", "raw_excerpt": excerpt[:EXCERPT_CHARS]}
            )
    return good, bad


def _one_row(obj: Any, excerpt: str, base: dict, spec: SourceSpec, good: list[dict], bad: list[dict]) -> None:
    """One row: appended to ``good`` as a record, or to ``bad`` with the reason."""
    m = spec.mapping
    if isinstance(obj, Exception):
        bad.append({**base, "reason": str(obj), "raw_excerpt": excerpt[:EXCERPT_CHARS]})
        return
    if not isinstance(obj, dict):
        bad.append({**base, "reason": f"row is a JSON {type(obj).__name__}, expected an object", "raw_excerpt": excerpt[:EXCERPT_CHARS]})
        return
    rec: dict[str, Any] = dict(base)
    errors = []
    if m.id:
        sid = obj.get(m.id)
        rec["source_id"] = None if sid is None or isinstance(sid, dict | list) else str(sid)
    for f, col in m.tag_columns().items():
        text, err = _as_text(obj.get(col), spec.tag_separator)
        rec[f"{f}_raw"] = text
        if err:
            errors.append(f"field {col!r} {err}")
    for key, col in (("rating", m.rating), ("image_ref", m.image)):
        if col and obj.get(col) is not None:
            rec[key] = str(obj.get(col))
    if (field := _unencodable(rec)) is not None:
        errors.append(f"field {field!r} is not valid Unicode (a lone surrogate)")
        rec["source_id"] = None if field == "source_id" else rec.get("source_id")
    if errors:
        bad.append({**base, "source_id": rec.get("source_id"), "reason": "; ".join(errors), "raw_excerpt": excerpt[:EXCERPT_CHARS]})
    else:
        good.append(rec)


def _read_line_chunk(chunk: Chunk) -> bytes:
    with fsspec.open(chunk.file, "rb") as f:
        f.seek(chunk.byte_start)
        return f.read(chunk.byte_end - chunk.byte_start)


def _json_object(line: bytes) -> Any:
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


def _jsonl_objects(chunk: Chunk) -> Iterator[tuple[int, Any, str]]:
    row = chunk.row_start
    for _, line in _records(iter(io.BytesIO(_read_line_chunk(chunk))), csv_quotes=False):
        if not line.strip():
            continue
        yield row, _json_object(line), line[:EXCERPT_CHARS].decode("utf-8", "replace")
        row += 1


def _image_folder_objects(chunk: Chunk, spec: SourceSpec) -> Iterator[tuple[int, Any, str]]:
    """One object per image of the chunk: its path under the source root and its sidecar tags (``None`` without one)."""
    fs, folder = fsspec.core.url_to_fs(chunk.file)
    _, root = fsspec.core.url_to_fs(spec.uri)
    rel_folder = PurePosixPath(folder).relative_to(root)
    listing, names_here = folder_listing(chunk.file)
    if chunk.file_bytes is not None and sum(b for _, b in listing) != chunk.file_bytes:
        # its chunks are slices of the registered listing: reading a changed folder would shift them
        raise SourceChanged(
            f"image folder {chunk.file} changed since it was registered ({chunk.file_bytes:,} bytes of images then, "
            f"{sum(b for _, b in listing):,} now): put new images in a new folder, or register the source afresh"
        )
    names = [n for n, _ in listing][chunk.row_start : chunk.row_start + chunk.row_count]
    for row, name in enumerate(names, chunk.row_start):
        rel = str(rel_folder / name) if str(rel_folder) != "." else name
        sidecar = PurePosixPath(name).with_suffix(".txt").name
        obj: Any = {"path": rel, "tags": None}
        if sidecar in names_here:  # known from the listing: no request per image to ask
            try:
                obj["tags"] = fs.cat_file(str(PurePosixPath(folder) / sidecar)).decode("utf-8-sig")
            except UnicodeDecodeError:
                obj = ValueError(f"sidecar {sidecar} is not valid UTF-8")
        yield row, obj, rel


def _csv_fields(record: bytes) -> list[str] | ValueError:
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
    if _csv_line_state(record, False):
        return ValueError("invalid CSV: a quoted field is never closed")
    return rows[0]


def _csv_objects(chunk: Chunk) -> Iterator[tuple[int, Any, str]]:
    with fsspec.open(chunk.file, "rb") as f:
        header_record = next((r for _, r in _records(iter(f), csv_quotes=True)), b"")
    header = _csv_fields(header_record.decode("utf-8-sig", "replace").encode())
    if isinstance(header, ValueError):
        raise ValueError(f"{chunk.file}: the header row cannot be read ({header})")
    row = chunk.row_start
    for _, record in _records(iter(io.BytesIO(_read_line_chunk(chunk))), csv_quotes=True):
        if not record.strip():
            continue
        excerpt = record[:EXCERPT_CHARS].decode("utf-8", "replace")
        fields = _csv_fields(record)
        obj: Any
        if isinstance(fields, ValueError):
            obj = fields
        elif len(fields) != len(header):
            obj = ValueError(f"expected {len(header)} fields, got {len(fields)}")
        else:
            obj = dict(zip(header, fields, strict=True))
        yield row, obj, excerpt
        row += 1


def _parquet_frame(chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    m = spec.mapping
    wanted = {"source_id": m.id, **{f"{f}_raw": c for f, c in m.tag_columns().items()}, "rating": m.rating, "image_ref": m.image}
    lf = pl.scan_parquet(chunk.file)
    schema = lf.collect_schema()
    if m.image and m.image in schema:  # bytes in the table: the reference says so; a path or URL stays as it is
        dtype = schema[m.image]
        if dtype == pl.Binary:
            lf = lf.with_columns(pl.when(pl.col(m.image).is_not_null()).then(pl.lit(EMBEDDED)).alias(m.image))
        elif isinstance(dtype, pl.Struct) and "bytes" in [f.name for f in dtype.fields]:
            path = pl.col(m.image).struct.field("path") if "path" in [f.name for f in dtype.fields] else pl.lit(None, dtype=pl.String)
            lf = lf.with_columns(
                pl.when(pl.col(m.image).struct.field("bytes").is_not_null()).then(pl.lit(EMBEDDED)).otherwise(path).alias(m.image)
            )
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
    if chunk.format == "unreadable":
        raise ValueError("the file could not be read when it was registered")
    if chunk.format == "parquet":
        records, rejects = _parquet_frame(chunk, spec)
    else:
        if chunk.format == "images":
            objects = _image_folder_objects(chunk, spec)
        else:
            objects = _jsonl_objects(chunk) if chunk.format == "jsonl" else _csv_objects(chunk)
        good, bad = _rows_from_objects(objects, spec, chunk)
        records = pl.DataFrame(good, schema=RAW_SCHEMA)
        rejects = pl.DataFrame(bad, schema=REJECT_SCHEMA)
    records, more = validate_records(records, spec, chunk)
    return records, pl.concat([rejects, more]).select(list(REJECT_SCHEMA))


def validate_records(df: pl.DataFrame, spec: SourceSpec, chunk: Chunk) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each row a stable ``record_id``; quarantine rows without id, without tags (or an image to decode), too long, or repeated."""
    df = df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c) for c, t in RAW_SCHEMA.items()])
    tag_cols = [f"{f}_raw" for f in spec.mapping.tag_columns()]
    sep = spec.tag_separator
    blank = pl.all_horizontal(
        pl.col(c).fill_null("").str.replace_all(f"[\\s{'' if sep.strip() == '' else sep}]+", "").str.len_chars() == 0 for c in tag_cols
    )
    if spec.decodes_images:  # an image is a record on its own; its tags are optional
        blank = blank & pl.col("image_ref").is_null()
    too_long = pl.any_horizontal(pl.col(c).fill_null("").str.len_chars() > MAX_TAG_CHARS for c in tag_cols)
    if spec.mapping.id:
        sid = pl.col("source_id").str.strip_chars()
        missing_id = sid.is_null() | (sid == "")
        record_id = pl.lit(f"{spec.name}:") + sid
    else:
        missing_id = pl.lit(False)
        digest = file_digest(chunk.file.rsplit("/", 1)[-1])
        record_id = pl.lit(f"{spec.name}:{digest}:") + pl.col("row_index").cast(pl.String)
    df = df.with_columns(record_id.alias("record_id"))
    first_row = pl.col("row_index").min().over("record_id")
    reason = (
        pl.when(missing_id)
        .then(pl.lit(f"missing id (column {spec.mapping.id!r})"))
        .when(blank)
        .then(pl.lit("no tags and no image" if spec.decodes_images else "no tags"))
        .when(too_long)
        .then(pl.lit(f"tag string longer than {MAX_TAG_CHARS} characters"))
        .when(pl.col("row_index") != first_row)
        .then(pl.lit("duplicate id (first seen at row ") + first_row.cast(pl.String) + pl.lit(")"))
    )
    df = df.with_columns(reason.alias("_reason"))
    rejects = df.filter(pl.col("_reason").is_not_null()).select(
        pl.when(missing_id).then(None).otherwise(pl.col("record_id")).alias("record_id"),
        "source_id",
        "source",
        "partition",
        "file",
        "row_index",
        pl.col("_reason").alias("reason"),
        pl.concat_str([pl.col(c).fill_null("") for c in tag_cols], separator=" | ").str.slice(0, EXCERPT_CHARS).alias("raw_excerpt"),
    )
    return df.filter(pl.col("_reason").is_null()).drop("_reason"), rejects

"""Record features: per-tag vectors (embedded once, cached) pooled per record with IDF-like weights.

A record's vector is the weighted mean of the vectors of its general, character and
copyright tags. Each distinct tag is embedded once per embedder and kept; a record whose
tags did not change keeps its vector (matched by a content hash), so re-running a
partition embeds nothing new. Full-string encoding (the whole tag list as one text) is
available as ``mode="full"``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from charassets.domain.models.embedders import Embedder
from charassets.domain.tags.vocabulary import Vocabulary

POOLED_CATEGORIES = ("general", "character", "copyright", "unknown_tags")
TAG_VECTOR_SCHEMA = {"embedder": pl.String, "tag": pl.String, "vector": pl.List(pl.Float32)}


RECORD_VECTOR_DTYPE = pl.Binary  # features/embeddings: each vector as little-endian float16 bytes


def vector_matrix(vectors: pl.Series) -> np.ndarray:
    """A vector column as a (rows, dim) float32 matrix, without going through Python objects.

    Record vectors are float16 bytes (``record_vector_column``); tag and image vectors are list<float32>.
    """
    if vectors.len() == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if vectors.dtype == RECORD_VECTOR_DTYPE:
        arr = vectors.rechunk().to_arrow().cast(pa.large_binary())
        if arr.null_count:
            raise ValueError(f"{arr.null_count} of {len(arr)} records have no vector")
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        widths = np.diff(offsets)
        if (widths != widths[0]).any() or widths[0] % 2:
            raise ValueError("record vectors of different sizes in one column")
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        return data.view("<f2").reshape(len(arr), int(widths[0]) // 2).astype(np.float32)
    width = vectors.list.len().max()
    return np.ascontiguousarray(vectors.list.to_array(width).to_numpy(), dtype=np.float32)


def compact_vectors(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with a binary ``vector`` column copied down to its own rows' bytes.

    A filtered or joined binary column keeps views into the buffers it was read into: a
    2,000-row sample of a 50,000-row partition would hold the whole partition's vectors.
    """
    if frame.schema.get("vector") != RECORD_VECTOR_DTYPE:
        return frame
    return frame.with_columns(pl.Series("vector", frame.get_column("vector").to_arrow().cast(pa.large_binary()), dtype=RECORD_VECTOR_DTYPE))


def list_vector_column(vectors: np.ndarray, name: str = "vector") -> pl.Series:
    """Vectors as list<float32> (tag and image vectors; Delta refuses fixed-size lists)."""
    if len(vectors) == 0:
        return pl.Series(name, [], dtype=pl.List(pl.Float32))
    return pl.Series(name, np.ascontiguousarray(vectors, dtype=np.float32)).cast(pl.List(pl.Float32))


def record_vector_column(vectors: np.ndarray, name: str = "vector") -> pl.Series:
    """Record vectors as float16 bytes, one value per row: half the bytes of float32, and a binary column reads about
    ten times faster than list<float32> (Delta refuses fixed-size lists). A stored vector is within about 1e-3
    (relative) of the float32 one; taking a field's evidence out (``masked_features``) scales that error by the
    share of the record's weight left, so a record that is mostly evidence gets a coarser remainder. The demo's
    final table and the dev-set output are the same as with float32 vectors."""
    if len(vectors) == 0:
        return pl.Series(name, [], dtype=RECORD_VECTOR_DTYPE)
    half = np.ascontiguousarray(vectors, dtype="<f2")
    if half.ndim != 2:
        raise ValueError(f"expected a (rows, dim) matrix, got shape {half.shape}")
    n, dim = half.shape
    offsets = np.arange(0, (n + 1) * dim * 2, dim * 2, dtype=np.int64)
    arr = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(half.reshape(-1).view(np.uint8))])
    return pl.Series(name, arr, dtype=RECORD_VECTOR_DTYPE)


def feature_tags(clean: pl.DataFrame) -> pl.Series:
    """The tags a record is described by (artist and meta tags say nothing about the character)."""
    return clean.select(pl.concat_list(*POOLED_CATEGORIES).list.unique(maintain_order=True).alias("ftags")).to_series()


def content_hashes(tags: pl.Series, embedder_id: str, mode: str) -> pl.Series:
    """What a record vector is made of, as a digest: the embedder, the mode and the record's tags in order."""
    prefix = f"{embedder_id}|{mode}|"
    return pl.Series(
        [
            None if s is None else hashlib.blake2b(f"{prefix}{s}".encode(), digest_size=12).hexdigest()
            for s in tags.list.join(",").to_list()
        ],
        dtype=pl.String,
    )


def tag_weights(tags: list[str] | pl.Series, vocabulary: Vocabulary) -> np.ndarray:
    """IDF-like weights from vocabulary post counts (frequent tags such as ``1girl`` weigh little).

    Tags without a count (unknown, or a vocabulary without counts) weigh like the rarest known tag,
    or 1.0 when no count is known at all.
    """
    counts = vocabulary.tags.select("tag", pl.col("post_count").cast(pl.Float64)).unique("tag", keep="last")
    top = counts.get_column("post_count").max() if counts.height else None
    if not top or top <= 0:
        return np.ones(len(tags), dtype=np.float32)
    c = (
        pl.DataFrame({"tag": pl.Series(tags, dtype=pl.String)})
        .join(counts, on="tag", how="left", maintain_order="left")
        .get_column("post_count")
        .fill_null(0.0)
        .to_numpy()
    )
    return np.where(c > 0, np.log1p(top / (c + 1)), math.log1p(top)).astype(np.float32)


class TagVectorCache:
    """Vectors of distinct tags for one embedder; ``missing`` says which still need encoding."""

    def __init__(self, embedder: Embedder, known: pl.DataFrame | None = None, bundled: pl.DataFrame | None = None):
        self.embedder = embedder
        self.index: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.new_rows: list[tuple[str, np.ndarray]] = []
        self._frame: pl.DataFrame | None = None
        self._weights: tuple[tuple[str, int], np.ndarray] | None = None  # (vocabulary digest, tags cached) -> weights
        self._unsaved: set[str] = set()  # bundled vectors not in the lake yet: saved there once a record uses them
        for frame, saved in ((known, True), (bundled, False)):
            if frame is None or not frame.height:
                continue
            frame = frame.filter((pl.col("embedder") == embedder.id) & ~pl.col("tag").is_in(list(self.index)))
            frame = frame.unique("tag", keep="first", maintain_order=True)
            self._add(frame.get_column("tag").to_list(), vector_matrix(frame.get_column("vector")), new=False)
            if not saved:
                self._unsaved |= set(frame.get_column("tag").to_list())

    def _add(self, tags: list[str], vectors: np.ndarray, new: bool) -> None:
        if not tags:
            return
        start = len(self.index)
        self.index.update({t: start + i for i, t in enumerate(tags)})
        self._frame = None
        self.matrix = vectors if self.matrix.size == 0 else np.vstack([self.matrix, vectors])
        if new:
            self.new_rows += list(zip(tags, vectors, strict=True))

    @property
    def saved(self) -> int:
        """How many of the cached vectors the lake holds (or will, once ``new_frame`` is appended): not the bundled ones
        no record has used."""
        return len(self.index) - len(self._unsaved)

    def frame(self) -> pl.DataFrame:
        """``tag`` -> ``row`` (its row in ``matrix``), for vectorized lookups by join."""
        if self._frame is None:
            self._frame = pl.DataFrame(
                {"tag": list(self.index), "row": np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))},
                schema={"tag": pl.String, "row": pl.Int64},
            )
        return self._frame

    def ensure(self, tags: list[str] | pl.Series) -> int:
        """Encode the tags not cached yet; returns how many were encoded (bundled vectors are used, not encoded)."""
        distinct = pl.Series("tag", tags, dtype=pl.String).drop_nulls().unique()
        if self._unsaved:  # bundled vectors in use: written to the lake with the ones encoded now
            used = sorted(self._unsaved.intersection(distinct.to_list()))
            self.new_rows += [(t, self.matrix[self.index[t]]) for t in used]
            self._unsaved.difference_update(used)
        missing = sorted(distinct.filter(~distinct.is_in(self.frame().get_column("tag"))).to_list())
        if missing:
            self._add(missing, self.embedder.encode(missing), new=True)
        return len(missing)

    def rows(self, tags: pl.Series) -> np.ndarray:
        """Row in ``matrix`` of each tag (all must be cached)."""
        found = pl.DataFrame({"tag": tags}).join(self.frame(), on="tag", how="left", maintain_order="left").get_column("row")
        if found.null_count():
            raise KeyError(f"{found.null_count()} tags are not cached")
        return found.to_numpy()

    def weights(self, vocabulary: Vocabulary) -> np.ndarray:
        """IDF-like weight of every cached tag, aligned with ``matrix`` rows (read-only).

        Computed once per vocabulary and number of cached tags: a tag's weight depends on the vocabulary alone,
        and tags are only ever appended."""
        key = (vocabulary.digest, len(self.index))
        if self._weights is None or self._weights[0] != key:
            weights = tag_weights(list(self.index), vocabulary)
            weights.flags.writeable = False
            self._weights = (key, weights)
        return self._weights[1]

    def new_frame(self) -> pl.DataFrame:
        """The vectors encoded, or taken from the bundle, since loading: to append to the cache table."""
        rows = self.new_rows
        return pl.DataFrame(
            {"embedder": [self.embedder.id] * len(rows), "tag": [t for t, _ in rows], "vector": [v.tolist() for _, v in rows]},
            schema=TAG_VECTOR_SCHEMA,
        )


TAG_VECTORS = ("features", "tag_vectors")
BUNDLED_TAG_VECTORS = Path(__file__).resolve().parents[2] / "data" / "tag_vectors"


def bundled_tag_vectors_path(embedder_id: str, folder: Path = BUNDLED_TAG_VECTORS) -> Path:
    return folder / f"{embedder_id}.parquet"


def bundled_tag_vectors(embedder_id: str, folder: Path = BUNDLED_TAG_VECTORS) -> pl.DataFrame | None:
    """The vectors shipped with the package for the embedded vocabulary's own tags (None for an embedder without them).

    They are what the embedder computes (``write_bundled_tag_vectors``; a test re-encodes a
    sample and compares): with them, a lake whose records use only those tags (the demo, the
    benchmark) never loads the text model.
    """
    path = bundled_tag_vectors_path(embedder_id, folder)
    if not path.exists():
        return None
    return pl.read_parquet(path).select(pl.lit(embedder_id).alias("embedder"), "tag", "vector").cast(TAG_VECTOR_SCHEMA)  # type: ignore[arg-type]


def write_bundled_tag_vectors(embedder: Embedder, tags: list[str], folder: Path = BUNDLED_TAG_VECTORS) -> Path:
    """Encode ``tags`` (in sorted order, as the cache encodes what it misses) and write them for ``bundled_tag_vectors``."""
    ordered = sorted(set(tags))
    folder.mkdir(parents=True, exist_ok=True)
    path = bundled_tag_vectors_path(embedder.id, folder)
    pl.DataFrame({"tag": ordered, "vector": list_vector_column(embedder.encode(ordered))}).write_parquet(path, compression="zstd")
    return path


def load_tag_cache(table, embedder: Embedder) -> TagVectorCache:
    """The cached vectors of one embedder (``table``: a lake, or an asset's declared lake that declares the cache).

    The lake's rows come first; the bundled vectors of the embedded vocabulary fill in the tags the lake lacks
    (and ``new_frame`` then holds those a record used, so the lake's table holds every vector its records use).
    """
    known = table.scan(*TAG_VECTORS).filter(pl.col("embedder") == embedder.id).collect() if table.exists(*TAG_VECTORS) else None
    return TagVectorCache(embedder, known, bundled_tag_vectors(embedder.id))


def compact_tag_cache(lake, stage: str, table: str) -> int:
    """Rewrite the append-only tag-vector cache with one row per (embedder, tag); returns rows removed.

    The overwrite is made against the version read, so it replaces only the files of that
    version: vectors appended meanwhile by a running partition are kept.
    """
    from deltalake import DeltaTable, write_deltalake

    pinned = DeltaTable(lake.uri(stage, table), storage_options=lake.storage_options or None)
    df = pl.read_delta(lake.uri(stage, table), version=pinned.version(), storage_options=lake.storage_options or None)
    unique = df.unique(["embedder", "tag"], keep="first", maintain_order=True)
    if unique.height == df.height:
        return 0
    write_deltalake(pinned, unique.to_arrow(), mode="overwrite")
    return df.height - unique.height


def pool(tag_lists: pl.Series, cache: TagVectorCache, vocabulary: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of tag vectors per record (zeros for a record without tags), and the weight sums."""
    n = tag_lists.len()
    long = pl.DataFrame({"ftags": tag_lists}).with_row_index("row").explode("ftags").drop_nulls("ftags")
    tags = long.get_column("ftags")
    cache.ensure(tags)
    cols = cache.rows(tags)
    vals = cache.weights(vocabulary)[cols]  # one weight per cached tag, as masking uses
    rows = long.get_column("row").to_numpy()
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n, max(1, cache.matrix.shape[0])))
    sums = np.asarray(m.sum(axis=1)).ravel().astype(np.float32)
    dim = cache.embedder.dim if cache.matrix.size == 0 else cache.matrix.shape[1]
    pooled = np.asarray((m @ cache.matrix) if cache.matrix.size else np.zeros((n, dim), dtype=np.float32), dtype=np.float32)
    np.divide(pooled, np.maximum(sums, 1e-12)[:, None], out=pooled)  # in place: the product is a new array
    return pooled, sums


def encode_full(tag_lists: pl.Series, embedder: Embedder) -> np.ndarray:
    """Each record's whole tag list encoded as one text (slower; an option beside pooling)."""
    return embedder.encode([", ".join(t).replace("_", " ") for t in tag_lists.to_list()])

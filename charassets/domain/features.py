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

import numpy as np
import polars as pl
import scipy.sparse as sp

from charassets.domain.embedders import Embedder
from charassets.domain.vocabulary import Vocabulary

POOLED_CATEGORIES = ("general", "character", "copyright", "unknown_tags")
TAG_VECTOR_SCHEMA = {"embedder": pl.String, "tag": pl.String, "vector": pl.List(pl.Float32)}


def vector_matrix(vectors: pl.Series) -> np.ndarray:
    """A list<float32> column as a (rows, dim) float32 matrix, without going through Python objects."""
    if vectors.len() == 0:
        return np.zeros((0, 0), dtype=np.float32)
    width = vectors.list.len().max()
    return np.ascontiguousarray(vectors.list.to_array(width).to_numpy(), dtype=np.float32)


def feature_tags(clean: pl.DataFrame) -> pl.Series:
    """The tags a record is described by (artist and meta tags say nothing about the character)."""
    return clean.select(pl.concat_list(*POOLED_CATEGORIES).list.unique(maintain_order=True).alias("ftags")).to_series()


def content_hashes(tags: pl.Series, embedder_id: str, mode: str) -> pl.Series:
    return tags.list.join(",").map_elements(
        lambda s: hashlib.blake2b(f"{embedder_id}|{mode}|{s}".encode(), digest_size=12).hexdigest(), return_dtype=pl.String
    )


def tag_weights(tags: list[str], vocabulary: Vocabulary) -> np.ndarray:
    """IDF-like weights from vocabulary post counts (frequent tags such as ``1girl`` weigh little).

    Tags without a count (unknown, or a vocabulary without counts) weigh like the rarest known tag,
    or 1.0 when no count is known at all.
    """
    counts = dict(zip(vocabulary.tags.get_column("tag").to_list(), vocabulary.tags.get_column("post_count").to_list(), strict=True))
    top = max(counts.values(), default=0)
    if top <= 0:
        return np.ones(len(tags), dtype=np.float32)
    w = [math.log(1 + top / (counts[t] + 1)) if counts.get(t, 0) > 0 else math.log(1 + top) for t in tags]
    return np.asarray(w, dtype=np.float32)


class TagVectorCache:
    """Vectors of distinct tags for one embedder; ``missing`` says which still need encoding."""

    def __init__(self, embedder: Embedder, known: pl.DataFrame | None = None):
        self.embedder = embedder
        self.index: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.new_rows: list[tuple[str, np.ndarray]] = []
        if known is not None and known.height:
            known = known.filter(pl.col("embedder") == embedder.id).unique("tag", keep="first")
            self._add(known.get_column("tag").to_list(), vector_matrix(known.get_column("vector")), new=False)

    def _add(self, tags: list[str], vectors: np.ndarray, new: bool) -> None:
        if not tags:
            return
        start = len(self.index)
        self.index.update({t: start + i for i, t in enumerate(tags)})
        self.matrix = vectors if self.matrix.size == 0 else np.vstack([self.matrix, vectors])
        if new:
            self.new_rows += list(zip(tags, vectors, strict=True))

    def ensure(self, tags: list[str]) -> int:
        """Encode the tags not cached yet; returns how many were encoded."""
        missing = sorted({t for t in tags if t not in self.index})
        if missing:
            self._add(missing, self.embedder.encode(missing), new=True)
        return len(missing)

    def new_frame(self) -> pl.DataFrame:
        """The vectors encoded since loading, to append to the cache table."""
        rows = self.new_rows
        return pl.DataFrame(
            {"embedder": [self.embedder.id] * len(rows), "tag": [t for t, _ in rows], "vector": [v.tolist() for _, v in rows]},
            schema=TAG_VECTOR_SCHEMA,
        )


def pool(tag_lists: pl.Series, cache: TagVectorCache, vocabulary: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of tag vectors per record (zeros for a record without tags), and the weight sums."""
    n = tag_lists.len()
    long = pl.DataFrame({"ftags": tag_lists}).with_row_index("row").explode("ftags").drop_nulls("ftags")
    tags = long.get_column("ftags").to_list()
    cache.ensure(tags)
    distinct = sorted(set(tags))
    weight = dict(zip(distinct, tag_weights(distinct, vocabulary).tolist(), strict=True))
    cols = np.fromiter((cache.index[t] for t in tags), dtype=np.int64, count=len(tags))
    vals = np.fromiter((weight[t] for t in tags), dtype=np.float32, count=len(tags))
    rows = long.get_column("row").to_numpy()
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n, max(1, cache.matrix.shape[0])))
    sums = np.asarray(m.sum(axis=1)).ravel().astype(np.float32)
    dim = cache.embedder.dim if cache.matrix.size == 0 else cache.matrix.shape[1]
    pooled = (m @ cache.matrix) if cache.matrix.size else np.zeros((n, dim), dtype=np.float32)
    pooled = np.asarray(pooled, dtype=np.float32) / np.maximum(sums, 1e-12)[:, None]
    return pooled.astype(np.float32), sums


def encode_full(tag_lists: pl.Series, embedder: Embedder) -> np.ndarray:
    """Each record's whole tag list encoded as one text (slower; an option beside pooling)."""
    return embedder.encode([", ".join(t).replace("_", " ") for t in tag_lists.to_list()])

"""Near-duplicate images: clusters from perceptual hashes and embeddings, without comparing all pairs.

Hashes: a multi-index hash over the 64 pHash bits (faiss ``IndexBinaryMultiHash``, four
16-bit substrings; by the pigeonhole principle two hashes within ``max_hamming`` bits
agree on a substring up to ``max_hamming // 4`` flipped bits, which are probed), then the
exact Hamming distance on those candidates only. Embeddings, when given: approximate
nearest neighbours (faiss HNSW) with a cosine threshold. Measured on uniformly random
hashes (the worst case: real near-duplicates collide more, unrelated images less):
0.4 s for 100k, 2.2 s for 400k, 14.8 s for 1.6M at ``max_hamming=3``. The kept pairs form
a graph whose connected components are the clusters; a cluster's id is its first member's
position.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def hash_codes(phashes: list[str]) -> np.ndarray:
    """Hex pHashes (64 bits) as (n, 8) uint8 codes, most significant byte first."""
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)


def hash_pairs(phashes: list[str], max_hamming: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of hashes at most ``max_hamming`` bits apart (self pairs included)."""
    import faiss

    codes = hash_codes(phashes)
    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.nflip = max_hamming // 4
    index.add(codes)
    lims, _, found = index.range_search(codes, max_hamming + 1)  # radius is exclusive
    return np.repeat(np.arange(len(phashes)), np.diff(lims).astype(np.int64)), found.astype(np.int64)


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, index) of each row's ``k`` nearest rows by inner product (itself excluded where found)."""
    import faiss

    n, d = x.shape
    k = min(k + 1, n)
    index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = max(64, 2 * k)
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    return index.search(np.ascontiguousarray(x, dtype=np.float32), k)


def near_duplicate_clusters(
    phashes: list[str], embeddings: np.ndarray | None = None, k: int = 16, max_hamming: int = 3, min_cosine: float = 0.95
) -> np.ndarray:
    """Cluster index (the position of the cluster's first member) for every image."""
    n = len(phashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    r0, c0 = hash_pairs(phashes, max_hamming)
    rows, cols = [np.arange(n), r0], [np.arange(n), c0]
    if embeddings is not None:
        e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        sim, idx = _neighbours(e, k)
        keep = (idx >= 0) & (sim >= min_cosine)
        rows.append(np.repeat(np.arange(n), idx.shape[1])[keep.ravel()])
        cols.append(idx.ravel()[keep.ravel()])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


def deduplicated(images: pl.DataFrame, cluster_col: str = "cluster_id") -> pl.DataFrame:
    """One image per cluster: the largest (width x height), then the first."""
    return (
        images.with_row_index("_order")
        .sort(pl.col("width") * pl.col("height"), "_order", descending=[True, False])
        .unique(cluster_col, keep="first")
        .sort("_order")
        .drop("_order")
    )

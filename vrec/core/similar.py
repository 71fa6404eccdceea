"""Visual "more like this": exact and approximate nearest neighbours of L2-normalised
image embeddings (cosine similarity), and the recall of the approximation.

Pure numpy (FAISS for the approximate index); ``vrec.spark.similar`` runs it over the
catalog and checks the recall floor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.core.topk import topk_blocked


def neighbour_rows(ids: np.ndarray, rows: np.ndarray, idx: np.ndarray, sc: np.ndarray,
                   k: int) -> pd.DataFrame:
    """item_similar rows (item_id, rank, similar_item_id, similarity) for query ``rows``
    given their top-k neighbour indices and scores (-1 pads are dropped)."""
    keep = idx.ravel() >= 0
    return pd.DataFrame({
        C.ITEM_ID: np.repeat(ids[rows], k)[keep],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))[keep],
        "similar_item_id": ids[idx.ravel()[keep]],
        "similarity": np.clip(sc.ravel()[keep].astype(float), -1.0, 1.0)})


def _pool(n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(the rows that may be neighbours, each row's position among them or -1)."""
    pool = np.arange(n) if allowed is None else np.flatnonzero(allowed)
    local = np.full(n, -1, dtype=np.int64)
    local[pool] = np.arange(len(pool))
    return pool, local


def exact_topk(emb: np.ndarray, rows: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k neighbours of ``emb[rows]`` among all rows, or the ``allowed`` ones
    (self excluded)."""
    pool, local = _pool(len(emb), allowed)
    # unit vectors: no norm to prune by, the unpruned search is the faster exact one
    idx, sc = topk_blocked(emb[rows], emb[pool], k,
                           exclude=[local[[r]][local[[r]] >= 0] for r in rows], prune=False)
    return np.where(idx >= 0, pool[np.maximum(idx, 0)], -1), sc


def faiss_topk(emb: np.ndarray, k: int, *, m: int = 32, ef_search: int = 128,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k neighbours (self excluded) among all rows, or the ``allowed``
    ones, by inner product with a FAISS HNSW index; for L2-normalised rows that is cosine
    similarity."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    pool, _ = _pool(len(x), allowed)
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = max(ef_search, k + 1)
    index.add(np.ascontiguousarray(x[pool]))
    sc, idx = index.search(x, k + 1)
    idx = np.where(idx >= 0, pool[np.maximum(idx, 0)], -1)
    out_i = np.full((len(x), k), -1, dtype=np.int64)
    out_s = np.full((len(x), k), -np.inf, dtype=np.float32)
    for r in range(len(x)):
        keep = (idx[r] != r) & (idx[r] >= 0)
        ii, ss = idx[r][keep][:k], sc[r][keep][:k]
        out_i[r, :len(ii)], out_s[r, :len(ss)] = ii, ss
    return out_i, out_s


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean share of each row's exact top-k found in its approximate top-k."""
    hits = [len(set(e[e >= 0]) & set(a[a >= 0])) / max(1, (e >= 0).sum())
            for e, a in zip(exact, approx)]
    return float(np.mean(hits)) if hits else 1.0

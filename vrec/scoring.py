"""score_users: all-user top-N against all items, in Spark, seen items excluded.

The item factors and a CSR of each user's seen items are broadcast; ``mapInPandas``
runs over partitions of the user factors and scores ``block`` users at a time with one
float32 matrix product into a reused buffer, then selects the top N per row.

Top-N selection (the expensive part, not the product): items are cut into G groups of
g columns; the per-group maxima give each row a threshold t = the N-th largest group
maximum. At least N scores are >= t, so the top N all are, and they can only lie in
groups whose maximum is >= t (about N of the G groups). Only those groups are compared
against t, and the few survivors are sorted. This reads the score block about twice,
where ``argpartition`` costs ~7x the product (benchmarks/README.md).

Memory per scoring task, in bytes, for I items, f factors, B users per block, S seen
pairs and U users in the partition::

    4·I·f (item factors) + 4·B·I (score block) + ~1·B·I/g (masks) + 12·S (seen CSR)
    + 4·U·f (the partition's user factors)

``B`` is ``recs.block_size`` capped so that ``4·B·I <= recs.block_memory_mb``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C

GROUP_COLUMNS = 256  # target columns per group for the threshold selection


def _as_csr(exclude, n: int, m: int) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    if sp.issparse(exclude):
        return sp.csr_matrix(exclude)
    rows, cols = [], []
    for r, ex in enumerate(exclude):
        if ex is not None and len(ex):
            ex = np.asarray(ex, dtype=np.int64)
            rows.append(np.full(len(ex), r, dtype=np.int64))
            cols.append(ex)
    if not rows:
        return None
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, m))


def _select_threshold(block: np.ndarray, m: int, k: int, groups: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, score) of candidates that contain every row's top k (see module doc).

    ``block`` is (b, groups * g) with columns >= m already set to -inf.
    """
    b, width = block.shape
    g = width // groups
    b3 = block.reshape(b, groups, g)
    gmax = b3.max(axis=2)
    t = np.partition(gmax, groups - k, axis=1)[:, groups - k]
    gf = np.flatnonzero(gmax >= t[:, None])
    gr, gg = np.divmod(gf, groups)
    vals = b3[gr, gg]
    hit = np.flatnonzero(vals >= t[gr][:, None])
    gi, off = np.divmod(hit, g)
    return gr[gi], gg[gi] * g + off, vals.ravel()[hit]


def _select_partition(block: np.ndarray, m: int, k: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, score) of each row's top k by argpartition (small catalogs)."""
    b = len(block)
    s = block[:, :m]
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (b, 1))
    rows = np.repeat(np.arange(b), part.shape[1])
    cols = part.ravel()
    return rows, cols, s[rows, cols]


def topk_blocked(queries: np.ndarray, items: np.ndarray, k: int, *,
                 exclude: Sequence[np.ndarray] | sp.spmatrix | None = None,
                 block_size: int = 512, block_memory_mb: int = 256
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores by inner product for each query row.

    Parameters
    ----------
    queries : (n, f) array
    items : (m, f) array
    k : int
        Results per row; rows with fewer eligible items are padded with index -1 and
        score -inf.
    exclude : per-row int arrays or an (n, m) sparse matrix, optional
        Item indices that must not be returned for each query row.
    block_size, block_memory_mb : int
        Query rows per matrix product, capped so one float32 score block fits the budget.

    Returns
    -------
    (idx, scores) : ((n, k) int64, (n, k) float32), each row sorted by descending score,
    ties broken by the lower item index (the same order as a stable argsort).
    """
    n, m = len(queries), len(items)
    idx_out = np.full((n, k), -1, dtype=np.int64)
    sc_out = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or m == 0 or k == 0:
        return idx_out, sc_out
    k_eff = min(k, m)
    groups = max(4 * k_eff, -(-m // GROUP_COLUMNS))
    use_threshold = m >= 8 * k_eff and groups <= m
    width = groups * -(-m // groups) if use_threshold else m
    it = np.zeros((width, items.shape[1]), dtype=np.float32)
    it[:m] = items
    bs = max(1, min(block_size, (block_memory_mb << 20) // max(1, 4 * width)))
    buf = np.empty((min(bs, n), width), dtype=np.float32)
    excl = _as_csr(exclude, n, m)
    for start in range(0, n, bs):
        q = np.ascontiguousarray(queries[start:start + bs], dtype=np.float32)
        b = len(q)
        blk = buf[:b]
        np.matmul(q, it.T, out=blk)
        blk[:, m:] = -np.inf
        if excl is not None:
            sub = excl[start:start + b]
            blk[np.repeat(np.arange(b), np.diff(sub.indptr)), sub.indices] = -np.inf
        if use_threshold:
            r, c, v = _select_threshold(blk, m, k_eff, groups)
        else:
            r, c, v = _select_partition(blk, m, k_eff)
        keep = np.isfinite(v)
        r, c, v = r[keep], c[keep], v[keep]
        order = np.lexsort((c, -v, r))
        r, c, v = r[order], c[order], v[order]
        pos = np.arange(len(r)) - np.searchsorted(r, np.arange(b))[r]
        keep = pos < k_eff
        idx_out[start + r[keep], pos[keep]] = c[keep]
        sc_out[start + r[keep], pos[keep]] = v[keep]
    return idx_out, sc_out


def seen_matrix(user_index: pd.Series, item_index: pd.Series, n_users: int,
                n_items: int) -> sp.csr_matrix:
    """users x items CSR (int8 ones) from parallel arrays of user and item indices."""
    u = np.asarray(user_index, dtype=np.int64)
    i = np.asarray(item_index, dtype=np.int64)
    mat = sp.csr_matrix((np.ones(len(u), np.int8), (u, i)), shape=(n_users, n_items))
    mat.sum_duplicates()
    return mat


def score_partition(frames: Iterator[pd.DataFrame], item_factors: np.ndarray,
                    item_ids: np.ndarray, seen: sp.csr_matrix | None, n: int,
                    block_size: int, block_memory_mb: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (uidx, user_id, factors) -> (user_id, rank, item_id, cf_score)."""
    for df in frames:
        if df.empty:
            continue
        q = np.stack(df["factors"].to_numpy()).astype(np.float32, copy=False)
        ex = seen[df["uidx"].to_numpy()] if seen is not None else None
        idx, sc = topk_blocked(q, item_factors, n, exclude=ex, block_size=block_size,
                               block_memory_mb=block_memory_mb)
        users = np.repeat(df[C.USER_ID].to_numpy(), n)
        ranks = np.tile(np.arange(1, n + 1, dtype=np.int32), len(df))
        flat = idx.ravel()
        keep = flat >= 0
        yield pd.DataFrame({C.USER_ID: users[keep], "rank": ranks[keep],
                            C.ITEM_ID: item_ids[flat[keep]], "cf_score": sc.ravel()[keep]})


def seen_pairs(interactions, seen_event_types: Sequence[str]):
    """Spark DataFrame (user_id, item_id) of pairs whose events include a "seen" type.

    ``interactions`` without an ``event_types`` column count every pair as seen.
    """
    from pyspark.sql import functions as F

    if "event_types" not in interactions.columns:
        return interactions.select(C.USER_ID, C.ITEM_ID)
    types = F.array(*[F.lit(t) for t in seen_event_types]) if seen_event_types else None
    if types is None:
        return interactions.where(F.lit(False)).select(C.USER_ID, C.ITEM_ID)
    return interactions.where(F.arrays_overlap("event_types", types)).select(C.USER_ID, C.ITEM_ID)


def score_all_users(spark, model, interactions, *, n: int, block_size: int = 512,
                    block_memory_mb: int = 256,
                    seen_event_types: Sequence[str] | None = None):
    """All-user top-``n`` CF candidates as a Spark DataFrame, seen items excluded.

    ``interactions`` is the run's Spark DataFrame (user_id, item_id[, event_types]); a pair
    is seen when its event types meet ``seen_event_types`` (None: every pair is seen).
    Output columns: user_id, rank (1..n), item_id, cf_score.
    """
    pairs = interactions.select(C.USER_ID, C.ITEM_ID) if seen_event_types is None else \
        seen_pairs(interactions, seen_event_types)
    pairs = pairs.toPandas()
    user_ids = model.user_ids.astype(str)
    item_ids = model.item_ids.astype(str)
    u = pd.Index(user_ids).get_indexer(pairs[C.USER_ID].astype(str))
    i = pd.Index(item_ids).get_indexer(pairs[C.ITEM_ID].astype(str))
    ok = (u >= 0) & (i >= 0)
    seen = seen_matrix(u[ok], i[ok], len(user_ids), len(item_ids))
    users = spark.createDataFrame(pd.DataFrame({
        "uidx": np.arange(len(user_ids), dtype=np.int32), C.USER_ID: user_ids,
        "factors": list(np.asarray(model.user_factors, dtype=np.float32))}),
        schema="uidx int, user_id string, factors array<float>")
    parts = max(1, spark.sparkContext.defaultParallelism)
    users = users.repartition(parts)
    b_items = spark.sparkContext.broadcast(np.ascontiguousarray(model.item_factors, dtype=np.float32))
    b_seen = spark.sparkContext.broadcast(seen)

    def _fn(it):
        return score_partition(it, b_items.value, item_ids, b_seen.value, n, block_size,
                               block_memory_mb)

    return users.mapInPandas(_fn, "user_id string, rank int, item_id string, cf_score float")

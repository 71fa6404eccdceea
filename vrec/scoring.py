"""score_users: all-user top-N against all items, in Spark, seen items excluded.

Item factors are broadcast; ``mapInPandas`` over user partitions computes blocked
float32 products (``block_size`` users at a time) and an ``argpartition`` top-N per row.
Memory per task is about ``4 * (items * factors + block_size * items)`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from vrec import columns as C


def topk_blocked(queries: np.ndarray, items: np.ndarray, k: int, *,
                 exclude: Sequence[np.ndarray] | None = None, block_size: int = 1024
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores by inner product for each query row.

    Parameters
    ----------
    queries : (n, f) array
    items : (m, f) array
    k : int
        Results per row; rows with fewer eligible items are padded with index -1 and
        score -inf.
    exclude : sequence of int arrays, optional
        Per query row, item indices that must not be returned.
    block_size : int
        Query rows per matrix product.

    Returns
    -------
    (idx, scores) : ((n, k) int64, (n, k) float32), each row sorted by descending score.
    """
    n, m = len(queries), len(items)
    k_eff = min(k, m)
    idx_out = np.full((n, k), -1, dtype=np.int64)
    sc_out = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or m == 0 or k == 0:
        return idx_out, sc_out
    it = np.ascontiguousarray(items, dtype=np.float32)
    for start in range(0, n, block_size):
        q = np.ascontiguousarray(queries[start:start + block_size], dtype=np.float32)
        s = q @ it.T
        if exclude is not None:
            for r in range(len(q)):
                ex = exclude[start + r]
                if ex is not None and len(ex):
                    s[r, np.asarray(ex, dtype=np.int64)] = -np.inf
        if k_eff < m:
            part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff]
        else:
            part = np.tile(np.arange(m), (len(q), 1))
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        tops = np.take_along_axis(ps, order, axis=1)
        top = np.where(np.isfinite(tops), top, -1)
        idx_out[start:start + len(q), :k_eff] = top
        sc_out[start:start + len(q), :k_eff] = tops
    return idx_out, sc_out


def score_partition(frames: Iterator[pd.DataFrame], item_factors: np.ndarray,
                    item_ids: np.ndarray, n: int, block_size: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (user_id, factors, seen) -> (user_id, rank, item_id, cf_score)."""
    for df in frames:
        if df.empty:
            continue
        q = np.stack(df["factors"].to_numpy()).astype(np.float32)
        seen = [np.asarray(s if s is not None else [], dtype=np.int64) for s in df["seen"]]
        idx, sc = topk_blocked(q, item_factors, n, exclude=seen, block_size=block_size)
        users = np.repeat(df[C.USER_ID].to_numpy(), n)
        ranks = np.tile(np.arange(1, n + 1), len(df))
        flat = idx.ravel()
        keep = flat >= 0
        yield pd.DataFrame({C.USER_ID: users[keep], "rank": ranks[keep].astype(np.int32),
                            C.ITEM_ID: item_ids[flat[keep]], "cf_score": sc.ravel()[keep]})


def score_all_users(spark, model, interactions, *, n: int, block_size: int):
    """All-user top-``n`` CF candidates as a Spark DataFrame, interacted items excluded.

    ``interactions`` is the run's Spark DataFrame (user_id, item_id, ...); every pair in it
    counts as seen.
    """
    from pyspark.sql import functions as F

    item_index = {str(i): j for j, i in enumerate(model.item_ids)}
    idx_map = spark.createDataFrame(
        pd.DataFrame({C.ITEM_ID: list(item_index), "iidx": list(item_index.values())}))
    seen = (interactions.join(idx_map, C.ITEM_ID).groupBy(C.USER_ID)
            .agg(F.collect_list("iidx").alias("seen")))
    users = spark.createDataFrame(pd.DataFrame({
        C.USER_ID: model.user_ids.astype(str),
        "factors": list(model.user_factors.astype(np.float32))}),
        schema="user_id string, factors array<float>")
    parts = max(1, spark.sparkContext.defaultParallelism)
    joined = users.join(seen, C.USER_ID, "left").repartition(parts)
    bf = spark.sparkContext.broadcast(model.item_factors.astype(np.float32))
    ids = model.item_ids.astype(str)

    def _fn(it):
        return score_partition(it, bf.value, ids, n, block_size)

    return joined.mapInPandas(
        _fn, "user_id string, rank int, item_id string, cf_score float")

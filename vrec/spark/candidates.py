"""score_users: all-user top-N against all items, in Spark, seen items excluded.

A CSR of each user's seen items is broadcast; ``mapInPandas`` runs over ranges of user
indices, memory-maps the saved model's factors, and scores ``block`` users at a time with
one float32 matrix product into a reused buffer, then selects the top N per row.

Top-N selection is exact and avoids most of the work (see :func:`topk_blocked`): items
are scored in descending norm order; a head chunk gets a threshold selection (items cut
into G groups of g columns; the N-th largest group maximum t bounds the top N from below,
and only groups whose maximum is >= t are searched); later chunks are multiplied only for
rows whose Cauchy-Schwarz bound can still reach their current N-th score. Plain
``argpartition`` costs 5-14x the product; this costs 0.4-1x of it (benchmarks/README.md).

Memory per scoring task, in bytes, for I items, f factors, B users per block, S seen
pairs::

    8·I·f (factors + a norm-sorted copy) + 8·B·I/8 (head block + one chunk) + 5·S (seen CSR)
    + 4·R·f (one Arrow batch of R users' factors; R = 10,000 by default)

``B`` is ``recs.block_size`` capped so that one score block fits ``recs.block_memory_mb``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C

GROUP_COLUMNS = 256  # target columns per group for the threshold selection
HEAD_SHARE = 8  # the head chunk (scored for every row) is 1/HEAD_SHARE of the items ...
HEAD_MIN_PER_K = 64  # ... and at least this many items per requested result
TAIL_CHUNKS = 8  # the rest is scored in this many chunks, each only for rows that can gain


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


def _select_threshold(block: np.ndarray, k: int, groups: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, score) of candidates that contain every row's top k (see module doc).

    ``block`` is (b, groups * g); padding columns are already -inf.
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


def _rank_rows(b: int, k: int, r: np.ndarray, c: np.ndarray, v: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per row (0..b-1) the k best (c, v) by descending v, ties by lower c; -1/-inf pads."""
    keep = np.isfinite(v)
    r, c, v = r[keep], c[keep], v[keep]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    pos = np.arange(len(r)) - np.searchsorted(r, np.arange(b))[r]
    keep = pos < k
    out_c = np.full((b, k), -1, dtype=np.int64)
    out_v = np.full((b, k), -np.inf, dtype=np.float32)
    out_c[r[keep], pos[keep]] = c[keep]
    out_v[r[keep], pos[keep]] = v[keep]
    return out_c, out_v


def topk_blocked(queries: np.ndarray, items: np.ndarray, k: int, *,
                 exclude: Sequence[np.ndarray] | sp.spmatrix | None = None,
                 block_size: int = 512, block_memory_mb: int = 256, prune: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores by inner product for each query row (exact).

    Items are scored in descending order of their norm: first a head chunk (1/8 of the
    items, at least 64·k) for every row, with the threshold selection; then the remaining
    items chunk by chunk, only for rows whose bound ``|q| · max|item in chunk|`` can still
    reach their current k-th best score (Cauchy-Schwarz, so nothing that could enter the
    top k is skipped). ALS item norms follow popularity, so most of the long tail is
    never multiplied. ``prune=False`` scores every item for every row.

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
    items = np.asarray(items, dtype=np.float32)
    norms = np.linalg.norm(items.astype(np.float64), axis=1)
    perm = np.argsort(-norms, kind="stable") if prune else np.arange(m)
    sorted_items = np.ascontiguousarray(items[perm])
    sorted_norms = norms[perm]
    c0 = min(m, max(HEAD_MIN_PER_K * k_eff, m // HEAD_SHARE)) if prune else m
    groups = max(4 * k_eff, -(-c0 // GROUP_COLUMNS))
    use_threshold = c0 >= 8 * k_eff and groups <= c0
    width = groups * -(-c0 // groups) if use_threshold else c0
    head = np.zeros((width, items.shape[1]), dtype=np.float32)
    head[:c0] = sorted_items[:c0]
    step = max(1024, -(-(m - c0) // TAIL_CHUNKS))
    bs = max(1, min(block_size, (block_memory_mb << 20) // max(1, 4 * max(width, step))))
    buf = np.empty((min(bs, n), width), dtype=np.float32)
    excl = _as_csr(exclude, n, m)
    if excl is not None:  # exclusions as positions in the norm order
        inv = np.empty(m, dtype=np.int64)
        inv[perm] = np.arange(m)
        excl = sp.csr_matrix((excl.data, inv[excl.indices], excl.indptr), shape=excl.shape)
    for start in range(0, n, bs):
        q = np.ascontiguousarray(queries[start:start + bs], dtype=np.float32)
        b = len(q)
        qn = np.linalg.norm(q.astype(np.float64), axis=1)
        blk = buf[:b]
        np.matmul(q, head.T, out=blk)
        blk[:, c0:] = -np.inf
        er = ec = None
        if excl is not None:
            sub = excl[start:start + b]
            er, ec = np.repeat(np.arange(b), np.diff(sub.indptr)), sub.indices
            h = ec < c0
            blk[er[h], ec[h]] = -np.inf
        if use_threshold:
            r, c, v = _select_threshold(blk, k_eff, groups)
        else:
            r, c, v = _select_partition(blk, c0, k_eff)
        fin = np.isfinite(v)  # padding columns only ever carry -inf
        best_c, best_v = _rank_rows(b, k_eff, r[fin], perm[c[fin]], v[fin])
        a = c0
        while a < m:
            e = min(m, a + step)
            t = best_v[:, -1].astype(np.float64)
            # float32 products may exceed the exact bound by rounding: keep a margin
            rows = np.flatnonzero(qn * sorted_norms[a] * (1 + 1e-4) + 1e-6 >= t)
            if not len(rows):
                break
            s = q[rows] @ sorted_items[a:e].T
            if er is not None:
                where = np.full(b, -1, dtype=np.int64)
                where[rows] = np.arange(len(rows))
                x = (ec >= a) & (ec < e) & (where[er] >= 0)
                s[where[er[x]], ec[x] - a] = -np.inf
            hit = np.flatnonzero(s >= t[rows][:, None].astype(np.float32))
            if len(hit):
                hr, hc = np.divmod(hit, e - a)
                touched = np.unique(hr)
                local = np.full(len(rows), -1, dtype=np.int64)
                local[touched] = np.arange(len(touched))
                tr = rows[touched]
                pr = np.repeat(np.arange(len(touched)), k_eff)
                cc, vv = _rank_rows(
                    len(touched), k_eff,
                    np.concatenate([pr, local[hr]]),
                    np.concatenate([best_c[tr].ravel(), perm[hc + a]]),
                    np.concatenate([best_v[tr].ravel(), s.ravel()[hit]]))
                best_c[tr], best_v[tr] = cc, vv
            a = e
        idx_out[start:start + b, :k_eff] = best_c
        sc_out[start:start + b, :k_eff] = best_v
    return idx_out, sc_out


def seen_matrix(user_index, item_index, n_users: int, n_items: int) -> sp.csr_matrix:
    """users x items CSR (int8 ones) from parallel arrays of user and item indices."""
    u = np.asarray(user_index, dtype=np.int64)
    i = np.asarray(item_index, dtype=np.int64)
    mat = sp.csr_matrix((np.ones(len(u), np.int8), (u, i)), shape=(n_users, n_items))
    mat.sum_duplicates()
    return mat


def seen_for_model(interactions_path: str | Path, user_ids: np.ndarray, item_ids: np.ndarray,
                   seen_event_types: Sequence[str] | None = None) -> sp.csr_matrix:
    """The model's users x items CSR of seen pairs, read on the driver with pyarrow.

    A pair is seen when its ``event_types`` meet ``seen_event_types`` (None, or a folder
    without ``event_types``: every pair). Pairs of users or items the model lacks are
    ignored (they cannot be recommended anyway).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dset = ds.dataset(str(interactions_path), format="parquet")
    cols = [C.USER_ID, C.ITEM_ID]
    by_type = seen_event_types is not None and "event_types" in dset.schema.names
    table = dset.to_table(columns=cols + (["event_types"] if by_type else []))
    if by_type:
        et = table.column("event_types").combine_chunks()
        hit = pc.is_in(pc.list_flatten(et), value_set=pa.array(list(seen_event_types), pa.string()))
        parents = pc.list_parent_indices(et).to_numpy()
        rows = np.unique(parents[hit.to_numpy(zero_copy_only=False)])
        table = table.take(pa.array(rows, pa.int64()))
    u = pc.fill_null(pc.index_in(table.column(C.USER_ID), value_set=pa.array(
        np.asarray(user_ids).astype(str))), -1).to_numpy()
    i = pc.fill_null(pc.index_in(table.column(C.ITEM_ID), value_set=pa.array(
        np.asarray(item_ids).astype(str))), -1).to_numpy()
    ok = (u >= 0) & (i >= 0)
    return seen_matrix(u[ok], i[ok], len(user_ids), len(item_ids))


def score_partition(frames: Iterator[pd.DataFrame], model_dir: str, seen: sp.csr_matrix | None,
                    n: int, block_size: int, block_memory_mb: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: batches of user indices -> (user_id, rank, item_id, cf_score).

    Factors and ids are memory-mapped from the saved model (one read per task, shared
    through the page cache), so only indices and results cross the JVM boundary.
    """
    from threadpoolctl import threadpool_limits

    from vrec.core.cf import CFModel

    # Spark runs one task per core: one BLAS thread each, not cores x cores threads
    with threadpool_limits(1, "blas"):
        yield from _score_frames(frames, CFModel.load(model_dir, mmap=True), seen, n,
                                 block_size, block_memory_mb)


def _score_frames(frames, model, seen, n, block_size, block_memory_mb):
    items = np.asarray(model.item_factors)
    item_ids = np.asarray(model.item_ids)
    for df in frames:
        if df.empty:
            continue
        uidx = df["id"].to_numpy()
        q = np.asarray(model.user_factors[uidx])
        ex = seen[uidx] if seen is not None else None
        idx, sc = topk_blocked(q, items, n, exclude=ex, block_size=block_size,
                               block_memory_mb=block_memory_mb)
        flat = idx.ravel()
        keep = flat >= 0
        users = np.repeat(np.asarray(model.user_ids[uidx]), n)[keep]
        ranks = np.tile(np.arange(1, n + 1, dtype=np.int32), len(df))[keep]
        yield pd.DataFrame({C.USER_ID: users, "rank": ranks, C.ITEM_ID: item_ids[flat[keep]],
                            "cf_score": sc.ravel()[keep]})


def score_all_users(spark, model_dir: str | Path, interactions_path: str | Path, *, n: int,
                    block_size: int = 512, block_memory_mb: int = 256,
                    seen_event_types: Sequence[str] | None = None, partitions: int | None = None):
    """All-user top-``n`` CF candidates as a Spark DataFrame, seen items excluded.

    ``model_dir`` is a saved :class:`vrec.core.cf.CFModel` on storage every executor can read
    (the warehouse); ``interactions_path`` the run's interactions (see
    :func:`seen_for_model`). Output columns: user_id, rank (1..n), item_id, cf_score.
    """
    from vrec.core.cf import CFModel

    model = CFModel.load(model_dir, mmap=True)
    seen = seen_for_model(interactions_path, model.user_ids, model.item_ids, seen_event_types)
    parts = partitions or 4 * max(1, spark.sparkContext.defaultParallelism)
    b_seen = spark.sparkContext.broadcast(seen)
    folder = str(Path(model_dir).resolve())

    def _fn(it):
        return score_partition(it, folder, b_seen.value, n, block_size, block_memory_mb)

    return spark.range(0, len(model.user_ids), 1, parts).mapInPandas(
        _fn, "user_id string, rank int, item_id string, cf_score float")

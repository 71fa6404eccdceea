"""The exact top-k kernel: for each query row, the k items with the largest inner
product, seen items excluded, without scoring most of the catalog.

Items are scored in descending norm order: a head chunk gets a threshold selection
(items cut into G groups of g columns; the k-th largest group maximum t bounds the top k
from below, and only groups whose maximum is >= t are searched); later chunks are
multiplied only for rows whose Cauchy-Schwarz bound can still reach their current k-th
score. Plain ``argpartition`` costs 5-14x the product; this costs 0.4-1x of it
(benchmarks/README.md). Without norm pruning (dense features whose norms do not
follow popularity) the whole block gets the threshold selection: 2.4x faster than one
partition per row on the 10M night's 192-d content features. Pure numpy/scipy: the
retrieval of candidates, item_similar and the benchmarks all call :func:`topk_blocked`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

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


def _select_kth(block: np.ndarray, m: int, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, score) of every entry at or above each row's k-th largest score (the
    top k and any ties with it), by one partition per row: for dense rows where no
    threshold can skip much (e.g. unit-norm image embeddings)."""
    s = block[:, :m]
    kth = np.partition(s, m - k, axis=1)[:, m - k]
    rows, cols = np.nonzero(s >= kth[:, None])
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
    return TopK(items, prune=prune).search(queries, k, exclude=exclude, block_size=block_size,
                                           block_memory_mb=block_memory_mb)


class TopK:
    """Items prepared once for many :meth:`search` calls: sorted by descending norm into
    one contiguous float32 copy (so batches of queries do not re-sort or copy them)."""

    def __init__(self, items: np.ndarray, *, prune: bool = True) -> None:
        items = np.asarray(items, dtype=np.float32)
        self.m = len(items)
        self.prune = prune
        # float32 norms: the bound below keeps a 1e-4 relative margin
        norms = np.sqrt(np.einsum("ij,ij->i", items, items)).astype(np.float64) \
            if self.m else np.zeros(0)
        self.perm = np.argsort(-norms, kind="stable") if prune else np.arange(self.m)
        self.sorted_items = np.ascontiguousarray(items[self.perm])
        self.sorted_norms = norms[self.perm]
        self.inv = np.empty(self.m, dtype=np.int64)
        self.inv[self.perm] = np.arange(self.m)
        self._heads: dict[tuple[int, int], np.ndarray] = {}

    def search(self, queries: np.ndarray, k: int, *,
               exclude: Sequence[np.ndarray] | sp.spmatrix | None = None,
               block_size: int = 512, block_memory_mb: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for each query row (see :func:`topk_blocked`)."""
        n, m = len(queries), self.m
        idx_out = np.full((n, k), -1, dtype=np.int64)
        sc_out = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 0 or m == 0 or k == 0:
            return idx_out, sc_out
        k_eff = min(k, m)
        prune, perm = self.prune, self.perm
        sorted_items, sorted_norms = self.sorted_items, self.sorted_norms
        c0 = min(m, max(HEAD_MIN_PER_K * k_eff, m // HEAD_SHARE)) if prune else m
        groups = max(4 * k_eff, -(-c0 // GROUP_COLUMNS))
        # the group threshold skips most of a wide block; a narrow one is partitioned
        use_threshold = c0 >= 8 * k_eff and groups <= c0
        width = groups * -(-c0 // groups) if use_threshold else c0
        head = self._heads.get((c0, width))
        if head is None:  # the head chunk, padded to whole groups: built once per width
            head = np.zeros((width, sorted_items.shape[1]), dtype=np.float32)
            head[:c0] = sorted_items[:c0]
            self._heads[(c0, width)] = head
        step = max(1024, -(-(m - c0) // TAIL_CHUNKS))
        bs = max(1, min(block_size, (block_memory_mb << 20) // max(1, 4 * max(width, step))))
        buf = np.empty((min(bs, n), width), dtype=np.float32)
        excl = _as_csr(exclude, n, m)
        if excl is not None:  # exclusions as positions in the norm order
            excl = sp.csr_matrix((excl.data, self.inv[excl.indices], excl.indptr),
                                 shape=excl.shape)
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
                r, c, v = _select_kth(blk, c0, k_eff)
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

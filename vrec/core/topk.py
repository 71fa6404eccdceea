"""The exact top-k kernel: for each query row, the k items with the largest inner
product, seen items excluded, without scoring most of the catalog.

Items are scored in descending norm order: a head chunk gets a threshold selection
(items cut into G groups of g columns; the k-th largest group maximum t bounds the top k
from below, and only groups whose maximum is >= t are searched); later chunks are
multiplied only for rows whose Cauchy-Schwarz bound can still reach their current k-th
score. Plain ``argpartition`` costs 5-14x the product; this costs 0.4-1x of it
(benchmarks/README.md). Without norm pruning (dense features whose norms do not
follow popularity) the whole block gets the threshold selection: 2.4x faster than one
partition per row on the 10M night's 192-d content features.

Wide unpruned items (1280-d image embeddings: all of norm 1) take a **two-pass** search
instead. The items are projected once onto their top ``d`` principal directions
(uncentred, from a sample's Gram matrix), which split every score in two:
``q·e = (Cq)·(Ce) + r_q·r_e``, where ``r`` is the part outside the basis, so
``|q·e - (Cq)·(Ce)| <= |r_q|·|r_e|``. The first pass scores every item in ``d``
dimensions, takes each row's best ``2k`` and scores them exactly: their k-th best exact
score ``L`` bounds the true k-th from below. The second pass scores exactly only the items
whose bound ``(Cq)·(Ce) + |r_q|·|r_e|`` can still reach ``L``. Nothing that could be in the
top k is skipped: the result equals the full product's up to float32 rounding of
near-ties (the second pass's exact scores are products of one row, the full
product's of a block: at 10M 107 of 199,631 users got another item at a source's N-th
place). On the 10M night's profiles (1280-d, 50,000 items) the search takes about half
the full product's time (benchmarks/README.md, "Fifth pass").

:meth:`TopK.search_set`, what retrieval uses, makes a row's result depend on that row
alone: float32 products round by the row's place in the block, so equal or nearly equal
items at the k-th place went one way or the other with the batch. Equal vectors are
searched once (:class:`EqualGroups`) and near-ties at the k-th place are settled by the
exact score, ties by the lower index (docs/ranking.md).

Pure numpy/scipy: the retrieval of candidates, item_similar and the benchmarks all call
:class:`TopK` or :func:`topk_blocked`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

GROUP_COLUMNS = 256  # target columns per group for the threshold selection
HEAD_SHARE = 8  # the head chunk (scored for every row) is 1/HEAD_SHARE of the items ...
HEAD_MIN_PER_K = 64  # ... and at least this many items per requested result
TAIL_CHUNKS = 8  # the rest is scored in this many chunks, each only for rows that can gain
# the two-pass search: unpruned items at least REDUCE_MIN_DIMS wide and REDUCE_MIN_ITEMS
# many are first scored in REDUCE_DIMS dimensions, the basis from a REDUCE_SAMPLE-row sample
REDUCE_DIMS = 256
REDUCE_MIN_DIMS = 768
REDUCE_MIN_ITEMS = 4096
REDUCE_SAMPLE = 8192
# TopK.search_set searches this many results past k, to see a near-tie at the k-th place
SET_EXTRA = 8


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


def _select_threshold(block: np.ndarray, k: int, groups: int, gmax: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, score) of candidates that contain every row's top k (see module doc).

    ``block`` is (b, groups * g); padding columns are already -inf; ``gmax``: its group
    maxima, when already known.
    """
    b, width = block.shape
    g = width // groups
    b3 = block.reshape(b, groups, g)
    gmax = b3.max(axis=2) if gmax is None else gmax
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
    if b <= 1 << 10 and (len(c) == 0 or c.max() < 1 << 22):
        r, c, v = _sort_packed(r, c, v)
    else:
        order = np.lexsort((c, -v, r))
        r, c, v = r[order], c[order], v[order]
    pos = np.arange(len(r)) - np.searchsorted(r, np.arange(b))[r]
    keep = pos < k
    out_c = np.full((b, k), -1, dtype=np.int64)
    out_v = np.full((b, k), -np.inf, dtype=np.float32)
    out_c[r[keep], pos[keep]] = c[keep]
    out_v[r[keep], pos[keep]] = v[keep]
    return out_c, out_v


def _sort_packed(r: np.ndarray, c: np.ndarray, v: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, c, v) sorted by row, descending score, then column (``np.lexsort((c, -v, r))``,
    3-4x faster): one 64-bit key per entry, row (10 bits), score (32, an order-preserving
    map of the float32) and column (22), sorted in place and unpacked."""
    u = (np.asarray(v, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 -> 0.0
    # ascending floats as ascending unsigned ints, then flipped for descending scores
    u = ~np.where(u & np.uint32(1 << 31), ~u, u | np.uint32(1 << 31))
    key = (r.astype(np.uint64) << np.uint64(54)) | (u.astype(np.uint64) << np.uint64(22)) \
        | c.astype(np.uint64)
    key.sort()
    u = ~((key >> np.uint64(22)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    u = np.where(u & np.uint32(1 << 31), u & np.uint32(0x7FFFFFFF), ~u)
    return ((key >> np.uint64(54)).astype(np.int64),
            (key & np.uint64((1 << 22) - 1)).astype(np.int64), u.view(np.float32))


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
    one contiguous float32 copy (so batches of queries do not re-sort or copy them).

    ``reduce``: the first pass's dimensions of the two-pass search (module doc), or 0 for
    the one-pass search; by default ``REDUCE_DIMS`` for unpruned items at least
    ``REDUCE_MIN_DIMS`` wide and ``REDUCE_MIN_ITEMS`` many, else 0."""

    def __init__(self, items: np.ndarray, *, prune: bool = True, reduce: int | None = None
                 ) -> None:
        items = np.asarray(items, dtype=np.float32)
        self.m = len(items)
        self.prune = prune
        if reduce is None:
            wide = items.ndim == 2 and items.shape[1] >= REDUCE_MIN_DIMS
            reduce = REDUCE_DIMS if not prune and wide and self.m >= REDUCE_MIN_ITEMS else 0
        if reduce and (prune or reduce >= items.shape[1]):
            raise ValueError(f"reduce={reduce} needs unpruned items wider than that "
                             f"(prune={prune}, {items.shape[1]} dimensions)")
        self.rescored = 0  # items scored exactly in the two-pass search's second pass
        # float32 norms: the bound below keeps a 1e-4 relative margin
        norms = np.sqrt(np.einsum("ij,ij->i", items, items)).astype(np.float64) \
            if self.m else np.zeros(0)
        self.basis = self.reduced = self.resid = None
        if reduce:  # the two-pass search: items in descending order of their residual
            self.basis = principal_basis(items, reduce)
            reduced = items @ self.basis.T
            resid = residual_norms(items, reduced, self.basis)
            self.perm = np.argsort(-resid, kind="stable")
            self.reduced = np.ascontiguousarray(reduced[self.perm])
            self.resid = resid[self.perm]
        else:
            self.perm = np.argsort(-norms, kind="stable") if prune else np.arange(self.m)
        self.sorted_items = np.ascontiguousarray(items[self.perm])
        self.sorted_norms = norms[self.perm]
        self.inv = np.empty(self.m, dtype=np.int64)
        self.inv[self.perm] = np.arange(self.m)
        self._heads: dict[tuple, np.ndarray] = {}
        self._groups: EqualGroups | None = None  # search_set's, built on its first call
        self._grouped = False

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
        excl = _as_csr(exclude, n, m)
        if excl is not None:  # exclusions as positions in the items' order
            excl = sp.csr_matrix((excl.data, self.inv[excl.indices], excl.indptr),
                                 shape=excl.shape)
        if self.reduced is not None:
            return self._two_pass(queries, k, k_eff, excl, block_size, block_memory_mb)
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

    def search_set(self, queries: np.ndarray, k: int, *,
                   exclude: Sequence[np.ndarray] | sp.spmatrix | None = None,
                   block_size: int = 512, block_memory_mb: int = 256) -> np.ndarray:
        """Each query row's top ``k`` item indices as a set that depends on that row alone
        ((n, k) int64, -1 pads, not in score order).

        :meth:`search`'s float32 scores come from matrix products whose rounding depends
        on the row's place in the block, so where items tie (equal vectors) or nearly tie
        at the k-th place, which of them a row keeps depends on the other rows of the call.
        Items of equal vectors, when they are many (:class:`EqualGroups`), are searched
        once per vector. Otherwise a row whose k-th and (k+1)-th scores are within twice
        a rounding margin (``√D·2⁻²²·|q|·max|item|``, several times the largest float32
        rounding measured) is settled by its true scores: the items that can reach the
        k-th place, scored in float64 (exact products, summed per item), ties by the
        lower index. The other rows keep :meth:`search`'s set, which is then the exact
        one. The search looks :data:`SET_EXTRA` results further; a row whose near-tie runs
        past them is scored against every item."""
        n, m = len(queries), self.m
        out = np.full((n, k), -1, dtype=np.int64)
        k_eff = min(k, m)
        if n == 0 or k_eff == 0:
            return out
        groups = self._equal_groups()
        if groups is not None:
            return groups.search_set(queries, k, _as_csr(exclude, n, m))
        extra = min(m - k_eff, SET_EXTRA)
        idx, sc = self.search(queries, k_eff + extra, exclude=exclude, block_size=block_size,
                              block_memory_mb=block_memory_mb)
        out[:, :k_eff] = idx[:, :k_eff]
        if extra == 0:  # every item is a result: the set is the row's items not excluded
            return out
        q = np.asarray(queries, dtype=np.float32)
        err = np.linalg.norm(q.astype(np.float64), axis=1) * \
            float(self.sorted_norms.max(initial=0.0)) * np.sqrt(q.shape[1]) * 2.0 ** -22
        kth = sc[:, k_eff - 1].astype(np.float64)
        nxt = sc[:, k_eff].astype(np.float64)
        with np.errstate(invalid="ignore"):  # -inf - -inf: fewer than k+1 results
            near = np.flatnonzero(np.isfinite(nxt) & (kth - nxt <= 2 * err))
        if not len(near):
            return out
        excl = _as_csr(exclude, n, m)
        for r in near:
            lo = kth[r] - 2 * err[r]
            if sc[r, -1] >= lo:  # the near-tie may run past the results: every item
                s = self.sorted_items @ q[r]
                if excl is not None:
                    s[self.inv[excl.indices[excl.indptr[r]:excl.indptr[r + 1]]]] = -np.inf
                pos = np.flatnonzero(s >= lo - err[r])
            else:
                pos = self.inv[idx[r][sc[r] >= lo]]
            exact = (self.sorted_items[pos].astype(np.float64) * q[r].astype(np.float64)
                     ).sum(axis=1)
            items = self.perm[pos]
            out[r, :k_eff] = items[np.lexsort((items, -exact))[:k_eff]]
        return out

    def _equal_groups(self) -> EqualGroups | None:
        """The items' groups of equal vectors when at most half as many as the items
        (:class:`EqualGroups`; built once), else None. Pruned and two-pass indexes do
        not group."""
        if not self._grouped:
            self._grouped = True
            if not self.prune and self.reduced is None and self.m >= 2 * SET_EXTRA:
                items = np.ascontiguousarray(self.sorted_items[self.inv])
                keys = items.view(np.dtype((np.void, items.dtype.itemsize * items.shape[1])))
                first, group = np.unique(keys.ravel(), return_index=True, return_inverse=True)[1:]
                if 2 * len(first) <= self.m:
                    self._groups = EqualGroups(items[first], group.ravel())
        return self._groups

    def _two_pass(self, queries: np.ndarray, k: int, k_eff: int, excl: sp.csr_matrix | None,
                  block_size: int, block_memory_mb: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` by the two-pass search (module doc), the items in descending
        order of their residual norm (so a group's largest residual is close to its
        others); ``excl`` holds positions in that order."""
        n, m = len(queries), self.m
        idx_out = np.full((n, k), -1, dtype=np.int64)
        sc_out = np.full((n, k), -np.inf, dtype=np.float32)
        kk = min(m, 2 * k_eff)
        # whole groups of columns: the first pass selects by them, the second skips by them
        groups = max(4 * kk, -(-m // GROUP_COLUMNS))
        g = -(-m // groups)
        width = groups * g
        head = self._heads.get(("reduced", width))
        if head is None:  # the reduced items and residual norms, padded to whole groups
            head = np.zeros((width, self.reduced.shape[1]), dtype=np.float32)
            head[:m] = self.reduced
            self._heads[("reduced", width)] = head
            self._heads[("resid", width)] = np.concatenate(
                [self.resid, np.zeros(width - m, np.float32)]).reshape(groups, g)
        resid = self._heads[("resid", width)]
        gresid = resid.max(axis=1)
        items, basis = self.sorted_items, self.basis
        top_norm = float(self.sorted_norms.max())
        bs = max(1, min(block_size, (block_memory_mb << 20) // max(1, 4 * width)))
        buf = np.empty((min(bs, n), width), dtype=np.float32)
        for start in range(0, n, bs):
            q = np.ascontiguousarray(queries[start:start + bs], dtype=np.float32)
            b = len(q)
            qr = q @ basis.T
            rq = np.linalg.norm(q - qr @ basis, axis=1)
            # float32 products may differ from the exact ones by rounding: keep a margin
            margin = np.linalg.norm(q, axis=1) * top_norm * 1e-4 + 1e-6
            a = buf[:b]
            np.matmul(qr, head.T, out=a)
            a[:, m:] = -np.inf
            if excl is not None:
                sub = excl[start:start + b]
                a[np.repeat(np.arange(b), np.diff(sub.indptr)), sub.indices] = -np.inf
            a3 = a.reshape(b, groups, g)
            gmax = a3.max(axis=2)
            # first pass: each row's best kk in the basis, scored exactly
            r, c, v = _select_threshold(a, kk, groups, gmax)
            fin = np.isfinite(v)
            first, _ = _rank_rows(b, kk, r[fin], c[fin], v[fin])
            r1, j1 = np.nonzero(first >= 0)
            c1 = first[r1, j1]
            v1 = _exact(q, items, r1, c1)
            exact = np.full((b, kk), -np.inf, dtype=np.float32)
            exact[r1, j1] = v1
            low = np.partition(exact, kk - k_eff, axis=1)[:, kk - k_eff] if kk > k_eff else \
                exact.min(axis=1)
            # fewer than k scored: every item not excluded (-inf) is a candidate
            low = np.maximum(low, np.finfo(np.float32).min)
            # second pass: the items whose bound still reaches the k-th exact score, found
            # group by group (a group's bound: its best reduced score + its largest residual)
            reach = gmax + rq[:, None] * gresid[None, :] + margin[:, None] >= low[:, None]
            gr, gg = np.nonzero(reach)
            bound = a3[gr, gg] + rq[gr][:, None] * resid[gg] + margin[gr][:, None]
            gi, off = np.divmod(np.flatnonzero(bound >= low[gr][:, None]), g)
            r2, c2 = gr[gi], gg[gi] * g + off
            new = ~np.isin(r2 * width + c2, r1 * width + c1)
            r2, c2 = r2[new], c2[new]
            self.rescored += len(r2)
            best_c, best_v = _rank_rows(b, k_eff, np.concatenate([r1, r2]),
                                        self.perm[np.concatenate([c1, c2])],
                                        np.concatenate([v1, _exact(q, items, r2, c2)]))
            idx_out[start:start + b, :k_eff] = best_c
            sc_out[start:start + b, :k_eff] = best_v
        return idx_out, sc_out


class EqualGroups:
    """Items grouped by equal vectors, for :meth:`TopK.search_set` over catalogs where
    many items share one (text features of items with the same title, category and
    description): equal vectors score the same in exact arithmetic, but float32 products
    break such ties by the row's place in the block. The search runs over the distinct
    vectors; a row takes its groups by exact score (ties by the group's lowest item) and,
    in each, the members by ascending index, excluded ones skipped."""

    def __init__(self, vectors: np.ndarray, group: np.ndarray) -> None:
        self.vectors = vectors
        self.group = group
        self.size = np.bincount(group, minlength=len(vectors))
        self.members = np.argsort(group, kind="stable")  # by group, ascending index
        self.start = np.concatenate([[0], np.cumsum(self.size)])
        self.lowest = self.members[self.start[:-1]]
        self.index = TopK(vectors, prune=False, reduce=0)

    def search_set(self, queries: np.ndarray, k: int, excl: sp.csr_matrix | None) -> np.ndarray:
        """(n, k) item indices (-1 pads) of each row's top k (see the class doc)."""
        n, g = len(queries), len(self.vectors)
        out = np.full((n, k), -1, dtype=np.int64)
        gex, partial = None, set()
        if excl is not None and excl.nnz:  # a group is excluded when all its members are
            excl = excl.copy()
            excl.sum_duplicates()  # also sorts each row's indices
            er = np.repeat(np.arange(n), np.diff(excl.indptr))
            key, cnt = np.unique(er * g + self.group[excl.indices], return_counts=True)
            whole = cnt >= self.size[key % g]
            gone = key[whole]
            partial = set(key[~whole].tolist())
            gex = sp.csr_matrix((np.ones(len(gone), np.int8), (gone // g, gone % g)),
                                shape=(n, g))
        top = self.index.search_set(queries, min(k, g), exclude=gex)
        q = np.asarray(queries, dtype=np.float64)
        exact = (self.vectors[np.maximum(top, 0)].astype(np.float64) * q[:, None, :]).sum(axis=2)
        exact[top < 0] = -np.inf
        order = np.lexsort((np.where(top >= 0, self.lowest[np.maximum(top, 0)], -1), -exact),
                           axis=-1)
        ranked = np.take_along_axis(top, order, axis=1).tolist()
        scores = np.take_along_axis(exact, order, axis=1).tolist()
        start, members = self.start, self.members
        for r in range(n):
            got, j, row, sc = 0, 0, ranked[r], scores[r]
            while got < k and j < len(row) and row[j] >= 0:
                run = [row[j]]  # groups of equal exact score: their members by index
                while j + len(run) < len(row) and row[j + len(run)] >= 0 \
                        and sc[j + len(run)] == sc[j]:
                    run.append(row[j + len(run)])
                j += len(run)
                mem = np.concatenate([members[start[gi]:start[gi + 1]] for gi in run]) \
                    if len(run) > 1 else members[start[run[0]]:start[run[0] + 1]]
                if any(r * g + gi in partial for gi in run):  # skip excluded members
                    ex = excl.indices[excl.indptr[r]:excl.indptr[r + 1]]
                    at = np.minimum(np.searchsorted(ex, mem), len(ex) - 1)
                    mem = mem[ex[at] != mem]
                mem = np.sort(mem)[:k - got] if len(run) > 1 else mem[:k - got]
                out[r, got:got + len(mem)] = mem
                got += len(mem)
        return out


def _exact(q: np.ndarray, items: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``q[rows[j]] · items[cols[j]]`` for pairs sorted by row, one product per row."""
    out = np.empty(len(rows), dtype=np.float32)
    bounds = np.searchsorted(rows, np.arange(len(q) + 1))
    for r in np.flatnonzero(np.diff(bounds)):
        a, e = bounds[r], bounds[r + 1]
        out[a:e] = items[cols[a:e]] @ q[r]
    return out


def principal_basis(items: np.ndarray, d: int) -> np.ndarray:
    """(d, D) orthonormal rows: the top ``d`` eigenvectors of the uncentred Gram matrix of
    a ``REDUCE_SAMPLE``-row sample of ``items`` (every j-th row: the same basis on every
    worker)."""
    sample = np.asarray(items[::max(1, len(items) // REDUCE_SAMPLE)], dtype=np.float64)
    _, vecs = np.linalg.eigh(sample.T @ sample)
    return np.ascontiguousarray(vecs[:, ::-1][:, :d].T, dtype=np.float32)


def residual_norms(items: np.ndarray, reduced: np.ndarray, basis: np.ndarray,
                   chunk: int = 8192) -> np.ndarray:
    """``|e - Cᵀ(Ce)|`` of every item row: the part the basis misses."""
    out = np.empty(len(items), dtype=np.float32)
    for s in range(0, len(items), chunk):
        out[s:s + chunk] = np.linalg.norm(items[s:s + chunk] - reduced[s:s + chunk] @ basis,
                                          axis=1)
    return out


def seen_matrix(user_index, item_index, n_users: int, n_items: int) -> sp.csr_matrix:
    """users x items CSR (int8 ones) from parallel arrays of user and item indices."""
    u = np.asarray(user_index, dtype=np.int64)
    i = np.asarray(item_index, dtype=np.int64)
    mat = sp.csr_matrix((np.ones(len(u), np.int8), (u, i)), shape=(n_users, n_items))
    mat.sum_duplicates()
    return mat

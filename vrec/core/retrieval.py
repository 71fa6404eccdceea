"""Candidate retrieval: for each user, the union of three top-N lists, with raw scores.

* CF: ``x_u · y_i`` over warm items (users the model knows);
* visual: ``cos(p_u, e_i)`` over items with an image, ``p_u`` = the L2-normalised sum
  of the history's embeddings weighted by the profile weights (vrec.core.users);
* new arrivals: through the CF space (``x_u · W(e_i)``, the cold-start map) for users with
  factors, by the picture otherwise;
* content preference: ``v_u · z_i`` over items with content features (image and/or
  text), and over new arrivals, where ``v_u`` is the user's learned preference vector
  over those features (vrec.core.visual), fit here from the user's history;
* text preference (when the run has text features): ``t_u · z^text_i``, the same fit
  over the text block alone, over items with text;
* with ``extra`` (the learned ranker's pool): trending, the user's first N unseen items
  in trending order (for users some other source reaches), and "more like the last
  items", ``z_i · q_u`` where ``q_u`` is the mean content vector of the user's last
  items (vrec.core.users).

Per candidate it also records the share of the user's history in the candidate's
category; per user the days since the latest event, the pairs of the last 7 days and
the usual price (the history's mean price): features of the learned ranker
(vrec.core.ranker).

Seen items are excluded with the exact top-k kernel (vrec.core.topk). The result,
:class:`RankInput`, is everything the ranker needs for those users; the candidates stage
stores it (one row per user) and build_recs ranks it; the tuning and the evaluation call
:func:`retrieve` and :func:`vrec.core.ranking.rank` in memory on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec import schemas as S
from vrec.config import VisualSettings
from vrec.core.coldstart import l2_normalise
from vrec.core.itemspace import STATS, ItemSpace, open_trending
from vrec.core.topk import TopK
from vrec.core.users import UserBatch, ragged, row_pointer
from vrec.core.visual import fit_preferences


def score_positions(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(each entry's place among the non-NaN scores of ``x``, 0 = highest, ties in
    order, NaN where ``x`` is NaN; how many are not NaN)."""
    ok = ~np.isnan(x)
    m = int(ok.sum())
    r = np.empty(m)
    r[np.argsort(-x[ok], kind="stable")] = np.arange(m)
    out = np.full(len(x), np.nan)
    out[ok] = r
    return out, m


@dataclass
class RankInput:
    """Per user: whether the model knows them, whether they have a visual profile, a
    content preference vector and a text preference vector, the number of history
    items, history items with an image (for reasons), seen items and touched categories
    (for the trending fill), the user's activity (days since the latest event, pairs of
    the last 7 days, the history's mean price: NaN unknown), and the candidates with raw
    CF, mean-profile, content preference, text preference and last-items scores (NaN =
    no score) and the history's share in each candidate's category. Indices are catalog
    rows of the run's item space."""

    user_ids: np.ndarray
    in_model: np.ndarray
    has_profile: np.ndarray
    has_pref: np.ndarray
    has_txt: np.ndarray
    n_hist: np.ndarray
    hist: list[np.ndarray]
    seen: list[np.ndarray]
    touched: list[np.ndarray]
    items: list[np.ndarray]
    cf: list[np.ndarray]
    vis: list[np.ndarray]
    pref: list[np.ndarray]
    txt: list[np.ndarray]
    last: list[np.ndarray] | None = None
    cat: list[np.ndarray] | None = None
    last_days: np.ndarray | None = None
    recent: np.ndarray | None = None
    price_ref: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Inputs built without the ranker's facts: every one of them unknown."""
        n = len(self.user_ids)
        for name in ("last", "cat"):
            if getattr(self, name) is None:
                setattr(self, name, [np.full(len(c), np.nan) for c in self.items])
        self.last_days = np.full(n, np.nan) if self.last_days is None else self.last_days
        self.recent = np.zeros(n, np.int64) if self.recent is None else self.recent
        self.price_ref = np.full(n, np.nan) if self.price_ref is None else self.price_ref

    def positions(self, score: str) -> list[tuple[np.ndarray, int]]:
        """Per user, each candidate's place by ``score`` (``cf``, ``vis``, ``pref``,
        ``txt`` or ``last``) among the candidates that have one (0 = best, ties in list
        order; NaN: no score) and how many have one, computed once: the ranker's rank
        features and its reasons both read them."""
        cache = self.__dict__.setdefault("_positions", {})
        if score not in cache:
            cache[score] = [score_positions(v) for v in getattr(self, score)]
        return cache[score]

    def normalised(self, mode: str) -> tuple[list, list, list, list]:
        """The CF, mean-profile, preference and text scores normalised per user (``mode``:
        zscore or rank; vrec.core.ranking.normalise), computed once per mode: the blend
        tuning ranks the same input at every grid point."""
        from vrec.core.ranking import normalise, rank_scale

        cache = self.__dict__.setdefault("_normalised", {})
        if mode not in cache:
            # the rank mode reads the places the ranker's features sort once (positions)
            cache[mode] = tuple(
                [rank_scale(*p) for p in self.positions(s)] if mode == "rank" else
                [normalise(v, mode) for v in getattr(self, s)]
                for s in ("cf", "vis", "pref", "txt"))
        return cache[mode]

    def to_frame(self) -> pd.DataFrame:
        """The stored form (:data:`vrec.schemas.CANDIDATES`)."""
        return pd.DataFrame({
            C.USER_ID: self.user_ids.astype(str), "in_model": self.in_model.astype(bool),
            "has_profile": self.has_profile.astype(bool), "has_pref": self.has_pref.astype(bool),
            "has_txt": self.has_txt.astype(bool), "n_hist": self.n_hist.astype(np.int32),
            "last_days": self.last_days.astype(np.float64),
            "recent": self.recent.astype(np.int32),
            "price_ref": self.price_ref.astype(np.float64),
            "hist": [a.astype(np.int32) for a in self.hist],
            "seen": [a.astype(np.int32) for a in self.seen],
            "touched": [a.astype(np.int32) for a in self.touched],
            "items": [a.astype(np.int32) for a in self.items],
            "cf": [a.astype(np.float64) for a in self.cf],
            "vis": [a.astype(np.float64) for a in self.vis],
            "pref": [a.astype(np.float64) for a in self.pref],
            "txt": [a.astype(np.float64) for a in self.txt],
            "last": [a.astype(np.float64) for a in self.last],
            "cat": [a.astype(np.float64) for a in self.cat]})[S.CANDIDATES.names()]

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> RankInput:
        """Read the stored form back (nulls in score arrays become NaN)."""
        def ints(col):
            return [np.asarray(v if v is not None else [], dtype=np.int64) for v in df[col]]

        def floats(col):
            # Arrow hands float arrays (nulls as NaN) to pandas; lists may hold None
            return [v.astype(np.float64, copy=False)
                    if isinstance(v, np.ndarray) and v.dtype.kind == "f" else
                    np.asarray([np.nan if x is None else x for x in (v if v is not None else [])],
                               dtype=np.float64) for v in df[col]]

        return cls(df[C.USER_ID].astype(str).to_numpy(), df["in_model"].to_numpy(dtype=bool),
                   df["has_profile"].to_numpy(dtype=bool), df["has_pref"].to_numpy(dtype=bool),
                   df["has_txt"].to_numpy(dtype=bool),
                   df["n_hist"].to_numpy(dtype=np.int64), ints("hist"), ints("seen"),
                   ints("touched"), ints("items"), floats("cf"), floats("vis"), floats("pref"),
                   floats("txt"), floats("last"), floats("cat"),
                   df["last_days"].to_numpy(dtype=np.float64),
                   df["recent"].to_numpy(dtype=np.int64),
                   df["price_ref"].to_numpy(dtype=np.float64))


def profiles(hist, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised visual profiles, has_profile) for each row of a history CSR whose
    values are profile weights; items without an embedding have zero rows in ``emb``."""
    p = np.asarray(hist.astype(np.float32) @ emb, dtype=np.float32)
    ok = np.linalg.norm(p, axis=1) > 0
    return l2_normalise(p), ok


@dataclass
class Source:
    """One candidate source's items (catalog rows), their position by catalog row (-1:
    not in the source) and the top-k index over their vectors (``vectors``: every
    catalog row's, the space's own array), built on the first search: a model that never
    queries a source (the evaluation's ``als`` reads no pictures) does not build it."""

    rows: np.ndarray
    local: np.ndarray
    vectors: np.ndarray
    prune: bool = False
    _index: TopK | None = field(default=None, init=False, repr=False)

    @property
    def index(self) -> TopK:
        """The top-k index over the source's vectors (built once)."""
        if self._index is None:
            self._index = TopK(np.asarray(self.vectors)[self.rows], prune=self.prune)
        return self._index

    def top(self, queries: np.ndarray, k: int, seen, who: np.ndarray) -> np.ndarray:
        """Catalog rows of each query's top ``k`` source items as a set, seen items
        excluded, for the users flagged in ``who`` (-1 pads; rows of other users stay
        -1); a user's set does not depend on the other users of the call
        (:meth:`vrec.core.topk.TopK.search_set`)."""
        out = np.full((len(queries), min(k, len(self.rows))), -1, dtype=np.int64)
        who = np.flatnonzero(who)
        if len(who) == 0 or out.shape[1] == 0:
            return out
        queries, seen = queries[who], seen[who]
        cols = self.local[seen.indices]
        keep = cols >= 0
        owner = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
        counts = np.bincount(owner[keep], minlength=seen.shape[0])
        excl = sp.csr_matrix((np.ones(int(keep.sum()), np.int8), cols[keep],
                              np.concatenate([[0], np.cumsum(counts)])),
                             shape=(seen.shape[0], len(self.rows)))
        idx = self.index.search_set(queries, out.shape[1], exclude=excl)
        out[who] = np.where(idx >= 0, self.rows[np.maximum(idx, 0)], -1)
        return out


def source(space: ItemSpace, name: str) -> Source:
    """The ``warm`` (CF factors), ``visual`` (embeddings), ``new`` (predicted factors),
    ``new_visual`` (new arrivals' embeddings), ``pref`` (content features of every item
    with them) or ``new_pref`` (new arrivals' content features) source of ``space``,
    cached on it; blocked items are never in a source. Only the CF factors have norms
    worth pruning by."""
    if name not in space.cache:
        mask, vectors = {"warm": (space.warm, space.factors), "visual": (space.has_vec, space.emb),
                         "new": (space.new, space.factors),
                         "new_visual": (space.new, space.emb),
                         "pref": (space.has_z, space.pref_z),
                         "new_pref": (space.new, space.pref_z)}[name]
        rows = np.flatnonzero(np.asarray(mask) & ~np.asarray(space.blocked))
        local = np.full(space.n, -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        space.cache[name] = Source(rows, local, vectors, prune=name in ("warm", "new"))
    return space.cache[name]


def profile_source(policy) -> bool:
    """Whether the mean visual profile's own top-N is retrieved for a list policy
    (vrec.config.RecsSettings): only when the blend gives it a share (``pref_mix`` < 1).
    The candidates stage and the evaluation's models retrieve by this one rule."""
    return policy.pref_mix < 1.0


def last_items_query(batch: UserBatch, space: ItemSpace) -> tuple[np.ndarray, np.ndarray]:
    """(each user's mean content vector of their last items, whether they have one)."""
    z = np.asarray(space.pref_z)
    Q = np.zeros((len(batch.user_ids), z.shape[1]), dtype=np.float32)
    ok = np.zeros(len(batch.user_ids), dtype=bool)
    for r, items in enumerate(batch.last_items or []):
        items = items[np.asarray(space.has_z)[items]] if len(items) else items
        if len(items):
            Q[r], ok[r] = z[items].mean(axis=0), True
    return Q, ok


def retrieve(batch: UserBatch, space: ItemSpace, n: int, visual: VisualSettings,
             *, profile: bool = True, extra: bool = False) -> RankInput:
    """The CF, visual, content preference, text preference and new-arrival top-``n`` of
    each user (seen items excluded), with ``extra`` also the trending and last-items
    top-``n``, their union, and the raw scores of every candidate (see the module doc).
    ``profile`` False skips the mean-profile source (its score is still computed for the
    candidates the other sources bring)."""
    P, has_p = profiles(batch.hist, space.emb)
    weights = batch.weights if batch.weights is not None else batch.hist
    V, has_v = fit_preferences(weights, space.pref_z, space.pref_gram,
                               regularization=visual.regularization, alpha=visual.alpha)
    text = space.text_only()
    if text is not None:
        T, has_t = fit_preferences(weights, text.pref_z, text.pref_gram,
                                   regularization=visual.regularization, alpha=visual.alpha)
    else:
        T, has_t = np.zeros((len(batch.user_ids), 1), np.float32), \
            np.zeros(len(batch.user_ids), dtype=bool)
    seen = batch.seen.tocsr()
    seen.sort_indices()
    cf_top = source(space, "warm").top(batch.uf, n, seen, batch.in_model)
    vis_top = source(space, "visual").top(P, n, seen, has_p & profile)
    pref_top = source(space, "pref").top(V, n, seen, has_v)
    new_pref = source(space, "new_pref").top(V, n, seen, has_v)
    txt_top = source(text, "pref").top(T, n, seen, has_t) if text is not None else None
    # new arrivals: through the CF space when the user has factors, else by the picture
    new_cf = source(space, "new").top(batch.uf, n, seen, batch.in_model)
    new_vis = source(space, "new_visual").top(P, n, seen, has_p & ~batch.in_model)
    Q, has_q = last_items_query(batch, space)
    last_top = source(space, "pref").top(Q, n, seen, has_q) if extra else None
    nu = len(batch.user_ids)
    stats = np.asarray(space.stats)
    price = stats[:, STATS.index("price")].astype(np.float64)
    out = RankInput(batch.user_ids, batch.in_model, has_p, has_v, has_t, batch.n_hist, [], [],
                    list(batch.touched) if batch.touched else
                    [np.zeros(0, np.int64) for _ in batch.user_ids], [], [], [], [], [], [], [],
                    batch.last_days if batch.last_days is not None else np.full(nu, np.nan),
                    batch.recent if batch.recent is not None else np.zeros(nu, np.int64),
                    np.full(nu, np.nan))
    trending = open_trending(space)
    # plain ndarray views: np.memmap adds Python work to every indexing call
    factors, warm, new, emb, has_vec, pref_z, has_z, category = (
        np.asarray(getattr(space, a)) for a in ("factors", "warm", "new", "emb", "has_vec",
                                                "pref_z", "has_z", "category"))
    text_z, text_has = (np.asarray(text.pref_z), np.asarray(text.has_z)) if text is not None \
        else (None, None)
    in_model = np.asarray(batch.in_model, dtype=bool)
    # each user's sources, side by side (-1: none), then one sorted union per user
    blocks = [np.where(in_model[:, None], cf_top, -1), np.where(in_model[:, None], new_cf, -1),
              np.where(has_p[:, None], vis_top, -1),
              np.where((has_p & ~in_model)[:, None], new_vis, -1),
              np.where(has_v[:, None], pref_top, -1), np.where(has_v[:, None], new_pref, -1)]
    if txt_top is not None:
        blocks.append(np.where(has_t[:, None], txt_top, -1))
    if extra:
        blocks.append(np.where(has_q[:, None], last_top, -1))
        any_part = in_model | has_p | has_v | has_t | has_q
        blocks.append(np.where(any_part[:, None], unseen_trending(trending, seen, n), -1))
    both = np.sort(np.concatenate([b.reshape(nu, -1) for b in blocks], axis=1), axis=1) \
        if nu else np.zeros((0, 0), np.int64)
    first = both >= 0
    first[:, 1:] &= both[:, 1:] != both[:, :-1]
    cand_all = both[first]
    owner = np.nonzero(first)[0]
    bounds = row_pointer(owner, nu)
    # raw scores: one product per user and score, over that user's candidates
    cf_all, vis_all, pref_all, txt_all, last_all = (np.full(len(cand_all), np.nan)
                                                    for _ in range(5))
    for r in range(nu):
        a, e = bounds[r], bounds[r + 1]
        cand = cand_all[a:e]
        if in_model[r]:
            cf_all[a:e] = factors[cand] @ batch.uf[r]
        if has_p[r]:
            vis_all[a:e] = emb[cand] @ P[r]
        if has_v[r]:
            pref_all[a:e] = pref_z[cand] @ V[r]
        if has_t[r]:
            txt_all[a:e] = text_z[cand] @ T[r]
        if has_q[r]:
            last_all[a:e] = pref_z[cand] @ Q[r]
    cf_all[~(warm[cand_all] | new[cand_all])] = np.nan
    vis_all[~has_vec[cand_all]] = np.nan
    pref_all[~has_z[cand_all]] = np.nan
    last_all[~has_z[cand_all]] = np.nan
    if text is not None:
        txt_all[~text_has[cand_all]] = np.nan
    # the history's share in each candidate's category
    hist = batch.hist
    h_own = np.repeat(np.arange(nu), np.diff(hist.indptr))
    h_cat = category[hist.indices]
    m = len(space.category_names) + 1
    keys, counts = np.unique(h_own[h_cat >= 0] * m + h_cat[h_cat >= 0], return_counts=True)
    c_cat = category[cand_all]
    c_key = owner * m + np.maximum(c_cat, 0)
    hits = np.zeros(len(c_key), np.int64)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, c_key), len(keys) - 1)
        hits = np.where(keys[at] == c_key, counts[at], 0)
    share = hits / np.maximum(1, np.diff(hist.indptr))[owner]
    cat_all = np.where(c_cat >= 0, share, np.nan)
    for r in range(nu):
        hp = price[hist.indices[hist.indptr[r]:hist.indptr[r + 1]]]
        if (~np.isnan(hp)).any():
            out.price_ref[r] = float(np.nanmean(hp))
    h_keep = has_vec[hist.indices]
    out.hist = ragged(hist.indices[h_keep], row_pointer(h_own[h_keep], nu))
    if not hist.has_sorted_indices:
        out.hist = [np.sort(h) for h in out.hist]
    out.seen = ragged(seen.indices, seen.indptr)
    out.items = ragged(cand_all, bounds)
    out.cf, out.vis, out.pref, out.txt, out.last, out.cat = (
        ragged(x, bounds) for x in (cf_all, vis_all, pref_all, txt_all, last_all, cat_all))
    return out


def unseen_trending(trending: np.ndarray, seen: sp.csr_matrix, n: int) -> np.ndarray:
    """Each user's first ``n`` items of ``trending`` (catalog rows in trending order) that
    are not in the user's row of ``seen`` (-1 pads)."""
    nu = seen.shape[0]
    out = np.full((nu, n), -1, dtype=np.int64)
    if nu == 0 or n == 0:
        return out
    width = min(len(trending), n + int(np.diff(seen.indptr).max(initial=0)))
    head = trending[:width]
    unseen = seen[:, head].toarray() == 0
    place = np.cumsum(unseen, axis=1) - 1
    r, c = np.nonzero(unseen & (place < n))
    out[r, place[r, c]] = head[c]
    return out

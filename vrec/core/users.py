"""Users as retrieval and ranking see them: the one builder, used by the nightly stages,
the blend tuning and the offline evaluation alike.

The input is one row per user holding the user's interaction pairs as parallel lists
(:data:`USER_COLUMNS`): :func:`pairs_by_user` only regroups pairs (the candidates stage's
Spark tasks call it on their share of the staged interactions), it applies no rule. The rules live
in :func:`user_batch`:

* history = pairs with weight > 0, each weighted ``weight × 0.5 ** (age_days /
  recs.profile_half_life_days)`` for the mean profile (age from ``end``; no decay when the
  half life is null), and by the pair weight itself for the preference model;
* seen = pairs whose event types meet ``recs.seen_event_types`` (never recommended back),
  plus the row's optional ``exclude`` item ids (what the feedback rules leave out of the
  user's next list: :mod:`vrec.core.feedback`);
* touched = the user's top 3 categories by number of events (ties by name): cold users'
  trending lists start there when ``recs.cold_user_categories``;
* CF factors = the model's row for the user (``in_model`` False and zeros without one);
* last items = the user's :data:`LAST_ITEMS` most recent history items (the "more like
  the last items" candidate source); activity = the days since the user's latest event
  and the pairs touched in the last 7 days (features of the learned ranker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import RecsSettings

if TYPE_CHECKING:
    from vrec.core.cf import CFModel
    from vrec.core.itemspace import ItemSpace

# per user: the item ids of its pairs, their weights, last event (POSIX seconds), event
# types and number of events, all aligned and sorted by item id
USER_COLUMNS = (C.USER_ID, "items", "weights", "last_s", "event_types", "n_events")
TOP_CATEGORIES = 3
LAST_ITEMS = 3


@dataclass
class UserBatch:
    """A batch of users: CF factors (zeros and ``in_model`` False when the model lacks
    the user), history CSR of profile weights, seen CSR (excluded), categories touched,
    and the history's pair weights (the preference model's confidences; same sparsity
    as ``hist``), the last items (catalog rows, newest first), the days since the
    latest event (NaN without events) and the pairs of the last 7 days."""

    user_ids: np.ndarray
    uf: np.ndarray
    in_model: np.ndarray
    hist: sp.csr_matrix
    seen: sp.csr_matrix
    touched: list[np.ndarray] = field(default_factory=list)
    weights: sp.csr_matrix | None = None
    last_items: list[np.ndarray] = field(default_factory=list)
    last_days: np.ndarray | None = None
    recent: np.ndarray | None = None

    @property
    def n_hist(self) -> np.ndarray:
        return np.diff(self.hist.indptr)

    def rows(self, lo: int, hi: int) -> UserBatch:
        """The users ``lo`` to ``hi`` (exclusive) of the batch, every field cut alike."""
        def cut(x):
            return x[lo:hi] if x is not None and len(x) else x

        return UserBatch(self.user_ids[lo:hi], self.uf[lo:hi], self.in_model[lo:hi],
                         self.hist[lo:hi], self.seen[lo:hi], cut(self.touched),
                         self.weights[lo:hi] if self.weights is not None else None,
                         cut(self.last_items), cut(self.last_days), cut(self.recent))


def pairs_by_user(pairs: pd.DataFrame, users: np.ndarray | None = None) -> pd.DataFrame:
    """Regroup (user_id, item_id, weight, last_ts[, event_types, n_events]) pairs into one
    row per user (:data:`USER_COLUMNS`), users and each user's pairs sorted by id
    (code-point order, as Spark sorts strings); ``users`` (when given) are kept in that
    order, with empty lists for users without pairs. A frame already sorted by user and
    item (a staged interactions table) is not sorted again."""
    user = pairs[C.USER_ID].astype(str).to_numpy(dtype=object)
    keep = None
    if users is not None:  # only their pairs: an evaluation's users are few of many
        keep = pd.Series(user).isin(set(np.asarray(users).astype(str).tolist())).to_numpy()
    cols = {"user": user, "item": pairs[C.ITEM_ID].astype(str).to_numpy(dtype=object),
            "w": pairs["weight"].to_numpy(dtype=np.float64),
            "t": epoch_seconds(pairs["last_ts"]),
            "e": pairs["event_types"].to_numpy(dtype=object) if "event_types" in pairs
            else np.full(len(pairs), None, dtype=object),
            "n": pairs["n_events"].to_numpy() if "n_events" in pairs
            else np.ones(len(pairs), np.int64)}
    if keep is not None:
        cols = {k: v[keep] for k, v in cols.items()}
    u, it = cols["user"], cols["item"]
    if len(u) > 1 and not ((u[1:] > u[:-1]) | ((u[1:] == u[:-1]) & (it[1:] > it[:-1]))).all():
        order = pd.DataFrame({"u": u, "i": it}).sort_values(["u", "i"], kind="stable").index
        cols = {k: v[order.to_numpy()] for k, v in cols.items()}
        u = cols["user"]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, np.int64)
    cuts = starts[1:]

    def lists(v: np.ndarray) -> list:
        return [x.tolist() for x in np.split(v, cuts)] if len(v) else []

    rows = pd.DataFrame({C.USER_ID: u[starts], "items": lists(cols["item"]),
                         "weights": lists(cols["w"]), "last_s": lists(cols["t"]),
                         "event_types": lists(cols["e"]), "n_events": lists(cols["n"])})
    if users is not None:
        rows = rows.set_index(C.USER_ID).reindex(
            pd.Index(np.asarray(users).astype(str), name=C.USER_ID))
        for col in rows.columns:
            rows[col] = [v if isinstance(v, list) else [] for v in rows[col]]
        rows = rows.reset_index()
    return rows[list(USER_COLUMNS)]


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Seconds since the epoch of a timestamp column whatever its unit (ns, us or ms), as
    Spark computes them (``unix_micros(ts) / 1e6``): whole microseconds over 1e6."""
    t = pd.Series(pd.to_datetime(ts, utc=True)).dt.as_unit("ns")
    ns = t.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(t.isna().to_numpy(), np.nan, (ns // 1000) / 1e6)


def user_batch(rows: pd.DataFrame, space: ItemSpace, model: CFModel, recs: RecsSettings,
               end: pd.Timestamp, *, item_index: dict | None = None,
               user_index: dict | None = None) -> UserBatch:
    """A :class:`UserBatch` from user rows (:data:`USER_COLUMNS`); see the module doc
    for the rules. ``item_index`` / ``user_index`` (id -> position in the space / model)
    may be passed in to reuse them across batches. The pairs of the whole batch are
    handled as flat arrays; only the id lookups, the seen rule and the decay's power
    (Python's, so the weights do not depend on a SIMD ``pow``) touch each pair."""
    item_index = item_index if item_index is not None else \
        {str(v): i for i, v in enumerate(space.item_ids)}
    user_index = user_index if user_index is not None else \
        {str(v): i for i, v in enumerate(model.user_ids)}
    seen_types = frozenset(recs.seen_event_types)
    end_s = pd.Timestamp(end).timestamp()
    half = recs.profile_half_life_days
    n = len(rows)
    lens = np.fromiter((len(x) for x in rows["items"]), np.int64, n)
    owner = np.repeat(np.arange(n), lens)
    get = item_index.get
    j = np.asarray([get(it if type(it) is str else str(it), -1)
                    for x in rows["items"] for it in x], dtype=np.int64)
    w = _flat(rows["weights"], np.float64)
    last_s = _flat(rows["last_s"], np.float64)
    n_ev = np.concatenate([np.ones(k, np.int64) if v is None else np.asarray(v, np.int64)
                           for v, k in zip(rows["n_events"], lens)] or [np.zeros(0, np.int64)])
    seen_pair = seen_pairs(rows["event_types"], lens, seen_types)
    # activity over every pair of the row, known items or not
    ages = (end_s - last_s) / 86400.0
    has = lens > 0
    lowest = np.full(n, np.nan)
    if has.any():
        lowest[has] = np.minimum.reduceat(ages, row_pointer(owner, n)[:-1][has])
    last_days = np.where(has, np.where(lowest > 0.0, lowest, 0.0), np.nan)
    recent = np.bincount(owner, weights=(ages <= 7.0), minlength=n).astype(np.int64)
    # history: known items with weight > 0, decayed by age for the profile
    known = j >= 0
    hk = known & (w > 0)
    h_raw = w[hk]
    h_val = h_raw
    if half:
        age = (end_s - last_s[hk]) / 86400.0
        age = np.where(age > 0.0, age, 0.0) / half
        h_val = h_raw * np.fromiter((0.5 ** a for a in age.tolist()), np.float64, len(age))
    h_ptr = row_pointer(owner[hk], n)
    hist = sp.csr_matrix((h_val.astype(np.float32), j[hk], h_ptr), shape=(n, space.n))
    hist.sum_duplicates()
    raw = sp.csr_matrix((h_raw.astype(np.float32), j[hk], h_ptr), shape=(n, space.n))
    raw.sum_duplicates()
    # seen: known pairs that meet the seen types, then the row's exclusions
    sk = known & seen_pair
    s_own, s_idx = [owner[sk]], [j[sk]]
    if "exclude" in rows:
        for r, excl in enumerate(rows["exclude"]):
            if excl is not None:
                e = np.fromiter((item_index.get(str(it), -1) for it in excl), np.int64)
                s_own.append(np.full(int((e >= 0).sum()), r, np.int64))
                s_idx.append(e[e >= 0])
    s_own, s_idx = np.concatenate(s_own), np.concatenate(s_idx)
    order = np.argsort(s_own, kind="stable")
    seen = sp.csr_matrix((np.ones(len(s_idx), np.int8), s_idx[order], row_pointer(s_own, n)),
                         shape=(n, space.n))
    seen.sum_duplicates()
    touched = _top_categories(owner[known], np.asarray(space.category)[j[known]],
                              n_ev[known], n, space.category_names)
    # last items: the newest history items (ties by catalog row)
    ho, hj = owner[hk], j[hk]
    order = np.lexsort((hj, -last_s[hk], ho))
    place = np.arange(len(order)) - h_ptr[ho[order]]
    top = order[place < LAST_ITEMS]
    last_items = ragged(hj[top], row_pointer(ho[top], n))
    uidx = np.asarray([user_index.get(str(u), -1) for u in rows[C.USER_ID]], dtype=np.int64)
    in_model = uidx >= 0
    uf = np.zeros((n, np.asarray(model.user_factors).shape[1]), dtype=np.float32)
    if in_model.any():
        uf[in_model] = np.asarray(model.user_factors)[uidx[in_model]]
    return UserBatch(rows[C.USER_ID].astype(str).to_numpy(), uf, in_model, hist, seen, touched,
                     raw, last_items, last_days.astype(np.float64), recent)


def seen_pairs(col, lens: np.ndarray, seen_types: frozenset) -> np.ndarray:
    """The seen rule for every pair of some user rows, row after row: a pair is seen when
    its event types meet ``seen_types``, and a pair without recorded types always is.
    ``col``: each row's per-pair event types (or null); ``lens``: each row's pairs. One
    ``isin`` over all the types."""
    types: list = []
    for t, k in zip(col, lens.tolist()):
        t = [] if t is None else list(t[:k])
        types += t + [None] * (k - len(t))
    known = np.fromiter((t is not None for t in types), bool, len(types))
    per = np.fromiter((len(t) if t is not None else 0 for t in types), np.int64, len(types))
    kinds = [np.asarray(t, dtype=object) for t in types if t is not None and len(t)]
    hit = np.isin(np.concatenate(kinds), list(seen_types)) if kinds else np.zeros(0, bool)
    met = np.bincount(np.repeat(np.arange(len(types)), per), weights=hit,
                      minlength=len(types)) > 0
    return ~known | met


def row_pointer(owner: np.ndarray, n: int) -> np.ndarray:
    """CSR row pointer (n + 1 entries) of entries whose rows ``owner`` (0..n-1) are in
    non-decreasing order."""
    return np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int64)


def ragged(flat: np.ndarray, pointer: np.ndarray) -> list[np.ndarray]:
    """``flat`` cut into one array per row (row r: ``flat[pointer[r]:pointer[r + 1]]``)."""
    return [flat[a:e] for a, e in zip(pointer[:-1].tolist(), pointer[1:].tolist())]


def _flat(col, dtype) -> np.ndarray:
    """One array of a list column's values, row after row."""
    parts = [np.asarray(v, dtype=dtype) for v in col]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _top_categories(owner: np.ndarray, cat: np.ndarray, n_events: np.ndarray, n: int,
                    names: np.ndarray) -> list[np.ndarray]:
    """Per user (0..n-1) the :data:`TOP_CATEGORIES` categories (codes >= 0) with the
    most events, ties by the category's name."""
    ok = cat >= 0
    m = len(names) + 1
    key, pos = np.unique(owner[ok] * m + cat[ok], return_inverse=True)
    counts = np.bincount(pos.ravel(), weights=n_events[ok], minlength=len(key))
    u, c = np.divmod(key, m)
    by_name = np.argsort(np.argsort(np.asarray(names).astype(str), kind="stable"),
                         kind="stable")
    order = np.lexsort((by_name[c], -counts, u))
    u, c = u[order], c[order]
    starts = np.searchsorted(u, np.arange(n + 1))
    return [c[a:min(e, a + TOP_CATEGORIES)].astype(np.int64)
            for a, e in zip(starts[:-1], starts[1:])]

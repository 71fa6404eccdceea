"""Users as retrieval and ranking see them: the one builder, used by the nightly stages,
the blend tuning and the offline evaluation alike.

The input is one row per user holding the user's interaction pairs as parallel lists
(:data:`USER_COLUMNS`): the Spark adapter (``vrec.spark.users.user_rows``) and
:func:`pairs_by_user` (pandas) only regroup pairs, they apply no rule. The rules live
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
    row per user (:data:`USER_COLUMNS`); ``users`` (when given) are kept in that order,
    with empty lists for users without pairs."""
    p = pairs.copy()
    p[C.USER_ID] = p[C.USER_ID].astype(str)
    if users is not None:  # only their pairs: an evaluation's users are few of many
        p = p[p[C.USER_ID].isin(set(np.asarray(users).astype(str).tolist()))]
    p[C.ITEM_ID] = p[C.ITEM_ID].astype(str)
    # seconds since the epoch whatever the frame's time unit (ns, us or ms)
    p["last_s"] = (pd.to_datetime(p["last_ts"], utc=True)
                   - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    if "event_types" not in p:
        p["event_types"] = None
    if "n_events" not in p:
        p["n_events"] = 1
    p = p.sort_values([C.USER_ID, C.ITEM_ID], kind="stable")
    g = p.groupby(C.USER_ID, sort=True)
    rows = pd.DataFrame({
        "items": g[C.ITEM_ID].agg(list), "weights": g["weight"].agg(list),
        "last_s": g["last_s"].agg(list), "event_types": g["event_types"].agg(list),
        "n_events": g["n_events"].agg(list)})
    if users is not None:
        rows = rows.reindex(pd.Index(np.asarray(users).astype(str), name=C.USER_ID))
        for col in rows.columns:
            rows[col] = [v if isinstance(v, list) else [] for v in rows[col]]
    return rows.rename_axis(C.USER_ID).reset_index()[list(USER_COLUMNS)]


def is_seen(types, seen_types: frozenset) -> bool:
    """The seen rule: a pair is seen when its event types meet ``seen_types`` (a pair
    without recorded event types always is)."""
    return types is None or bool(seen_types.intersection(list(types)))


def user_batch(rows: pd.DataFrame, space: ItemSpace, model: CFModel, recs: RecsSettings,
               end: pd.Timestamp, *, item_index: dict | None = None,
               user_index: dict | None = None) -> UserBatch:
    """A :class:`UserBatch` from user rows (:data:`USER_COLUMNS`); see the module doc
    for the rules. ``item_index`` / ``user_index`` (id -> position in the space / model)
    may be passed in to reuse them across batches."""
    item_index = item_index if item_index is not None else \
        {str(v): i for i, v in enumerate(space.item_ids)}
    user_index = user_index if user_index is not None else \
        {str(v): i for i, v in enumerate(model.user_ids)}
    seen_types = frozenset(recs.seen_event_types)
    end_s = pd.Timestamp(end).timestamp()
    half = recs.profile_half_life_days
    h_ptr, h_idx, h_val, h_raw, s_ptr, s_idx, touched = [0], [], [], [], [0], [], []
    last_items, last_days, recent = [], [], []
    exclude = rows["exclude"] if "exclude" in rows else [None] * len(rows)
    category = np.asarray(space.category).tolist()  # one lookup per pair: plain ints
    for items, weights, last_s, types, n_events, excl in zip(
            rows["items"], rows["weights"], rows["last_s"], rows["event_types"], rows["n_events"],
            exclude):
        cats: dict[int, int] = {}
        ages = (end_s - np.asarray(last_s, dtype=np.float64)) / 86400.0
        last_days.append(float(max(0.0, ages.min())) if len(ages) else np.nan)
        recent.append(int((ages <= 7.0).sum()))
        newest: list[tuple[float, int]] = []
        for k, it in enumerate(items):
            j = item_index.get(str(it), -1)
            if j < 0:
                continue
            w = float(weights[k])
            if w > 0:
                newest.append((float(last_s[k]), j))
                h_raw.append(w)
                if half:
                    age = max(0.0, (end_s - float(last_s[k])) / 86400.0)
                    w *= 0.5 ** (age / half)
                h_idx.append(j)
                h_val.append(w)
            t = types[k] if types is not None and len(types) > k else None
            if is_seen(t, seen_types):
                s_idx.append(j)
            c = category[j]
            if c >= 0:
                cats[c] = cats.get(c, 0) + int(n_events[k] if n_events is not None else 1)
        if excl is not None:
            s_idx += [j for j in (item_index.get(str(it), -1) for it in excl) if j >= 0]
        h_ptr.append(len(h_idx))
        s_ptr.append(len(s_idx))
        top = sorted(cats.items(), key=lambda kv: (-kv[1], str(space.category_names[kv[0]])))
        touched.append(np.asarray([c for c, _ in top[:TOP_CATEGORIES]], dtype=np.int64))
        newest.sort(key=lambda tj: (-tj[0], tj[1]))
        last_items.append(np.asarray([j for _, j in newest[:LAST_ITEMS]], dtype=np.int64))
    n = len(rows)
    hist = sp.csr_matrix((np.asarray(h_val, np.float32), np.asarray(h_idx, np.int64),
                          np.asarray(h_ptr, np.int64)), shape=(n, space.n))
    hist.sum_duplicates()
    raw = sp.csr_matrix((np.asarray(h_raw, np.float32), np.asarray(h_idx, np.int64),
                         np.asarray(h_ptr, np.int64)), shape=(n, space.n))
    raw.sum_duplicates()
    seen = sp.csr_matrix((np.ones(len(s_idx), np.int8), np.asarray(s_idx, np.int64),
                          np.asarray(s_ptr, np.int64)), shape=(n, space.n))
    seen.sum_duplicates()
    uidx = np.asarray([user_index.get(str(u), -1) for u in rows[C.USER_ID]], dtype=np.int64)
    in_model = uidx >= 0
    uf = np.zeros((n, np.asarray(model.user_factors).shape[1]), dtype=np.float32)
    if in_model.any():
        uf[in_model] = np.asarray(model.user_factors)[uidx[in_model]]
    return UserBatch(rows[C.USER_ID].astype(str).to_numpy(), uf, in_model, hist, seen, touched,
                     raw, last_items, np.asarray(last_days, dtype=np.float64),
                     np.asarray(recent, dtype=np.int64))

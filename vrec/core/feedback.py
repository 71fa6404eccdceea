"""The feedback loop, in pandas: how the published lists did (realised metrics), and which
items each user's next list leaves out (exposure rotation and dismissals).

**Realised metrics** (:func:`realised_metrics`). On the night ``ds``, each list published
on ``L`` (``ds - horizon_days <= L < ds``) is compared with the engagements of the days
after it: events with ``end of L <= ts < end of ds`` (``horizon_days = ds - L``). A user
counts when they had a list on ``L`` and at least one engagement in that window (the
*active* users); their relevant items are the items they engaged with there. Per list
and model version:

* slice ``all``: ``users``; ``hit_rate`` (share of active users who engaged with an item of
  their list); ``precision`` (mean of hits / list length); ``ndcg`` (binary relevance,
  ``1 / log2(rank + 1)`` per hit, over the ideal for ``min(relevant, list length)``
  hits); ``demand_coverage`` (share of the items anyone engaged with in the window that
  some list of ``L`` held);
* ``segment:warm`` / ``segment:cold`` (the user's segment that night): ``users``,
  ``hit_rate``, ``precision``, ``ndcg``;
* ``reason:<reason>``: ``rows`` (the active users' list rows with that reason), ``hits``
  (those engaged) and ``precision`` (hits / rows);
* with impressions of the list (``list_ds = L``): ``impressions`` and ``ctr`` (shown items
  the user engaged with at or after the impression, inside the window) in slice ``all``,
  per ``reason:<reason>`` and per ``position:<n>``.

**Exposure rotation** (:func:`rested_pairs`): an item shown to a user on
``max_unengaged_shows`` or more list nights in the last ``rest_days`` days (``L > ds -
rest_days``), each published after the user's latest engagement with it, is left out of
that user's lists. It comes back once fewer such shows remain in the window.

**Dismissals** (:func:`dismissed_pairs`): an item the user dismissed in the last
``dismiss_days`` days (``ts >= end of ds - dismiss_days``), and every item whose image
embedding has a cosine of at least ``similarity`` with it, is left out of that user's
lists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrec import columns as C

DAY = pd.Timedelta(days=1)


def end_of(ds: str) -> pd.Timestamp:
    """The end of day ``ds`` (the next day at 00:00 UTC)."""
    return pd.Timestamp(ds, tz="UTC") + DAY


def _utc(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True)


def realised_metrics(lists: pd.DataFrame, engaged: pd.DataFrame, ds: str, *,
                     impressions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The realised metrics of the night ``ds`` (module doc) as rows (list_ds,
    horizon_days, model_version, slice, metric, value).

    ``lists``: the published rows of every list night measured (list_ds, user_id, rank,
    item_id, reason, model_version, segment); ``engaged``: engagement events (user_id,
    item_id, ts) with ``ts`` before the end of ``ds``; ``impressions``: (user_id, item_id,
    list_ds, position, ts)."""
    out: list[tuple] = []
    if lists.empty:
        return _frame(out)
    eng = engaged[[C.USER_ID, C.ITEM_ID, C.TS]].copy()
    eng[C.TS] = _utc(eng[C.TS])
    eng = eng[eng[C.TS] < end_of(ds)]
    imp = impressions if impressions is not None else pd.DataFrame(
        columns=[C.USER_ID, C.ITEM_ID, C.LIST_DS, C.POSITION, C.TS])
    for list_ds, lst in lists.groupby(C.LIST_DS, sort=True):
        horizon = int((pd.Timestamp(ds) - pd.Timestamp(list_ds)).days)
        window = eng[eng[C.TS] >= end_of(list_ds)]
        listed_items = set(lst[C.ITEM_ID])
        engaged_items = set(window[C.ITEM_ID])
        shown = imp[imp[C.LIST_DS] == list_ds]
        for version, rows in lst.groupby("model_version", sort=True):
            key = (list_ds, horizon, str(version))
            out += [(*key, *r) for r in _list_metrics(rows, window, engaged_items,
                                                       listed_items)]
            if len(shown):
                out += [(*key, *r) for r in _ctr_rows(shown, rows, window)]
    return _frame(out)


def _list_metrics(rows: pd.DataFrame, window: pd.DataFrame, engaged_items: set,
                  listed_items: set) -> list[tuple[str, str, float]]:
    """(slice, metric, value) of one list night and model version: all users, by segment,
    by reason, and the coverage of demand (vectorised: a night's lists are millions of
    rows at scale)."""
    out: list[tuple[str, str, float]] = []
    active, users = user_scores(rows, window)
    for name, part in [("all", users)] + [
            (f"segment:{seg}", users[users["segment"] == seg]) for seg in ("warm", "cold")]:
        out.append((name, "users", float(len(part))))
        if len(part):
            out += [(name, "hit_rate", float((part["hits"] > 0).mean())),
                    (name, "precision", float((part["hits"] / part["k"]).mean())),
                    (name, "ndcg", float(part["ndcg"].mean()))]
    if engaged_items:
        out.append(("all", "demand_coverage",
                    len(engaged_items & listed_items) / len(engaged_items)))
    for reason, g in active.groupby("reason", sort=True):
        out += [(f"reason:{reason}", "rows", float(len(g))),
                (f"reason:{reason}", "hits", float(g["hit"].sum())),
                (f"reason:{reason}", "precision", float(g["hit"].mean()))]
    return out


def user_scores(rows: pd.DataFrame, window: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the active users' list rows with ``hit``, and per active user: list length ``k``,
    hits, NDCG and segment): the realised metrics per user, which a paired comparison of
    two nights' lists uses (benchmarks/paired_lists.py). ``window``: the window's
    engagements (user_id, item_id)."""
    pairs = window[[C.USER_ID, C.ITEM_ID]].drop_duplicates()
    n_rel = pairs.groupby(C.USER_ID).size()
    active = rows[rows[C.USER_ID].isin(n_rel.index)]
    active = active.merge(pairs, on=[C.USER_ID, C.ITEM_ID], how="left", indicator="_m")
    active["hit"] = (active.pop("_m") == "both").to_numpy()
    if "segment" not in active:
        active["segment"] = "warm"
    gain = active["hit"] / np.log2(active["rank"].to_numpy(dtype=float) + 1.0)
    g = active.assign(gain=gain).groupby(C.USER_ID, sort=True).agg(
        k=("rank", "size"), hits=("hit", "sum"), dcg=("gain", "sum"),
        segment=("segment", "first"))
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, int(g["k"].max() if len(g) else 1) + 2)))
    m = np.minimum(n_rel.reindex(g.index).to_numpy(), g["k"].to_numpy())
    g["ndcg"] = g["dcg"].to_numpy() / ideal[np.maximum(m, 1) - 1]
    g["segment"] = g["segment"].astype(str)
    return active, g


def _ctr_rows(shown: pd.DataFrame, rows: pd.DataFrame, window: pd.DataFrame
              ) -> list[tuple[str, str, float]]:
    """Impressions and click-through of one list night: all, by reason, by position."""
    s = shown[shown[C.USER_ID].isin(set(rows[C.USER_ID]))].copy()
    s[C.TS] = _utc(s[C.TS])
    # one impression per (user, item): its first showing and best position
    s = s.sort_values([C.TS, C.POSITION]).groupby([C.USER_ID, C.ITEM_ID], as_index=False) \
        .agg(ts=(C.TS, "first"), position=(C.POSITION, "min"))
    last_eng = window.groupby([C.USER_ID, C.ITEM_ID], as_index=False)[C.TS].max() \
        .rename(columns={C.TS: "eng_ts"})
    s = s.merge(last_eng, on=[C.USER_ID, C.ITEM_ID], how="left")
    s["clicked"] = s["eng_ts"].notna() & (s["eng_ts"] >= s[C.TS])
    s = s.merge(rows[[C.USER_ID, C.ITEM_ID, "reason"]], on=[C.USER_ID, C.ITEM_ID], how="left")
    out = [("all", "impressions", float(len(s))), ("all", "ctr", float(s["clicked"].mean()))]
    for col, prefix in (("reason", "reason"), (C.POSITION, "position")):
        for key, g in s.dropna(subset=[col]).groupby(col, sort=True):
            name = f"{prefix}:{int(key) if col == C.POSITION else key}"
            out += [(name, "impressions", float(len(g))),
                    (name, "ctr", float(g["clicked"].mean()))]
    return out


def _frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[C.LIST_DS, "horizon_days", "model_version", "slice",
                                     "metric", "value"])
    return df.astype({"horizon_days": "int32", "value": "float64"})


def rested_pairs(impressions: pd.DataFrame, engaged: pd.DataFrame, ds: str, *,
                 max_shows: int, rest_days: int) -> pd.DataFrame:
    """(user_id, item_id, shows) of the items exposure rotation leaves out on ``ds``
    (module doc). ``impressions``: (user_id, item_id, list_ds); ``engaged``: (user_id,
    item_id, ts) engagements up to the end of ds."""
    cols = [C.USER_ID, C.ITEM_ID, "shows"]
    if max_shows <= 0 or impressions.empty:
        return pd.DataFrame(columns=cols)
    first = (pd.Timestamp(ds) - pd.Timedelta(days=rest_days - 1)).strftime("%Y-%m-%d")
    imp = impressions[(impressions[C.LIST_DS] >= first) & (impressions[C.LIST_DS] <= ds)]
    shows = imp[[C.USER_ID, C.ITEM_ID, C.LIST_DS]].drop_duplicates()
    if shows.empty:
        return pd.DataFrame(columns=cols)
    last = engaged.assign(ts=_utc(engaged[C.TS])).groupby([C.USER_ID, C.ITEM_ID],
                                                          as_index=False)[C.TS].max()
    shows = shows.merge(last, on=[C.USER_ID, C.ITEM_ID], how="left")
    published = pd.to_datetime(shows[C.LIST_DS], utc=True) + DAY
    unengaged = shows[shows[C.TS].isna() | (shows[C.TS] < published)]
    n = unengaged.groupby([C.USER_ID, C.ITEM_ID]).size().rename("shows").reset_index()
    return n[n["shows"] >= max_shows][cols].reset_index(drop=True)


def near_duplicates(items: np.ndarray, emb: np.ndarray, has_vec: np.ndarray,
                    similarity: float, *, chunk: int = 256) -> dict[int, np.ndarray]:
    """For each item row in ``items``: the rows whose embedding has a cosine of at least
    ``similarity`` with it (itself included; only itself without a vector). One matrix
    product per ``chunk`` of items."""
    items = np.unique(np.asarray(items, dtype=np.int64))
    out = {int(i): np.asarray([i], dtype=np.int64) for i in items}
    rows = np.flatnonzero(has_vec)
    q_rows = items[np.asarray(has_vec)[items]] if len(items) else items
    if not len(rows) or not len(q_rows):
        return out
    v = np.asarray(emb[rows], dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    for a in range(0, len(q_rows), chunk):
        q = np.asarray(emb[q_rows[a:a + chunk]], dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        close = (v @ q.T) >= similarity
        for j, i in enumerate(q_rows[a:a + chunk]):
            out[int(i)] = np.union1d([i], rows[close[:, j]])
    return out


def dismissed_pairs(dismisses: pd.DataFrame, ds: str, *, days: int,
                    index: dict[str, int], item_ids: np.ndarray, emb: np.ndarray,
                    has_vec: np.ndarray, similarity: float) -> pd.DataFrame:
    """(user_id, item_id, dismissed) of the items dismissals leave out on ``ds``: each
    item dismissed in the last ``days`` days and its near-duplicates (module doc);
    ``dismissed`` names the item the user dismissed. ``index`` maps item ids to rows of
    ``emb``."""
    cols = [C.USER_ID, C.ITEM_ID, "dismissed"]
    if days <= 0 or dismisses.empty:
        return pd.DataFrame(columns=cols)
    since = end_of(ds) - pd.Timedelta(days=days)
    d = dismisses[_utc(dismisses[C.TS]) >= since][[C.USER_ID, C.ITEM_ID]].drop_duplicates()
    d = d[d[C.ITEM_ID].astype(str).isin(index)]
    if d.empty:
        return pd.DataFrame(columns=cols)
    rows = d[C.ITEM_ID].astype(str).map(index).to_numpy()
    near = near_duplicates(rows, emb, has_vec, similarity)
    users, items, origin = [], [], []
    for u, it, r in zip(d[C.USER_ID], d[C.ITEM_ID], rows):
        nb = near[int(r)]
        users += [u] * len(nb)
        items += list(item_ids[nb])
        origin += [it] * len(nb)
    out = pd.DataFrame({C.USER_ID: users, C.ITEM_ID: items, "dismissed": origin})
    return out.drop_duplicates([C.USER_ID, C.ITEM_ID]).reset_index(drop=True)


def drop_warning(history: pd.DataFrame, *, drop: float, min_users: int,
                 nights: int = 7) -> dict | None:
    """A warning when the latest list's realised NDCG at horizon 1 fell below ``(1 -
    drop)`` times the median of the ``nights`` list nights before it; None otherwise or
    when either side has fewer than ``min_users`` users. ``history``: realised_metrics
    rows (list_ds, horizon_days, slice, metric, value) of any nights."""
    h = history[(history["horizon_days"] == 1) & (history["slice"] == "all")]
    wide = h.pivot_table(index=C.LIST_DS, columns="metric", values="value", aggfunc="mean")
    if "ndcg" not in wide or "users" not in wide:
        return None
    wide = wide[wide["users"] >= min_users].dropna(subset=["ndcg"]).sort_index()
    if len(wide) < 2:
        return None
    latest, before = wide.iloc[-1], wide.iloc[:-1].tail(nights)
    median = float(before["ndcg"].median())
    if median <= 0 or float(latest["ndcg"]) >= (1.0 - drop) * median:
        return None
    return {"list_ds": str(wide.index[-1]), "ndcg": round(float(latest["ndcg"]), 5),
            "median_before": round(median, 5), "nights_before": int(len(before)),
            "message": f"realised NDCG of the lists of {wide.index[-1]} is "
                       f"{float(latest['ndcg']):.4f}, below {1 - drop:.0%} of the median "
                       f"{median:.4f} of the {len(before)} list nights before"}

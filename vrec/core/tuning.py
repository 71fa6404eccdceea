"""Blend tuning on a validation window (README "Blend tuning").

The run's interaction pairs are split as of the run (``user``: each user's latest
``tune_fraction`` of positive pairs by last event; ``time``: pairs whose last event falls
in the last ``tune_days``), a CF model with the run's ALS settings is fit on the rest, and
the hybrid ranker (the production code) builds lists for a sample of validation users at
each (visual weight, history shrink) of the grid. CF only (0, 0) is the default; a
blend replaces it only when its mean per-user NDCG@k beats CF only by more than
``tune_min_gain_se`` standard errors of the paired per-user difference, and then the
best such blend wins. The chosen blend is therefore never worse than CF only on the
window, and noise does not move it.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import CFSettings, RecsSettings
from vrec.core.metrics import ndcg_at_k
from vrec.core.ranking import ItemSpace, ListPolicy, UserBatch, assemble, candidates


def split_pairs(pairs: pd.DataFrame, *, mode: str, fraction: float, days: float,
                end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train pairs, validation positive pairs) of the validation window."""
    ts = pd.to_datetime(pairs["last_ts"], utc=True)
    pos = pairs["weight"].to_numpy() > 0
    if mode == "time":
        val = (ts >= end - pd.Timedelta(days=days)).to_numpy()
        return pairs[~val], pairs[val & pos]
    p = pairs.assign(_ts=ts, _pos=pos)
    p = p.sort_values([C.USER_ID, "_ts", C.ITEM_ID], kind="stable")
    n_pos = p.groupby(C.USER_ID)["_pos"].transform("sum")
    order_from_end = p[p["_pos"]].groupby(C.USER_ID).cumcount(ascending=False)
    take = np.ceil(fraction * n_pos).astype(int)
    val = pd.Series(False, index=p.index)
    val.loc[order_from_end.index] = (order_from_end < take.loc[order_from_end.index]) & \
        (n_pos.loc[order_from_end.index] >= 3)
    return p.loc[~val].drop(columns=["_ts", "_pos"]), p.loc[val].drop(columns=["_ts", "_pos"])


def _policy(recs: RecsSettings) -> ListPolicy:
    return ListPolicy(k=recs.k, candidates=recs.candidates, visual_weight=recs.visual_weight,
                      history_shrink=recs.history_shrink, normalize=recs.normalize,
                      new_arrival_slots=recs.new_arrival_slots, mmr_penalty=recs.mmr_penalty,
                      max_per_category=recs.max_per_category,
                      cold_user_categories=recs.cold_user_categories)


def policy_from(recs: RecsSettings, blend: dict | None = None) -> ListPolicy:
    """The ranker's policy from settings, with a tuned blend applied when given."""
    p = _policy(recs)
    if blend and blend.get("chosen"):
        p = dataclasses.replace(p, **blend["chosen"])
    return p


def gate_new_arrivals(space: ItemSpace, policy: ListPolicy, map_quality: dict | None,
                      min_auc: float) -> tuple[ItemSpace, ListPolicy, str | None]:
    """Use the cold-start map only when it ranks held-out warm items for their users with
    AUC >= ``min_auc``. Below that (or without a map) a map no better than chance would
    spend list places on noise: new arrivals get no reserved slots and no predicted CF
    score (they stay reachable through the visual profile, as plain items). Returns the
    item space and policy to rank with and why the map was turned off (or None)."""
    a = (map_quality or {}).get("auc_mapped")
    if a is not None and a >= min_auc:
        return space, policy, None
    why = (f"cold-start map AUC {a} < recs.new_arrival_min_auc {min_auc}" if a is not None
           else f"no cold-start map ({(map_quality or {}).get('skipped', 'not fit')})")
    new = np.asarray(space.new, dtype=bool)
    factors = np.array(space.factors, dtype=np.float32)
    factors[new] = 0.0
    return (dataclasses.replace(space, new=np.zeros_like(new), factors=factors),
            dataclasses.replace(policy, new_arrival_slots=0), why)


def profile_weights(pairs: pd.DataFrame, end: pd.Timestamp, half_life: float | None
                    ) -> np.ndarray:
    """weight × recency of each pair (README "How a list is built")."""
    w = pairs["weight"].to_numpy(dtype=np.float64)
    if not half_life:
        return w
    age = (end - pd.to_datetime(pairs["last_ts"], utc=True)).dt.total_seconds().to_numpy() / 86400
    return w * 0.5 ** (np.maximum(age, 0) / half_life)


def batch_from_pairs(users: np.ndarray, pairs: pd.DataFrame, *, space, model, end,
                     half_life: float | None) -> UserBatch:
    """A :class:`UserBatch` for ``users`` from their (training) pairs: history = pairs
    with weight > 0, seen = all pairs."""
    from vrec.spark.candidates import seen_matrix
    from vrec.spark.ranking import index_of

    p = pairs[pairs[C.USER_ID].isin(set(users))]
    r = index_of(p[C.USER_ID].to_numpy(), users)
    c = index_of(p[C.ITEM_ID].to_numpy(), space.item_ids)
    ok = c >= 0
    w = profile_weights(p, end, half_life)
    h = ok & (w > 0)
    hist = sp.csr_matrix((w[h].astype(np.float32), (r[h], c[h])), shape=(len(users), space.n))
    seen = seen_matrix(r[ok], c[ok], len(users), space.n)
    uidx = index_of(users, model.user_ids)
    in_model = uidx >= 0
    uf = np.zeros((len(users), model.user_factors.shape[1]), dtype=np.float32)
    uf[in_model] = model.user_factors[uidx[in_model]]
    return UserBatch(np.asarray(users), uf, in_model, hist.tocsr(), seen, [])


def fit_space(train: pd.DataFrame, catalog: pd.DataFrame, vectors: pd.DataFrame,
              trending_ids: list[str], *, cf: CFSettings, recs: RecsSettings, seed: int = 0,
              matrix=None):
    """(CF model fit with implicit on ``train``, its item space, the map quality), as the
    tuning and the offline evaluation use them."""
    from vrec.core.cf import CFModel, build_matrix, fit_implicit
    from vrec.spark.ranking import build_item_space

    uids, iids, mat = matrix or build_matrix(train, cf.alpha)
    uf, itf, _ = fit_implicit(mat, cf)
    model = CFModel(user_ids=uids, item_ids=iids, user_factors=uf, item_factors=itf,
                    params={}, version="offline")
    space, _, quality = build_item_space(
        model, catalog, vectors, train, trending_ids, cold_item_max_users=recs.cold_item_max_users,
        map_min_users=recs.map_min_users, seed=seed)
    return model, space, quality


def tune_blend(pairs: pd.DataFrame, catalog: pd.DataFrame, vectors: pd.DataFrame,
               trending_ids: list[str], *, cf: CFSettings, recs: RecsSettings,
               end: pd.Timestamp, seed: int = 0) -> dict:
    """Choose (visual_weight, history_shrink) on a validation window; see module doc."""
    from vrec.core.cf import build_matrix

    t0 = time.perf_counter()
    train, val = split_pairs(pairs, mode=recs.tune_split, fraction=recs.tune_fraction,
                             days=recs.tune_days, end=end)
    out = {"split": recs.tune_split, "train_pairs": int(len(train)), "val_pairs": int(len(val)),
           "grid": {}, "chosen": None}
    uids, iids, mat = build_matrix(train, cf.alpha)
    val = val[val[C.USER_ID].isin(set(uids))]
    users = np.asarray(sorted(val[C.USER_ID].unique()), dtype=object)
    if len(users) > recs.tune_max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, recs.tune_max_users,
                                                           replace=False))
    out["val_users"] = int(len(users))
    if len(users) < recs.tune_min_users:
        out["skipped"] = f"{len(users)} validation users < tune_min_users {recs.tune_min_users}"
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out
    model, space, quality = fit_space(train, catalog, vectors, trending_ids, cf=cf, recs=recs,
                                      seed=seed, matrix=(uids, iids, mat))
    cut = end if recs.tune_split == "user" else end - pd.Timedelta(days=recs.tune_days)
    batch = batch_from_pairs(users, train, space=space, model=model, end=cut,
                             half_life=recs.profile_half_life_days)
    relevant = {u: set(g) for u, g in val[val[C.USER_ID].isin(set(users))]
                .groupby(C.USER_ID)[C.ITEM_ID]}
    space, base, out["slots_off"] = gate_new_arrivals(space, _policy(recs), quality,
                                                      recs.new_arrival_min_auc)
    cands = candidates(batch, space, base)

    def per_user(policy: ListPolicy) -> np.ndarray:
        lists = assemble(batch, space, cands, policy)
        ids = space.item_ids[lists["item"].to_numpy()]
        per = pd.Series(ids).groupby(lists["user_id"].to_numpy()).apply(list).to_dict()
        return np.asarray([ndcg_at_k(per.get(u, []), relevant[u], recs.k) for u in relevant])

    def score(policy: ListPolicy) -> float:
        return round(float(per_user(policy).mean()), 5)

    grid = [(0.0, 0.0)] + [(b, h) for b in recs.tune_grid for h in recs.tune_shrink_grid
                           if (b, h) != (0.0, 0.0)]
    cf_only = per_user(dataclasses.replace(base, visual_weight=0.0, history_shrink=0.0))
    best = (round(float(cf_only.mean()), 5), 0.0, 0.0)
    out["grid"]["0/0"] = best[0]
    for b, h in grid[1:]:
        v = per_user(dataclasses.replace(base, visual_weight=b, history_shrink=h))
        d = v - cf_only
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        mean = round(float(v.mean()), 5)
        out["grid"][f"{b:g}/{h:g}"] = mean
        # a blend must beat CF only by more than tune_min_gain_se standard errors of the
        # paired per-user difference: 3 SE covers the ~11 grid points compared (Bonferroni)
        if d.mean() > recs.tune_min_gain_se * se and mean > best[0]:
            best = (mean, b, h)
    out["cf_only_ndcg"] = out["grid"]["0/0"]
    out["als_only_ndcg"] = score(dataclasses.replace(
        base, visual_weight=0.0, history_shrink=0.0, new_arrival_slots=0, mmr_penalty=0.0,
        max_per_category=0))
    out["chosen"] = {"visual_weight": best[1], "history_shrink": best[2]}
    out["chosen_ndcg"] = best[0]
    out["map_quality"] = quality
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out

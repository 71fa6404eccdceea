"""Blend tuning on a validation window (docs/ranking.md "Blend tuning").

The run's interaction pairs are split as of the run (``user``: each user's latest
``tune_fraction`` of positive pairs by last event; ``time``: pairs whose last event falls
in the last ``tune_days``), a CF model is fit on the rest with the run's engine and settings (the
``fit`` callable: ``vrec.spark.cf.fit_cf``), and retrieval and the ranker (the production
code, on users built by vrec.core.users) build lists for a sample of validation users at
each (visual weight, history shrink) of the grid. CF only (0, 0) is the default; a
blend replaces it only when its mean per-user NDCG@k beats CF only by more than
``tune_min_gain_se`` standard errors of the paired per-user difference, and then the
best such blend wins. The chosen blend is therefore never worse than CF only on the
window, and noise does not move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import RecsSettings
from vrec.core.itemspace import build_item_space, gate_new_arrivals, ranking_policy
from vrec.core.metrics import ndcg_at_k
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import retrieve
from vrec.core.users import pairs_by_user, user_batch

if TYPE_CHECKING:
    from vrec.core.cf import CFModel


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


def tune_blend(pairs: pd.DataFrame, catalog: pd.DataFrame, vectors: pd.DataFrame,
               trending_ids: list[str], *, recs: RecsSettings, end: pd.Timestamp,
               fit: Callable[[pd.DataFrame], CFModel], seed: int = 0) -> dict:
    """Choose (visual_weight, history_shrink) on a validation window; see module doc.
    ``fit`` fits the run's CF engine on training pairs (``vrec.spark.cf.fit_cf``)."""
    t0 = time.perf_counter()
    train, val = split_pairs(pairs, mode=recs.tune_split, fraction=recs.tune_fraction,
                             days=recs.tune_days, end=end)
    out = {"split": recs.tune_split, "train_pairs": int(len(train)), "val_pairs": int(len(val)),
           "grid": {}, "chosen": None}
    trained = set(train.loc[train["weight"] > 0, C.USER_ID].astype(str))
    val = val[val[C.USER_ID].astype(str).isin(trained)]
    users = np.asarray(sorted(val[C.USER_ID].astype(str).unique()), dtype=object)
    if len(users) > recs.tune_max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, recs.tune_max_users,
                                                           replace=False))
    out["val_users"] = int(len(users))
    if len(users) < recs.tune_min_users:
        out["skipped"] = f"{len(users)} validation users < tune_min_users {recs.tune_min_users}"
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out
    model = fit(train)
    out["cf"] = {k: model.params.get(k) for k in ("engine", "device")}
    space, quality = build_item_space(model, catalog, vectors, train, trending_ids, recs,
                                      seed=seed)
    space, out["slots_off"] = gate_new_arrivals(space, quality, recs.new_arrival_min_auc)
    base = ranking_policy(recs, None, out["slots_off"])
    cut = end if recs.tune_split == "user" else end - pd.Timedelta(days=recs.tune_days)
    batch = user_batch(pairs_by_user(train, users), space, model, recs, cut)
    relevant = {u: set(g.astype(str)) for u, g in val[val[C.USER_ID].astype(str).isin(set(users))]
                .groupby(val[C.USER_ID].astype(str))[C.ITEM_ID]}
    inp = retrieve(batch, space, recs.candidates)

    def per_user(policy: RecsSettings) -> np.ndarray:
        per = lists_by_user(rank(inp, space, policy), space)
        return np.asarray([ndcg_at_k(per.get(u, []), relevant[u], recs.k) for u in relevant])

    def score(policy: RecsSettings) -> float:
        return round(float(per_user(policy).mean()), 5)

    def blend(b: float, h: float, **more) -> RecsSettings:
        return base.model_copy(update={"visual_weight": b, "history_shrink": h, **more})

    grid = [(0.0, 0.0)] + [(b, h) for b in recs.tune_grid for h in recs.tune_shrink_grid
                           if (b, h) != (0.0, 0.0)]
    cf_only = per_user(blend(0.0, 0.0))
    best = (round(float(cf_only.mean()), 5), 0.0, 0.0)
    out["grid"]["0/0"] = best[0]
    for b, h in grid[1:]:
        v = per_user(blend(b, h))
        d = v - cf_only
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        mean = round(float(v.mean()), 5)
        out["grid"][f"{b:g}/{h:g}"] = mean
        # a blend must beat CF only by more than tune_min_gain_se standard errors of the
        # paired per-user difference: 3 SE covers the ~11 grid points compared (Bonferroni)
        if d.mean() > recs.tune_min_gain_se * se and mean > best[0]:
            best = (mean, b, h)
    out["cf_only_ndcg"] = out["grid"]["0/0"]
    out["als_only_ndcg"] = score(blend(0.0, 0.0, new_arrival_slots=0, mmr_penalty=0.0,
                                       max_per_category=0))
    out["chosen"] = {"visual_weight": best[1], "history_shrink": best[2]}
    out["chosen_ndcg"] = best[0]
    out["map_quality"] = quality
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out

"""Offline evaluation of the hybrid ranker on a holdout (README "Quality on real data").

:func:`evaluate_hybrid` trains the CF model on the training pairs, tunes the blend on a
validation window carved from the training pairs only (as the nightly run does), and
scores the test users with the production ranker under four list policies: hybrid
(tuned blend, reserved new-arrival slots when the map qualifies), the same without the
slots, ALS only, and visual only. Cold items are
test items with an image and no training pairs.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, RecsSettings
from vrec.hybrid import assemble, auc, candidates
from vrec.metrics import ndcg_at_k


def per_user_chronological_split(pairs: pd.DataFrame, fraction: float = 0.2,
                                 min_pairs: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``fraction`` of pairs (by last_ts) is test, for users with at
    least ``min_pairs`` pairs; returns (train, test)."""
    p = pairs.sort_values([C.USER_ID, "last_ts", C.ITEM_ID], kind="stable")
    n = p.groupby(C.USER_ID)[C.ITEM_ID].transform("size")
    from_end = p.groupby(C.USER_ID).cumcount(ascending=False)
    test = (from_end < np.ceil(fraction * n)) & (n >= min_pairs)
    return p[~test], p[test]


def _lists(batch, space, cands, policy) -> dict:
    df = assemble(batch, space, cands, policy)
    ids = space.item_ids[df["item"].to_numpy()]
    return pd.Series(ids).groupby(df["user_id"].to_numpy()).apply(list).to_dict()


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = a - b
    return {"diff": round(float(d.mean()), 5),
            "stderr": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, 5)}


def evaluate_hybrid(train: pd.DataFrame, relevant: dict, catalog: pd.DataFrame,
                    vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                    end: pd.Timestamp, seed: int = 0) -> dict:
    """Hybrid vs ALS-only vs visual-only on held-out relevant items (see module doc)."""
    from vrec.tuning import batch_from_pairs, fit_space, gate_slots, policy_from, tune_blend

    t0 = time.perf_counter()
    pos = train[train["weight"] > 0]
    trending = pos[C.ITEM_ID].value_counts().index.astype(str).tolist()
    tuned = tune_blend(train, catalog, vectors, trending, cf=cf, recs=recs, end=end, seed=seed)
    model, space, map_quality = fit_space(train, catalog, vectors, trending, cf=cf, recs=recs,
                                          seed=seed)
    users = np.asarray(sorted(relevant), dtype=object)
    batch = batch_from_pairs(users, train, space=space, model=model, end=end,
                             half_life=recs.profile_half_life_days)
    hybrid, slots_off = gate_slots(policy_from(recs, tuned), map_quality,
                                   recs.new_arrival_min_auc)
    cands = candidates(batch, space, hybrid)
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    policies = {
        "hybrid": hybrid,
        "hybrid_no_slots": dataclasses.replace(hybrid, new_arrival_slots=0),
        "als": dataclasses.replace(hybrid, visual_weight=0.0, history_shrink=0.0, **plain),
        "visual": dataclasses.replace(hybrid, visual_weight=1.0, history_shrink=0.0, **plain),
    }
    lists = {name: _lists(batch, space, cands, p) for name, p in policies.items()}
    k = recs.k
    ndcg = {name: np.array([ndcg_at_k(lists[name].get(u, []), relevant[u], k) for u in users])
            for name in lists}
    # cold items: relevant test items with an image and no training pairs
    new_ids = set(space.item_ids[np.asarray(space.new, dtype=bool)])
    cold_rel = {u: relevant[u] & new_ids for u in users if relevant[u] & new_ids}
    new_idx = np.flatnonzero(space.new)
    pos_of = {str(space.item_ids[i]): j for j, i in enumerate(new_idx)}
    row_of = {u: r for r, u in enumerate(users)}
    auc_map, auc_cos, hits = [], [], 0
    cold_ndcg = {name: [] for name in lists}
    for u, rel in cold_rel.items():
        r = row_of[u]
        seen = set(batch.seen.indices[batch.seen.indptr[r]:batch.seen.indptr[r + 1]])
        keep = np.asarray([i not in seen for i in new_idx])
        is_rel = np.zeros(len(new_idx), bool)
        is_rel[[pos_of[i] for i in rel]] = True
        if batch.in_model[r]:
            s = space.factors[new_idx] @ batch.uf[r]
            auc_map.append(auc(s[keep & is_rel], s[keep & ~is_rel]))
        if cands.has_profile[r]:
            s = space.emb[new_idx] @ cands.profiles[r]
            auc_cos.append(auc(s[keep & is_rel], s[keep & ~is_rel]))
        hits += bool(set(lists["hybrid"].get(u, [])) & rel)
        for name in lists:
            cold_ndcg[name].append(ndcg_at_k(lists[name].get(u, []), rel, k))
    with_new = np.mean([bool(set(lists["hybrid"].get(u, [])) & new_ids) for u in users])
    return {
        "users": int(len(users)), "train_pairs": int(len(train)), "k": k,
        "tuning": {key: tuned.get(key) for key in ("chosen", "grid", "cf_only_ndcg",
                                                    "chosen_ndcg", "val_users", "skipped")},
        "map_quality": map_quality, "new_arrival_slots": hybrid.new_arrival_slots,
        "slots_off": slots_off,
        "ndcg_all": {name: round(float(v.mean()), 5) for name, v in ndcg.items()},
        "hybrid_vs_als_all": _paired(ndcg["hybrid"], ndcg["als"]),
        "hybrid_no_slots_vs_als_all": _paired(ndcg["hybrid_no_slots"], ndcg["als"]),
        "cold": {"items_new": len(new_ids), "users_with_cold_relevant": len(cold_rel),
                 "auc_map": round(float(np.nanmean(auc_map)), 4) if auc_map else None,
                 "auc_visual_cosine": round(float(np.nanmean(auc_cos)), 4) if auc_cos else None,
                 "ndcg": {n: round(float(np.mean(v)), 5) if v else None
                          for n, v in cold_ndcg.items()},
                 "hit_rate_hybrid": round(hits / max(1, len(cold_rel)), 4)},
        "lists_with_new_arrival": round(float(with_new), 4),
        "coverage": {name: round(len({i for lst in lists[name].values() for i in lst})
                                 / space.n, 4) for name in lists},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def movielens_pairs(ml_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, catalog) from MovieLens CSVs with vrec's default rating weights
    (rating >= 3: 2·r/5, else weight 0 = seen only)."""
    from pathlib import Path

    r = pd.read_csv(Path(ml_dir) / "ratings.csv")
    m = pd.read_csv(Path(ml_dir) / "movies.csv")
    pairs = pd.DataFrame({
        C.USER_ID: r["userId"].astype(str), C.ITEM_ID: r["movieId"].astype(str),
        "weight": np.where(r["rating"] >= 3.0, 2.0 * r["rating"] / 5.0, 0.0),
        "rating": r["rating"], "last_ts": pd.to_datetime(r["timestamp"], unit="s", utc=True)})
    catalog = pd.DataFrame({C.ITEM_ID: m["movieId"].astype(str),
                            C.CATEGORY: m["genres"].str.split("|").str[0]})
    return pairs, catalog


def run_movielens(ml_dir, vectors: pd.DataFrame, *, recs: RecsSettings | None = None,
                  cf: CFSettings | None = None) -> dict:
    """Per-user chronological split (last 20%; relevant = test ratings >= 3.5)."""
    pairs, catalog = movielens_pairs(ml_dir)
    train, test = per_user_chronological_split(pairs)
    rel = test[test["rating"] >= 3.5].groupby(C.USER_ID)[C.ITEM_ID].apply(set).to_dict()
    end = pairs["last_ts"].max() + pd.Timedelta(seconds=1)
    return evaluate_hybrid(train.drop(columns=["rating"]), rel, catalog, vectors,
                           cf=cf or CFSettings(), recs=recs or RecsSettings(), end=end)


def run_fashion(folder, vectors: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                test_days: int = 7, recs: RecsSettings | None = None,
                cf: CFSettings | None = None, seed: int = 0) -> dict:
    """Simulated shoppers (vrec.fashion); global time cutoff: train on the first
    ``days - test_days`` days, test on clicks of the last ``test_days``; items arriving
    in the test days are new arrivals with real photos and no history."""
    from vrec.fashion import load_styles, simulate_shoppers

    styles = load_styles(folder, set(vectors[C.ITEM_ID].astype(str)))
    events, items = simulate_shoppers(styles, n_users=n_users, days=days, seed=seed)
    cut = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=days - test_days)
    ev = events.assign(weight=2.0)
    tr, te = ev[ev[C.TS] < cut], ev[ev[C.TS] >= cut]
    train = tr.groupby([C.USER_ID, C.ITEM_ID], as_index=False).agg(
        weight=("weight", "sum"), last_ts=(C.TS, "max"))
    seen = set(zip(train[C.USER_ID], train[C.ITEM_ID]))
    te = te[[(u, i) not in seen for u, i in zip(te[C.USER_ID], te[C.ITEM_ID])]]
    rel = te.groupby(C.USER_ID)[C.ITEM_ID].apply(set).to_dict()
    catalog = pd.DataFrame({C.ITEM_ID: items[C.ITEM_ID], C.CATEGORY: items["masterCategory"]})
    out = evaluate_hybrid(train, rel, catalog, vectors, cf=cf or CFSettings(),
                          recs=recs or RecsSettings(), end=cut, seed=seed)
    out["simulation"] = {"users": n_users, "days": days, "test_days": test_days,
                         "events": int(len(events)), "items": int(len(items))}
    return out

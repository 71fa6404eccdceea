"""Real-data evaluation harnesses (not part of the nightly run): MovieLens-small with its
posters and fashion-small with simulated shoppers, evaluated through vrec's production
retrieval and ranker. Used by ``benchmarks/eval_hybrid.py``, ``benchmarks/eval_models.py``,
``benchmarks/bench_embed.py`` and the real-data tests (``make test-real``).

* :func:`evaluate_hybrid`: hybrid vs ALS-only vs visual-only on held-out relevant items,
  plus how the cold-start map and the naive visual cosine rank cold items (AUC);
* :func:`run_movielens`, :func:`run_fashion`: that on each data set;
* :func:`run_movielens_models`: the nightly evaluation's four models on all of MovieLens.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, RecsSettings
from vrec.core.coldstart import auc
from vrec.core.evaluation import (
    evaluate_models,
    fit_for_eval,
    per_user_chronological_split,
    time_holdout,
    user_holdout,
)
from vrec.core.metrics import ndcg_at_k
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import profiles, retrieve
from vrec.core.similar import exact_topk
from vrec.spark.cf import fit_cf


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = a - b
    return {"diff": round(float(d.mean()), 5),
            "stderr": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, 5)}



def evaluate_hybrid(train: pd.DataFrame, relevant: dict, catalog: pd.DataFrame,
                    vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                    end: pd.Timestamp, seed: int = 0) -> dict:
    """Hybrid vs ALS-only vs visual-only on held-out relevant items (see module doc)."""
    t0 = time.perf_counter()
    pos = train[train["weight"] > 0]
    trending = pos[C.ITEM_ID].value_counts().index.astype(str).tolist()
    users = np.asarray(sorted(relevant), dtype=object)
    f = fit_for_eval(train, users, catalog, vectors, trending, recs=recs, end=end,
                     fit=lambda p: fit_cf(p, cf), seed=seed)
    tuned, batch, map_quality = f.tuned, f.batch, f.map_quality
    space, hybrid, slots_off = f.space, f.policy, f.slots_off
    cold_space = f.space_ungated  # the cold-items analysis looks at the map even when off
    inp = retrieve(batch, space, hybrid.candidates)
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    policies = {
        "hybrid": hybrid,
        "hybrid_no_slots": hybrid.model_copy(update={"new_arrival_slots": 0}),
        "als": hybrid.model_copy(update=dict(visual_weight=0.0, history_shrink=0.0, **plain)),
        "visual": hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0, **plain)),
    }
    lists = {name: lists_by_user(rank(inp, space, p), space) for name, p in policies.items()}
    k = recs.k
    ndcg = {name: np.array([ndcg_at_k(lists[name].get(u, []), relevant[u], k) for u in users])
            for name in lists}
    # cold items: relevant test items with an image and no training pairs
    new_ids = set(cold_space.item_ids[np.asarray(cold_space.new, dtype=bool)])
    cold_rel = {u: relevant[u] & new_ids for u in users if relevant[u] & new_ids}
    new_idx = np.flatnonzero(cold_space.new)
    pos_of = {str(cold_space.item_ids[i]): j for j, i in enumerate(new_idx)}
    row_of = {u: r for r, u in enumerate(batch.user_ids)}
    profile_of = profiles(batch.hist, cold_space.emb)[0]
    auc_map, auc_cos, hits = [], [], 0
    cold_ndcg = {name: [] for name in lists}
    for u, rel in cold_rel.items():
        r = row_of[u]
        seen = set(batch.seen.indices[batch.seen.indptr[r]:batch.seen.indptr[r + 1]])
        keep = np.asarray([i not in seen for i in new_idx])
        is_rel = np.zeros(len(new_idx), bool)
        is_rel[[pos_of[i] for i in rel]] = True
        if batch.in_model[r]:
            s = cold_space.factors[new_idx] @ batch.uf[r]
            auc_map.append(auc(s[keep & is_rel], s[keep & ~is_rel]))
        if inp.has_profile[r]:
            s = cold_space.emb[new_idx] @ profile_of[r]
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


def run_movielens_models(ml_dir, vectors: pd.DataFrame, *, split: str = "user",
                         recs: RecsSettings | None = None, cf: CFSettings | None = None,
                         ks: tuple[int, ...] = (10, 50), fraction: float = 0.2,
                         test_days: int = 28) -> tuple[pd.DataFrame, dict]:
    """The nightly evaluation's four models on all of MovieLens-small (vrec's default
    rating weights: relevant = a held-out rating >= 3). ``user``: each user's latest
    ``fraction`` of ratings; ``time``: the last ``test_days`` days of ratings."""
    pairs, catalog = movielens_pairs(ml_dir)
    pairs = pairs.drop(columns=["rating"])
    end = pairs["last_ts"].max() + pd.Timedelta(seconds=1)
    if split == "user":
        h = user_holdout(pairs, end, fraction=fraction)
    else:
        cut = end - pd.Timedelta(days=test_days)
        old = pairs["last_ts"] < cut
        h = time_holdout(pairs[old], pairs[~old], cut)
    cf = cf or CFSettings()
    return evaluate_models(h, catalog, vectors, recs=recs or RecsSettings(),
                           fit=lambda p: fit_cf(p, cf), ks=ks)


def run_fashion(folder, vectors: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                test_days: int = 7, recs: RecsSettings | None = None,
                cf: CFSettings | None = None, seed: int = 0) -> dict:
    """Simulated shoppers (vrec.data.fashion); global time cutoff: train on the first
    ``days - test_days`` days, test on clicks of the last ``test_days``; items arriving
    in the test days are new arrivals with real photos and no history."""
    from vrec.data.fashion import load_styles, simulate_shoppers

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


def neighbour_contrast(emb: np.ndarray, *, n_pairs: int = 20000, seed: int = 0
                       ) -> tuple[float, float]:
    """(mean cosine of each row's top-1 neighbour, mean cosine of random pairs) for
    L2-normalised rows: how much closer visual neighbours are than chance."""
    _, sc = exact_topk(emb, np.arange(len(emb)), 1)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(emb), n_pairs), rng.integers(0, len(emb), n_pairs)
    keep = i != j
    return float(sc[:, 0].mean()), float((emb[i[keep]] * emb[j[keep]]).sum(1).mean())

"""Real-data evaluation harnesses (not part of the nightly run): MovieLens-small with its
posters and fashion-small with simulated shoppers, evaluated through vrec's production
retrieval and ranker. Used by ``benchmarks/eval_hybrid.py``, ``benchmarks/eval_models.py``,
``benchmarks/bench_embed.py`` and the real-data tests (``make test-real``).

* :func:`evaluate_hybrid`: hybrid vs ALS-only vs visual-only on held-out relevant items,
  plus how the cold-start map and the naive visual cosine rank cold items (AUC);
* :func:`run_movielens`, :func:`run_fashion`: that on each data set;
* :func:`run_movielens_models`: the nightly evaluation's five models on all of MovieLens.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, RecsSettings, VisualSettings
from vrec.core.coldstart import auc
from vrec.core.evaluation import (
    _restricted,
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
from vrec.core.tuning import cf_lists, tune_cf, validation_window
from vrec.core.users import pairs_by_user
from vrec.core.visual import fit_preferences, image_features
from vrec.spark.cf import fit_cf


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = a - b
    return {"diff": round(float(d.mean()), 5),
            "stderr": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, 5)}



def tuned_cf(train: pd.DataFrame, cf: CFSettings, recs: RecsSettings, end: pd.Timestamp,
             images=None, seed: int = 0) -> tuple[CFSettings, dict]:
    """The CF settings train_cf would choose on ``train`` (its validation window); without
    ``images`` the image prior stays off (plain ALS tuned)."""
    window = validation_window(train, recs, end, seed=seed)
    if images is None:
        cf = cf.model_copy(update={"tune_visual_prior": (0.0,), "visual_prior": 0.0})
    rec = tune_cf(window, cf, recs, lambda c: (lambda p: fit_cf(p, c, images=images)))
    return (cf.model_copy(update=rec["chosen"]) if rec.get("chosen") else cf), rec


def plain_cf_ndcg(train: pd.DataFrame, users: np.ndarray, relevant: dict, cf: CFSettings,
                  recs: RecsSettings, images=None) -> np.ndarray:
    """Per-user NDCG@k of the CF model alone with ``cf`` (seen items excluded); plain ALS
    unless ``images`` and ``cf.visual_prior`` say otherwise."""
    model = fit_cf(train, cf, images=images)
    lists = cf_lists(model, pairs_by_user(train, users), recs.k, recs.seen_event_types)
    return np.asarray([ndcg_at_k(lists.get(u, []), relevant[u], recs.k) for u in users])


def evaluate_hybrid(train: pd.DataFrame, relevant: dict, catalog: pd.DataFrame,
                    vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                    visual: VisualSettings | None = None, end: pd.Timestamp, seed: int = 0,
                    als_grid: bool = False) -> dict:
    """Hybrid vs ALS (configured and tuned) vs the CF model with the image prior vs the
    visual models on held-out relevant items, as the nightly run would build them: CF
    tuned (with the image prior), then the blend tuned, on a validation window inside
    ``train``. ``als_tuned`` is plain ALS tuned the same way without images;
    ``als_grid`` also scores plain ALS over the whole CF grid on the test items (the
    best ALS in hindsight)."""
    t0 = time.perf_counter()
    visual = visual or VisualSettings()
    pos = train[train["weight"] > 0]
    trending = pos[C.ITEM_ID].value_counts().index.astype(str).tolist()
    users = np.asarray(sorted(relevant), dtype=object)
    images = image_features(vectors, visual.dim, whiten=visual.whiten)
    cf_t, cf_rec = tuned_cf(train, cf, recs, end, images, seed=seed)
    als_t, als_rec = tuned_cf(train, cf, recs, end, None, seed=seed)
    f = fit_for_eval(train, users, catalog, vectors, trending, recs=recs, visual=visual, end=end,
                     fit=lambda p: fit_cf(p, cf_t, images=images), seed=seed)
    tuned, batch, map_quality = f.tuned, f.batch, f.map_quality
    space, hybrid, slots_off = f.space, f.policy, f.slots_off
    cold_space = f.space_ungated  # the cold-items analysis looks at the map even when off
    inp = retrieve(batch, space, hybrid.candidates, visual)
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    policies = {
        "hybrid": hybrid,
        "hybrid_no_slots": hybrid.model_copy(update={"new_arrival_slots": 0}),
        # the slots as configured even when the tuning dropped them (to measure them)
        "hybrid_with_slots": hybrid.model_copy(update={
            "new_arrival_slots": 0 if slots_off else recs.new_arrival_slots}),
        "cf": hybrid.model_copy(update=dict(visual_weight=0.0, history_shrink=0.0, **plain)),
        "visual": hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0,
                                                pref_mix=0.0, **plain)),
        "visual_pref": hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0,
                                                     pref_mix=1.0, **plain)),
    }
    frames = {name: rank(inp, space, p) for name, p in policies.items()}
    # the mean profile alone: the users' preference vectors removed
    frames["visual"] = rank(retrieve(_restricted(batch, cf=False, profile=True, pref=False),
                                     space, hybrid.candidates, visual), space, policies["visual"])
    lists = {name: lists_by_user(fr, space) for name, fr in frames.items()}
    k = recs.k
    ndcg = {name: np.array([ndcg_at_k(lists[name].get(u, []), relevant[u], k) for u in users])
            for name in lists}
    seen_by = train.groupby(C.USER_ID)[C.ITEM_ID].apply(lambda s: set(s.astype(str))).to_dict()
    ndcg["popularity"] = np.asarray([
        ndcg_at_k([i for i in trending[:k + len(seen_by.get(u, ()))]
                   if i not in seen_by.get(u, ())][:k], relevant[u], k) for u in users])
    ndcg["als_configured"] = plain_cf_ndcg(train, users, relevant,
                                           cf.model_copy(update={"visual_prior": 0.0}), recs)
    ndcg["als_tuned"] = plain_cf_ndcg(train, users, relevant, als_t, recs)
    grid = {}
    if als_grid:  # plain ALS over the whole grid, scored on the test items (hindsight)
        for fa in cf.tune_factors:
            for reg in cf.tune_regularization:
                for al in cf.tune_alpha:
                    c = cf.model_copy(update={"factors": fa, "regularization": reg, "alpha": al,
                                              "visual_prior": 0.0})
                    grid[(fa, reg, al)] = plain_cf_ndcg(train, users, relevant, c, recs)
        best_key = max(grid, key=lambda g: grid[g].mean())
        ndcg["als_best_in_hindsight"] = grid[best_key]
    # cold items: relevant test items with an image and no training pairs
    new_ids = set(cold_space.item_ids[np.asarray(cold_space.new, dtype=bool)])
    cold_rel = {u: relevant[u] & new_ids for u in users if relevant[u] & new_ids}
    new_idx = np.flatnonzero(cold_space.new)
    pos_of = {str(cold_space.item_ids[i]): j for j, i in enumerate(new_idx)}
    row_of = {u: r for r, u in enumerate(batch.user_ids)}
    profile_of = profiles(batch.hist, cold_space.emb)[0]
    pref_of = fit_preferences(batch.weights, cold_space.pref_z, cold_space.pref_gram,
                              regularization=visual.regularization, alpha=visual.alpha)[0]
    auc_map, auc_cos, auc_pref, hits = [], [], [], 0
    cold_ndcg = {name: [] for name in lists}
    for u, rel in cold_rel.items():
        r = row_of[u]
        seen = set(batch.seen.indices[batch.seen.indptr[r]:batch.seen.indptr[r + 1]])
        keep = np.asarray([i not in seen for i in new_idx])
        is_rel = np.zeros(len(new_idx), bool)
        is_rel[[pos_of[i] for i in rel]] = True
        if batch.in_model[r]:
            s_ = cold_space.factors[new_idx] @ batch.uf[r]
            auc_map.append(auc(s_[keep & is_rel], s_[keep & ~is_rel]))
        if inp.has_profile[r]:
            s_ = cold_space.emb[new_idx] @ profile_of[r]
            auc_cos.append(auc(s_[keep & is_rel], s_[keep & ~is_rel]))
        if inp.has_pref[r]:
            s_ = cold_space.pref_z[new_idx] @ pref_of[r]
            auc_pref.append(auc(s_[keep & is_rel], s_[keep & ~is_rel]))
        hits += bool(set(lists["hybrid"].get(u, [])) & rel)
        for name in lists:
            cold_ndcg[name].append(ndcg_at_k(lists[name].get(u, []), rel, k))
    with_new = np.mean([bool(set(lists["hybrid"].get(u, [])) & new_ids) for u in users])
    # the reserved slots: how often the new arrival placed there is one the user then picks
    hyb = frames["hybrid_with_slots"]
    slot_rows = hyb[hyb["reason"] == C.REASON_NEW_ARRIVAL]
    slot_hit = [str(space.item_ids[i]) in relevant.get(u, set())
                for u, i in zip(slot_rows["user_id"], slot_rows["item"])]
    vs = {name: _paired(ndcg["hybrid"], ndcg[name]) for name in ndcg if name != "hybrid"}
    return {
        "users": int(len(users)), "train_pairs": int(len(train)), "k": k,
        "cf_tuning": {key: cf_rec.get(key) for key in ("chosen", "configured_ndcg",
                                                        "chosen_ndcg", "grid", "skipped")},
        "als_tuning": {key: als_rec.get(key) for key in ("chosen", "chosen_ndcg")},
        "tuning": {key: tuned.get(key) for key in ("chosen", "grid", "cf_only_ndcg",
                                                    "chosen_ndcg", "val_users", "skipped",
                                                    "extended_to", "new_arrival_grid")},
        "map_quality": map_quality, "new_arrival_slots": hybrid.new_arrival_slots,
        "slots_off": slots_off,
        "ndcg_all": {name: round(float(v.mean()), 5) for name, v in ndcg.items()},
        "hybrid_vs": vs,
        "pref_vs_profile": _paired(ndcg["visual_pref"], ndcg["visual"]),
        "ratios": {f"hybrid / {name}": round(float(ndcg["hybrid"].mean() / v.mean()), 3)
                   for name, v in ndcg.items() if name != "hybrid" and v.mean() > 0},
        "als_grid_best_in_hindsight": ({"params": list(best_key),
                                        "ndcg": round(float(grid[best_key].mean()), 5)}
                                       if grid else None),
        "cold": {"items_new": len(new_ids), "users_with_cold_relevant": len(cold_rel),
                 "auc_map": round(float(np.nanmean(auc_map)), 4) if auc_map else None,
                 "auc_visual_cosine": round(float(np.nanmean(auc_cos)), 4) if auc_cos else None,
                 "auc_visual_pref": round(float(np.nanmean(auc_pref)), 4) if auc_pref else None,
                 "ndcg": {n: round(float(np.mean(v)), 5) if v else None
                          for n, v in cold_ndcg.items()},
                 "hit_rate_hybrid": round(hits / max(1, len(cold_rel)), 4)},
        "slot": {"filled": int(len(slot_rows)), "hits": int(sum(slot_hit)),
                 "dropped_by_tuning": hybrid.new_arrival_slots == 0 and not slots_off,
                 "hit_rate": round(float(np.mean(slot_hit)), 4) if slot_hit else 0.0},
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
                  cf: CFSettings | None = None, als_grid: bool = False) -> dict:
    """Per-user chronological split (last 20%; relevant = test ratings >= 3.5)."""
    pairs, catalog = movielens_pairs(ml_dir)
    train, test = per_user_chronological_split(pairs)
    rel = test[test["rating"] >= 3.5].groupby(C.USER_ID)[C.ITEM_ID].apply(set).to_dict()
    end = pairs["last_ts"].max() + pd.Timedelta(seconds=1)
    return evaluate_hybrid(train.drop(columns=["rating"]), rel, catalog, vectors,
                           cf=cf or CFSettings(), recs=recs or RecsSettings(), end=end,
                           als_grid=als_grid)


def run_movielens_models(ml_dir, vectors: pd.DataFrame, *, split: str = "user",
                         recs: RecsSettings | None = None, cf: CFSettings | None = None,
                         ks: tuple[int, ...] = (10, 50), fraction: float = 0.2,
                         test_days: int = 28) -> tuple[pd.DataFrame, dict]:
    """The nightly evaluation's five models on all of MovieLens-small (vrec's default
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
    recs, visual = recs or RecsSettings(), VisualSettings()
    images = image_features(vectors, visual.dim, whiten=visual.whiten)
    cf_t, _ = tuned_cf(h.train, cf, recs, h.end, images)
    return evaluate_models(h, catalog, vectors, recs=recs, visual=visual,
                           fit=lambda p: fit_cf(p, cf_t, images=images), ks=ks)


def run_fashion(folder, vectors: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                test_days: int = 7, recs: RecsSettings | None = None,
                cf: CFSettings | None = None, seed: int = 0, taste: dict | None = None,
                als_grid: bool = False) -> dict:
    """Simulated shoppers (vrec.data.fashion); global time cutoff: train on the first
    ``days - test_days`` days, test on clicks of the last ``test_days``; items arriving
    in the test days are new arrivals with real photos and no history."""
    from vrec.data.fashion import load_styles, simulate_shoppers

    styles = load_styles(folder, set(vectors[C.ITEM_ID].astype(str)))
    events, items = simulate_shoppers(styles, n_users=n_users, days=days, seed=seed,
                                      **(taste or {}))
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
                          recs=recs or RecsSettings(), end=cut, seed=seed, als_grid=als_grid)
    out["simulation"] = {"users": n_users, "days": days, "test_days": test_days,
                         "events": int(len(events)), "items": int(len(items)),
                         "taste": taste or {}}
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

"""Offline evaluation on a holdout (README "Offline evaluation, quality gate and run report").

:func:`evaluate_models` is what the nightly ``evaluate`` stage runs: a holdout as of the
run (:func:`time_holdout`: train before the end of ds minus H days, test on the following
H days; :func:`user_holdout`: each user's latest fraction of pairs), a CF model refit on
the training part with the run's settings, the blend tuned on the training part as the
nightly ``train_cf`` does, and four models' lists built by the production ranker
(:mod:`vrec.core.ranking`) with restricted inputs:

* ``popularity``: no CF factors, no history: the ranker's trending fill (the order is
  the training period's number of users per item);
* ``als``: CF factors only (no visual profile, new arrivals not scored);
* ``visual``: the visual profile only (visual and new-arrival candidates by picture);
* ``hybrid``: everything, with the tuned blend and the production list policy.

Metrics (:func:`metric_rows`, definitions in :mod:`vrec.core.metrics`) are computed at each K
for the slices ``all`` (test users with a relevant item), ``cold_items`` (relevance
restricted to items with no training interactions) and ``cold_users`` (test users with
no training interactions).

:func:`evaluate_hybrid` is the older real-data harness (hybrid vs ALS, cold-start AUC)
used by ``benchmarks/eval_hybrid.py``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, RecsSettings
from vrec.core.metrics import average_precision, ndcg_at_k, precision_at_k, recall_at_k
from vrec.core.ranking import UserBatch, assemble, auc, candidates

MODELS = ("popularity", "als", "visual", "hybrid")
SLICES = ("all", "cold_items", "cold_users")
METRICS = ("users", "precision", "recall", "f1", "ndcg", "ndcg_se", "map", "hit_rate",
           "coverage", "novelty")


@dataclasses.dataclass
class Holdout:
    """Training pairs (user_id, item_id, weight, last_ts), the held-out relevant items
    per user, and the time the training data ends (profile recency is measured from it)."""

    train: pd.DataFrame
    relevant: dict[str, set[str]]
    end: pd.Timestamp
    split: str

    def info(self) -> dict:
        return {"split": self.split, "train_pairs": int(len(self.train)),
                "train_users": int(self.train[C.USER_ID].nunique()),
                "test_users": len(self.relevant),
                "test_pairs": int(sum(len(v) for v in self.relevant.values())),
                "train_end": str(self.end)}


def _relevant(pairs: pd.DataFrame) -> dict[str, set[str]]:
    pos = pairs[pairs["weight"] > 0]
    return {str(u): set(g.astype(str)) for u, g in pos.groupby(C.USER_ID)[C.ITEM_ID]}


def time_holdout(train: pd.DataFrame, test: pd.DataFrame, end: pd.Timestamp) -> Holdout:
    """Global time cutoff: ``train`` = pairs aggregated from events before ``end``;
    ``test`` = (user_id, item_id, weight) of the events after it. Relevant = test pairs
    with weight > 0 that the user had no training pair with (seen items are never
    recommended, so they could not be hit)."""
    seen = set(zip(train[C.USER_ID].astype(str), train[C.ITEM_ID].astype(str)))
    t = test[[(str(u), str(i)) not in seen for u, i in zip(test[C.USER_ID], test[C.ITEM_ID])]]
    return Holdout(train, _relevant(t), end, "time")


def user_holdout(pairs: pd.DataFrame, end: pd.Timestamp, *, fraction: float = 0.2,
                 min_pairs: int = 5) -> Holdout:
    """Per-user chronological split: each user's latest ``fraction`` of pairs (users with
    at least ``min_pairs``) is test; relevant = those with weight > 0."""
    train, test = per_user_chronological_split(pairs, fraction, min_pairs)
    return Holdout(train, _relevant(test), end, "user")


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


@dataclasses.dataclass
class EvalFit:
    """What every offline evaluation fits on its training pairs: the tuned blend (or
    None), the CF model, the item space before and after the cold-start map gate, the
    hybrid policy, why the map was off, the users' batch and the map quality."""

    tuned: dict | None
    model: object
    space_ungated: object
    space: object
    policy: object
    slots_off: str | None
    batch: UserBatch
    map_quality: dict | None


def fit_for_eval(train: pd.DataFrame, users: np.ndarray, catalog: pd.DataFrame,
                 vectors: pd.DataFrame, trending: list[str], *, cf: CFSettings,
                 recs: RecsSettings, end: pd.Timestamp, tune: bool = True, seed: int = 0
                 ) -> EvalFit:
    """Tune the blend on the training pairs (as train_cf does), fit the CF model and item
    space, build the users' batch and apply the cold-start map gate (as build_recs does)."""
    from vrec.core.tuning import batch_from_pairs, fit_space, gate_new_arrivals, policy_from, tune_blend

    tuned = (tune_blend(train, catalog, vectors, trending, cf=cf, recs=recs, end=end, seed=seed)
             if tune else None)
    model, space, map_quality = fit_space(train, catalog, vectors, trending, cf=cf, recs=recs,
                                          seed=seed)
    batch = batch_from_pairs(users, train, space=space, model=model, end=end,
                             half_life=recs.profile_half_life_days)
    gated, policy, slots_off = gate_new_arrivals(space, policy_from(recs, tuned), map_quality,
                                                 recs.new_arrival_min_auc)
    return EvalFit(tuned, model, space, gated, policy, slots_off, batch, map_quality)


def evaluate_hybrid(train: pd.DataFrame, relevant: dict, catalog: pd.DataFrame,
                    vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                    end: pd.Timestamp, seed: int = 0) -> dict:
    """Hybrid vs ALS-only vs visual-only on held-out relevant items (see module doc)."""
    t0 = time.perf_counter()
    pos = train[train["weight"] > 0]
    trending = pos[C.ITEM_ID].value_counts().index.astype(str).tolist()
    users = np.asarray(sorted(relevant), dtype=object)
    fit = fit_for_eval(train, users, catalog, vectors, trending, cf=cf, recs=recs, end=end,
                       seed=seed)
    tuned, batch, map_quality = fit.tuned, fit.batch, fit.map_quality
    space, hybrid, slots_off = fit.space, fit.policy, fit.slots_off
    cold_space = fit.space_ungated  # the cold-items analysis looks at the map even when off
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
    new_ids = set(cold_space.item_ids[np.asarray(cold_space.new, dtype=bool)])
    cold_rel = {u: relevant[u] & new_ids for u in users if relevant[u] & new_ids}
    new_idx = np.flatnonzero(cold_space.new)
    pos_of = {str(cold_space.item_ids[i]): j for j, i in enumerate(new_idx)}
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
            s = cold_space.factors[new_idx] @ batch.uf[r]
            auc_map.append(auc(s[keep & is_rel], s[keep & ~is_rel]))
        if cands.has_profile[r]:
            s = cold_space.emb[new_idx] @ cands.profiles[r]
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
    return evaluate_models(h, catalog, vectors, cf=cf or CFSettings(),
                           recs=recs or RecsSettings(), ks=ks)


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


# ---------------------------------------------------------------- the four models (nightly evaluate)

def training_popularity(train: pd.DataFrame) -> pd.Series:
    """Distinct users with a positive training pair per item, most popular first (ties
    by item id)."""
    pos = train[train["weight"] > 0]
    n = pos.groupby(pos[C.ITEM_ID].astype(str))[C.USER_ID].nunique()
    return n.sort_index().sort_values(ascending=False, kind="stable")


def _restricted(batch: UserBatch, *, cf: bool, profile: bool) -> UserBatch:
    """The same users with CF factors and/or history (the visual profile) removed."""
    import scipy.sparse as sp

    n = len(batch.user_ids)
    return UserBatch(batch.user_ids,
                     batch.uf if cf else np.zeros_like(batch.uf),
                     batch.in_model if cf else np.zeros(n, dtype=bool),
                     batch.hist if profile else sp.csr_matrix(batch.hist.shape, dtype=np.float32),
                     batch.seen, batch.touched)


def model_lists(holdout: Holdout, users: np.ndarray, catalog: pd.DataFrame,
                vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                ks: tuple[int, ...], tune: bool = True, seed: int = 0
                ) -> tuple[dict, dict]:
    """Lists of the four models (module doc) for ``users`` at each K:
    ``{(model, k): {user: [item_id, ...]}}``, and facts about the fit (tuning, map)."""
    train = holdout.train
    fit = fit_for_eval(train, users, catalog, vectors, training_popularity(train).index.tolist(),
                       cf=cf, recs=recs, end=holdout.end, tune=tune, seed=seed)
    tuned, batch, map_quality = fit.tuned, fit.batch, fit.map_quality
    space, slots_off = fit.space, fit.slots_off
    hybrid = dataclasses.replace(fit.policy, candidates=max(fit.policy.candidates, *ks))
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    no_new = dataclasses.replace(space, new=np.zeros_like(space.new))
    variants = {
        "popularity": (_restricted(batch, cf=False, profile=False), space,
                       dataclasses.replace(hybrid, **plain)),
        "als": (_restricted(batch, cf=True, profile=False), no_new,
                dataclasses.replace(hybrid, visual_weight=0.0, history_shrink=0.0, **plain)),
        "visual": (_restricted(batch, cf=False, profile=True), space,
                   dataclasses.replace(hybrid, visual_weight=1.0, history_shrink=0.0, **plain)),
        "hybrid": (batch, space, hybrid),
    }
    out = {}
    for name, (b, s, policy) in variants.items():
        cands = candidates(b, s, policy)
        for k in ks:
            out[(name, k)] = _lists(b, s, cands, dataclasses.replace(policy, k=k))
    facts = {"blend": {"visual_weight": hybrid.visual_weight,
                       "history_shrink": hybrid.history_shrink,
                       "tuned": bool(tuned and tuned.get("chosen")),
                       "tuning": None if tuned is None else
                       {key: tuned.get(key) for key in ("chosen", "cf_only_ndcg", "chosen_ndcg",
                                                         "val_users", "skipped")}},
             "new_arrival_slots": hybrid.new_arrival_slots, "slots_off": slots_off,
             "map_quality": map_quality, "catalog_items": int(space.n),
             "cold_items": int(space.n - len(set(train[C.ITEM_ID].astype(str))
                                             & set(space.item_ids.astype(str))))}
    return out, facts


def eval_slices(holdout: Holdout, users: np.ndarray, catalog_ids: set[str]) -> dict:
    """``{slice: {user: relevant items}}`` for the evaluated users (module doc)."""
    trained_items = set(holdout.train[C.ITEM_ID].astype(str))
    trained_users = set(holdout.train[C.USER_ID].astype(str))
    cold_items = catalog_ids - trained_items
    rel = {u: holdout.relevant[u] for u in users}
    return {"all": rel,
            "cold_items": {u: r & cold_items for u, r in rel.items() if r & cold_items},
            "cold_users": {u: r for u, r in rel.items() if u not in trained_users}}


def metric_rows(lists: dict, slices: dict, *, n_catalog: int, popularity: pd.Series,
                n_train_users: int) -> pd.DataFrame:
    """Rows (model, slice, k, metric, value) for every list set and slice.

    Per user at K: precision, recall, NDCG, MAP (MAP@K: divided by min(|relevant|, K)),
    hit (any hit); averaged over the slice's users; ``ndcg_se`` = standard error of the
    mean per-user NDCG (the quality gate uses it). ``f1`` = 2PR/(P+R) of the averaged
    precision P and recall R; ``coverage`` = distinct recommended items / catalog items;
    ``novelty`` = mean over lists of the mean self-information -log2((n_i + 1) /
    (n_users + 1)) of the recommended items (n_i = training users of item i).
    A slice without users has only its ``users`` row (0).
    """
    info = {str(i): -np.log2((n + 1) / (n_train_users + 1)) for i, n in popularity.items()}
    cold_info = -np.log2(1 / (n_train_users + 1))
    rows = []
    for (model, k), per_user in lists.items():
        for slice_name, rel in slices.items():
            base = {"model": model, "slice": slice_name, "k": int(k)}
            rows.append({**base, "metric": "users", "value": float(len(rel))})
            if not rel:
                continue
            m = {name: [] for name in ("precision", "recall", "ndcg", "map", "hit_rate",
                                       "novelty")}
            items: set = set()
            for u, r in rel.items():
                top = list(per_user.get(u, []))[:k]
                items.update(top)
                m["precision"].append(precision_at_k(top, r, k))
                m["recall"].append(recall_at_k(top, r, k))
                m["ndcg"].append(ndcg_at_k(top, r, k))
                m["map"].append(average_precision(top, r, k))
                m["hit_rate"].append(float(bool(set(top) & r)))
                if top:
                    m["novelty"].append(float(np.mean([info.get(str(i), cold_info) for i in top])))
            val = {name: float(np.mean(v)) if v else 0.0 for name, v in m.items()}
            n = len(m["ndcg"])
            val["ndcg_se"] = float(np.std(m["ndcg"], ddof=1) / np.sqrt(n)) if n > 1 else 0.0
            p, rc = val["precision"], val["recall"]
            val["f1"] = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
            val["coverage"] = len(items) / max(1, n_catalog)
            rows += [{**base, "metric": name, "value": val[name]} for name in METRICS[1:]]
    return pd.DataFrame(rows, columns=["model", "slice", "k", "metric", "value"])


def evaluate_models(holdout: Holdout, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                    cf: CFSettings, recs: RecsSettings, ks: tuple[int, ...] = (10, 50),
                    max_users: int = 5000, tune: bool = True, seed: int = 0
                    ) -> tuple[pd.DataFrame, dict]:
    """The metrics table (model, slice, k, metric, value) of the four models on a
    holdout, and facts about the run (split sizes, slices, tuning, seconds)."""
    t0 = time.perf_counter()
    users = np.asarray(sorted(holdout.relevant), dtype=object)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    info = {**holdout.info(), "evaluated_users": int(len(users)), "ks": list(ks)}
    if len(users) == 0 or holdout.train.empty or not (holdout.train["weight"] > 0).any():
        info["skipped"] = ("no test users with a relevant item" if len(users) == 0
                           else "no training interactions before the cutoff")
        info["seconds"] = round(time.perf_counter() - t0, 2)
        return pd.DataFrame(columns=["model", "slice", "k", "metric", "value"]), info
    lists, facts = model_lists(holdout, users, catalog, vectors, cf=cf, recs=recs, ks=ks,
                               tune=tune, seed=seed)
    slices = eval_slices(holdout, users, set(catalog[C.ITEM_ID].astype(str)))
    frame = metric_rows(lists, slices, n_catalog=facts["catalog_items"],
                        popularity=training_popularity(holdout.train),
                        n_train_users=int(holdout.train[C.USER_ID].nunique()))
    info.update(facts, slices={k: len(v) for k, v in slices.items()},
                seconds=round(time.perf_counter() - t0, 2))
    return frame, info

"""Offline evaluation on a holdout (docs/evaluation.md).

:func:`evaluate_models` is what the nightly ``evaluate`` stage runs: a holdout as of the
run (:func:`time_holdout`: train before the end of ds minus H days, test on the following
H days; :func:`user_holdout`: each user's latest fraction of pairs), a CF model refit on
the training part with the run's engine and settings, the blend tuned on the training
part as the nightly ``train_cf`` does, users built by the one builder (vrec.core.users),
and five models' lists from the production retrieval and ranker (vrec.core.retrieval,
vrec.core.ranking) with restricted inputs:

* ``popularity``: no CF factors, no history: the ranker's trending fill (the order is
  the training period's number of users per item);
* ``als``: CF factors only (no visual profile, new arrivals not scored);
* ``visual``: the mean visual profile only (visual and new-arrival candidates by picture);
* ``visual_pref``: the learned visual preference model only (vrec.core.visual);
* ``hybrid``: everything, with the tuned blend and the production list policy.

Metrics (:func:`metric_rows`, definitions in :mod:`vrec.core.metrics`) are computed at each K
for the slices ``all`` (test users with a relevant item), ``cold_items`` (relevance
restricted to items with no training interactions) and ``cold_users`` (test users with
no training interactions).

The real-data harnesses built on it live in ``benchmarks/harness.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import RecsSettings, VisualSettings
from vrec.core.itemspace import ItemSpace, build_item_space, gate_new_arrivals, ranking_policy
from vrec.core.metrics import average_precision, ndcg_at_k, precision_at_k, recall_at_k
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import retrieve
from vrec.core.tuning import tune_blend
from vrec.core.users import UserBatch, pairs_by_user, user_batch
from vrec.progress import progress

if TYPE_CHECKING:
    from vrec.core.cf import CFModel

MODELS = ("popularity", "als", "visual", "visual_pref", "hybrid")
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


@dataclasses.dataclass
class EvalFit:
    """What every offline evaluation fits on its training pairs: the tuned blend (or
    None), the CF model, the item space before and after the cold-start map gate, the
    ranking policy, why new arrivals were off, the users' batch and the map quality."""

    tuned: dict | None
    model: CFModel
    space_ungated: ItemSpace
    space: ItemSpace
    policy: RecsSettings
    slots_off: str | None
    batch: UserBatch
    map_quality: dict | None


def fit_for_eval(train: pd.DataFrame, users: np.ndarray, catalog: pd.DataFrame,
                 vectors: pd.DataFrame, trending: list[str], *, recs: RecsSettings,
                 visual: VisualSettings, end: pd.Timestamp,
                 fit: Callable[[pd.DataFrame], CFModel], tune: bool = True,
                 seed: int = 0, label: str = "evaluation", blend: dict | None = None) -> EvalFit:
    """Tune the blend on the training pairs (as train_cf does; ``blend``: a tuning record
    to use instead, e.g. an earlier one reused), fit the CF model with the run's engine
    (``fit``), build the item space and gate it (as the candidates stage does) and the
    users' batch with the one builder (vrec.core.users)."""
    tuned = blend if blend is not None else (
        tune_blend(train, catalog, vectors, trending, recs=recs, visual=visual, end=end,
                   fit=fit, seed=seed, label=f"{label}: blend tuning") if tune else None)
    model = fit(train)
    space, map_quality = build_item_space(model, catalog, vectors, train, trending, recs,
                                          visual=visual, seed=seed)
    gated, slots_off = gate_new_arrivals(space, map_quality, recs.new_arrival_min_auc, tuned)
    batch = user_batch(pairs_by_user(train, users), gated, model, recs, end)
    return EvalFit(tuned, model, space, gated, ranking_policy(recs, tuned, slots_off), slots_off,
                   batch, map_quality)


def training_popularity(train: pd.DataFrame) -> pd.Series:
    """Distinct users with a positive training pair per item, most popular first (ties
    by item id)."""
    pos = train[train["weight"] > 0]
    n = pos.groupby(pos[C.ITEM_ID].astype(str))[C.USER_ID].nunique()
    return n.sort_index().sort_values(ascending=False, kind="stable")


def _restricted(batch: UserBatch, *, cf: bool, profile: bool, pref: bool = True) -> UserBatch:
    """The same users with CF factors and/or history (the visual profile and the
    preference model; ``pref`` False: the preference model only) removed."""
    import scipy.sparse as sp

    n = len(batch.user_ids)
    empty = sp.csr_matrix(batch.hist.shape, dtype=np.float32)
    return UserBatch(batch.user_ids,
                     batch.uf if cf else np.zeros_like(batch.uf),
                     batch.in_model if cf else np.zeros(n, dtype=bool),
                     batch.hist if profile else empty,
                     batch.seen, batch.touched,
                     batch.weights if profile and pref else empty)


def tune_on_holdout(holdout: Holdout, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                    recs: RecsSettings, visual: VisualSettings,
                    fit: Callable[[pd.DataFrame], CFModel], seed: int = 0,
                    label: str = "evaluation") -> dict:
    """The blend tuned on the holdout's training part, as train_cf tunes it (the tuning
    record :func:`model_lists` ranks the hybrid with)."""
    train = holdout.train
    return tune_blend(train, catalog, vectors, training_popularity(train).index.tolist(),
                      recs=recs, visual=visual, end=holdout.end, fit=fit, seed=seed,
                      label=f"{label}: blend tuning")


def model_lists(holdout: Holdout, users: np.ndarray, catalog: pd.DataFrame,
                vectors: pd.DataFrame, *, recs: RecsSettings, visual: VisualSettings,
                ks: tuple[int, ...], fit: Callable[[pd.DataFrame], CFModel], tune: bool = True,
                seed: int = 0, label: str = "evaluation", blend: dict | None = None
                ) -> tuple[dict, dict]:
    """Lists of the five models (module doc) for ``users`` at each K:
    ``{(model, k): {user: [item_id, ...]}}``, and facts about the fit (tuning, map).
    ``blend``: the blend tuning to rank the hybrid with (None: tuned here when ``tune``)."""
    train = holdout.train
    if blend is None and tune:
        blend = tune_on_holdout(holdout, catalog, vectors, recs=recs, visual=visual, fit=fit,
                                seed=seed, label=label)
    f = fit_for_eval(train, users, catalog, vectors, training_popularity(train).index.tolist(),
                     recs=recs, visual=visual, end=holdout.end, fit=fit, tune=False, seed=seed,
                     label=label, blend=blend)
    space = f.space
    hybrid = f.policy.model_copy(update={"candidates": max(f.policy.candidates, *ks)})
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    no_new = dataclasses.replace(space, new=np.zeros_like(space.new))
    variants = {
        "popularity": (_restricted(f.batch, cf=False, profile=False), space,
                       hybrid.model_copy(update=plain)),
        "als": (_restricted(f.batch, cf=True, profile=False), no_new,
                hybrid.model_copy(update=dict(visual_weight=0.0, history_shrink=0.0, **plain))),
        "visual": (_restricted(f.batch, cf=False, profile=True, pref=False), space,
                   hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0,
                                                 pref_mix=0.0, **plain))),
        "visual_pref": (_restricted(f.batch, cf=False, profile=True), space,
                        hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0,
                                                      pref_mix=1.0, **plain))),
        "hybrid": (f.batch, space, hybrid),
    }
    out = {}
    with progress(f"{label}: model lists", len(variants) * len(ks), "lists") as bar:
        for name, (b, s, policy) in variants.items():
            inp = retrieve(b, s, policy.candidates, visual)
            for k in ks:
                out[(name, k)] = lists_by_user(rank(inp, s, policy.model_copy(update={"k": k})),
                                               s)
                bar.update()
    tuned = f.tuned
    facts = {"blend": {"visual_weight": hybrid.visual_weight,
                       "history_shrink": hybrid.history_shrink, "pref_mix": hybrid.pref_mix,
                       "new_arrival_pref": hybrid.new_arrival_pref,
                       "tuned": bool(tuned and tuned.get("chosen")),
                       "tuning": None if tuned is None else
                       {key: tuned.get(key) for key in ("chosen", "cf_only_ndcg", "chosen_ndcg",
                                                         "val_users", "skipped", "as_of",
                                                         "reused_from")}},
             "cf": {k: f.model.params.get(k) for k in ("engine", "device")},
             "new_arrival_slots": hybrid.new_arrival_slots, "slots_off": f.slots_off,
             "map_quality": f.map_quality, "catalog_items": int(space.n),
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
    return pd.DataFrame(rows, columns=S.EVAL_METRICS.names())


def evaluate_models(holdout: Holdout, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                    recs: RecsSettings, visual: VisualSettings,
                    fit: Callable[[pd.DataFrame], CFModel],
                    ks: tuple[int, ...] = (10, 50), max_users: int = 5000, tune: bool = True,
                    seed: int = 0, label: str = "evaluation", blend: dict | None = None
                    ) -> tuple[pd.DataFrame, dict]:
    """The metrics table (model, slice, k, metric, value) of the five models on a
    holdout, and facts about the run (split sizes, slices, tuning, seconds). ``blend``:
    the blend tuning to use (None: tuned on the holdout's training part when ``tune``)."""
    t0 = time.perf_counter()
    users = np.asarray(sorted(holdout.relevant), dtype=object)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    info = {**holdout.info(), "evaluated_users": int(len(users)), "ks": list(ks)}
    if len(users) == 0 or holdout.train.empty or not (holdout.train["weight"] > 0).any():
        info["skipped"] = ("no test users with a relevant item" if len(users) == 0
                           else "no training interactions before the cutoff")
        info["seconds"] = round(time.perf_counter() - t0, 2)
        return pd.DataFrame(columns=S.EVAL_METRICS.names()), info
    lists, facts = model_lists(holdout, users, catalog, vectors, recs=recs, visual=visual,
                               ks=ks, fit=fit, tune=tune, seed=seed, label=label, blend=blend)
    slices = eval_slices(holdout, users, set(catalog[C.ITEM_ID].astype(str)))
    frame = metric_rows(lists, slices, n_catalog=facts["catalog_items"],
                        popularity=training_popularity(holdout.train),
                        n_train_users=int(holdout.train[C.USER_ID].nunique()))
    info.update(facts, slices={k: len(v) for k, v in slices.items()},
                seconds=round(time.perf_counter() - t0, 2))
    return frame, info

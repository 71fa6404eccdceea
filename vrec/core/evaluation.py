"""Offline evaluation on a holdout (docs/evaluation.md).

:func:`evaluate_models` is what the nightly ``evaluate`` stage runs on a holdout window
(vrec.core.window: the forward window of a cutoff, or the per-user split): a CF model
refit on the window's features with the run's engine and settings, the tuned blend
given by the caller, users built by the one builder (vrec.core.users), and every
model's lists (vrec.core.models: popularity, als, visual, visual_pref, text, hybrid)
from the production retrieval and ranker with restricted inputs.

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
from vrec.core.models import variant_lists, variants
from vrec.core.users import UserBatch, pairs_by_user, user_batch
from vrec.core.visual import ImageFeatures
from vrec.core.window import Window, training_popularity
from vrec.progress import progress

if TYPE_CHECKING:
    from vrec.core.cf import CFModel

SLICES = ("all", "cold_items", "cold_users")
METRICS = ("users", "precision", "recall", "f1", "ndcg", "ndcg_se", "map", "hit_rate",
           "coverage", "novelty")


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
                 fit: Callable[[pd.DataFrame], CFModel], seed: int = 0,
                 blend: dict | None = None, content: ImageFeatures | None = None) -> EvalFit:
    """Fit the CF model with the run's engine (``fit``), build the item space with the
    run's content features and gate it (as the candidates stage does) and the users'
    batch with the one builder (vrec.core.users); ``blend``: the tuning record to rank
    with (None: the configured blend)."""
    model = fit(train)
    space, map_quality = build_item_space(model, catalog, vectors, train, trending, recs,
                                          visual=visual, seed=seed, content=content, end=end)
    gated, slots_off = gate_new_arrivals(space, map_quality, recs.new_arrival_min_auc, blend)
    batch = user_batch(pairs_by_user(train, users), gated, model, recs, end)
    return EvalFit(blend, model, space, gated, ranking_policy(recs, blend, slots_off), slots_off,
                   batch, map_quality)


def model_lists(window: Window, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                recs: RecsSettings, visual: VisualSettings, ks: tuple[int, ...],
                fit: Callable[[pd.DataFrame], CFModel], seed: int = 0,
                label: str = "evaluation", blend: dict | None = None,
                content: ImageFeatures | None = None, ranker=None,
                extra: bool = False, workers: int = 1) -> tuple[dict, dict]:
    """Lists of every model (vrec.core.models) for the window's users at each K:
    ``{(model, k): {user: [item_id, ...]}}``, and facts about the fit (tuning, map).
    ``blend``: the blend tuning record to rank the hybrid with (None: the configured
    blend); ``ranker``: a learned ranker to add the ``ranker`` model with; ``extra``:
    the hybrid retrieves the ranker's sources too (as the night does); ``workers``: forked
    processes for the lists (vrec.core.models.variant_lists)."""
    train = window.train
    f = fit_for_eval(train, window.users, catalog, vectors, window.trending_ids(),
                     recs=recs, visual=visual, end=window.end, fit=fit, seed=seed,
                     blend=blend, content=content)
    n_models = len(variants(f.batch, f.space, f.policy)) + (ranker is not None)
    with progress(f"{label}: model lists", n_models * len(ks), "lists") as bar:
        out = variant_lists(f.batch, f.space, f.policy, visual, ks, bar, extra=extra,
                            ranker=ranker, workers=workers)
    tuned, hybrid, space = f.tuned, f.policy, f.space
    facts = {"blend": {"visual_weight": hybrid.visual_weight,
                       "history_shrink": hybrid.history_shrink, "pref_mix": hybrid.pref_mix,
                       "text_mix": hybrid.text_mix,
                       "new_arrival_pref": hybrid.new_arrival_pref,
                       "tuned": bool(tuned and tuned.get("chosen")),
                       "tuning": None if tuned is None else
                       {key: tuned.get(key) for key in ("chosen", "cf_only_ndcg", "chosen_ndcg",
                                                         "val_users", "skipped", "as_of",
                                                         "reused_from", "window")}},
             "cf": {k: f.model.params.get(k) for k in ("engine", "device")},
             "new_arrival_slots": hybrid.new_arrival_slots, "slots_off": f.slots_off,
             "map_quality": f.map_quality, "catalog_items": int(space.n),
             "cold_items": int(space.n - len(set(train[C.ITEM_ID].astype(str))
                                             & set(space.item_ids.astype(str))))}
    return out, facts


def eval_slices(holdout: Window, users: np.ndarray, catalog_ids: set[str]) -> dict:
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


def evaluate_models(window: Window, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                    recs: RecsSettings, visual: VisualSettings,
                    fit: Callable[[pd.DataFrame], CFModel],
                    ks: tuple[int, ...] = (10, 50), max_users: int = 5000, seed: int = 0,
                    label: str = "evaluation", blend: dict | None = None,
                    content: ImageFeatures | None = None, ranker=None,
                    extra: bool = False, workers: int = 1) -> tuple[pd.DataFrame, dict]:
    """The metrics table (model, slice, k, metric, value) of every model on a window
    (a holdout), and facts about the run (split sizes, slices, tuning, seconds).
    ``blend``: the blend tuning to rank the hybrid with (None: the configured blend);
    ``ranker``/``extra``/``workers``: see :func:`model_lists`."""
    t0 = time.perf_counter()
    window = window.sampled(max_users, seed)
    users = window.users
    info = {**window.info(), "evaluated_users": int(len(users)), "ks": list(ks)}
    if len(users) == 0 or window.train.empty or not (window.train["weight"] > 0).any():
        info["skipped"] = ("no test users with a relevant item" if len(users) == 0
                           else "no training interactions before the cutoff")
        info["seconds"] = round(time.perf_counter() - t0, 2)
        return pd.DataFrame(columns=S.EVAL_METRICS.names()), info
    lists, facts = model_lists(window, catalog, vectors, recs=recs, visual=visual, ks=ks,
                               fit=fit, seed=seed, label=label, blend=blend, content=content,
                               ranker=ranker, extra=extra, workers=workers)
    slices = eval_slices(window, users, set(catalog[C.ITEM_ID].astype(str)))
    frame = metric_rows(lists, slices, n_catalog=facts["catalog_items"],
                        popularity=training_popularity(window.train),
                        n_train_users=int(window.train[C.USER_ID].nunique()))
    info.update(facts, slices={k: len(v) for k, v in slices.items()},
                seconds=round(time.perf_counter() - t0, 2))
    return frame, info

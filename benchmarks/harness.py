"""Real-data evaluation harnesses (not part of the nightly run): MovieLens-small with its
posters, titles, genres and tags, and fashion-small with simulated shoppers, evaluated
through vrec's production tunings, retrieval and ranker, forward in time. Used by
``benchmarks/eval_hybrid.py``, ``benchmarks/eval_models.py``, ``benchmarks/bench_embed.py``
and the real-data tests (``make test-real``).

* :func:`evaluate_forward`: every tuning on a forward window before the holdout (the
  product's own CF tuning, blend tuning and estimates), then every model on the
  holdout: the hybrid against ALS at the configured settings, ALS tuned the same way
  (no images) and the best ALS of a grid picked in hindsight on the holdout, with the
  paired per-user difference ± SE; the tuning's estimate of each model beside the
  holdout's value; new arrivals (cold recall@10); with a window before the tuning
  window, the learned ranker trained there, validated against the blend on the tuning
  window and refit on it (the night's protocol), and the model the night would publish;
* :func:`run_movielens`, :func:`run_fashion`: that on each data set;
* :func:`run_movielens_models`: the nightly evaluation's models on all of MovieLens.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, ContentSettings, RankerSettings, RecsSettings, VisualSettings
from vrec.core.evaluation import evaluate_models, fit_for_eval
from vrec.core.itemspace import ranking_policy
from vrec.core.models import variant_lists
from vrec.core.ranker import Ranker, fit_window, train_ranker
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import retrieve
from vrec.core.similar import exact_topk
from vrec.core.tuning import cf_lists, tune_blend, tune_cf, window_candidates
from vrec.core.users import pairs_by_user
from vrec.core.visual import content_features
from vrec.core.window import (
    Window,
    forward_window,
    pairs_from_events,
    per_user_chronological_split,
    user_window,
)
from vrec.spark.cf import fit_cf

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = a - b
    return {"diff": round(float(d.mean()), 5),
            "stderr": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, 5)}


def plain_cf_ndcg(window: Window, cf: CFSettings, recs: RecsSettings,
                  images=None) -> np.ndarray:
    """Per-user NDCG@k of the CF model alone with ``cf`` (seen items excluded) on the
    window's users; plain ALS unless ``images`` and ``cf.visual_prior`` say otherwise."""
    model = fit_cf(window.train, cf, images=images)
    lists = cf_lists(model, pairs_by_user(window.train, window.users), recs.k,
                     recs.seen_event_types)
    return window.ndcg(lists, recs.k)


def tuned(tuning: Window, cf: CFSettings, recs: RecsSettings, images=None
          ) -> tuple[CFSettings, dict]:
    """The CF settings train_cf would choose on the forward ``tuning`` window; without
    ``images`` the image prior stays off (plain ALS tuned)."""
    if images is None:
        cf = cf.model_copy(update={"tune_visual_prior": (0.0,), "visual_prior": 0.0})
    rec = tune_cf(tuning, cf, recs, lambda c: (lambda p: fit_cf(p, c, images=images)))
    return (cf.model_copy(update=rec["chosen"]) if rec.get("chosen") else cf), rec


def evaluate_forward(holdout: Window, tuning: Window, catalog: pd.DataFrame,
                     vectors: pd.DataFrame, *, cf: CFSettings, recs: RecsSettings,
                     visual: VisualSettings | None = None,
                     content: ContentSettings | None = None, seed: int = 0,
                     als_grid: bool = False, als_cache: dict | None = None,
                     before: Window | None = None,
                     ranker: RankerSettings | None = None) -> dict:
    """The product's tunings on ``tuning`` (a forward window that ends where the
    holdout's features end), then every model on ``holdout`` (module doc).
    ``als_cache``: a dict kept across calls on the same windows (another content
    setting or title variant of the same shoppers): the plain ALS peers, which see no
    content, are computed once. ``before``: the window whose labels end where
    ``tuning``'s features end (the learned ranker trains there; None: no ranker)."""
    t0 = time.perf_counter()
    visual, content = visual or VisualSettings(), content or ContentSettings()
    feats = content_features(vectors, catalog, visual, content, seed=seed)
    cf_t, cf_rec = tuned(tuning, cf, recs, feats)
    cache = als_cache if als_cache is not None else {}
    if "als_tuned" not in cache:
        cache["als_tuned"] = tuned(tuning, cf, recs, None)
    als_t, als_rec = cache["als_tuned"]
    fit = lambda p: fit_cf(p, cf_t, images=feats)  # noqa: E731
    days = None if holdout.label_end is None or holdout.split != "forward" else \
        (holdout.label_end - holdout.end) / pd.Timedelta(days=1)
    extra = before is not None

    def cands(w):
        return window_candidates(w, catalog, vectors, recs=recs, visual=visual, fit=fit,
                                 seed=seed, content=feats, extra=extra)

    valid = cands(tuning)
    blend = tune_blend(tuning, catalog, vectors, recs=recs, visual=visual, fit=fit,
                       content=feats, seed=seed, estimate_days=days, cands=lambda: valid,
                       extra=extra)
    rk = None
    if before is not None:
        rs = ranker or RankerSettings()
        # the ranker's windows hold more users than the tunings' (ranker.max_users)
        rk = train_ranker(fit_window(cands(before.sampled(rs.max_users, seed + 1)), rs,
                                     k=recs.k),
                          cands(tuning.sampled(rs.max_users, seed)),
                          ranking_policy(recs, blend, valid.slots_off), rs,
                          slots=recs.new_arrival_slots)
    users, k = holdout.users, recs.k
    f = fit_for_eval(holdout.train, users, catalog, vectors, holdout.trending_ids(),
                     recs=recs, visual=visual, end=holdout.end, fit=fit, seed=seed,
                     blend=blend, content=feats)
    lists = {m: v for (m, _), v in variant_lists(
        f.batch, f.space, f.policy, visual, (k,), extra=extra,
        ranker=Ranker.from_record(rk) if rk and rk.get("model") else None).items()}
    if rk is not None:  # what the night would publish
        lists["published"] = lists["ranker" if (rk.get("chosen") or {}).get("use") and
                                   "ranker" in lists else "hybrid"]
    if rk is not None and rk.get("model") and f.space.new.any():
        # the trade-off of the reserved slots: the ranker's lists with one kept anyway
        forced = Ranker(rk["model"], slots=max(1, recs.new_arrival_slots))
        inp = retrieve(f.batch, f.space, max(recs.candidates, k), visual, extra=True)
        lists["ranker_slots"] = lists_by_user(rank(inp, f.space, f.policy, forced), f.space)
    ndcg = {m: holdout.ndcg(v, k) for m, v in lists.items()}
    if "als_configured" not in cache:
        cache["als_configured"] = plain_cf_ndcg(
            holdout, cf.model_copy(update={"visual_prior": 0.0}), recs)
        cache["als_tuned_ndcg"] = plain_cf_ndcg(holdout, als_t, recs)
    ndcg["als_configured"], ndcg["als_tuned"] = cache["als_configured"], cache["als_tuned_ndcg"]
    grid = {}
    if als_grid:  # plain ALS over a grid, scored on the holdout (hindsight)
        if "grid" not in cache:
            for fa in cf.tune_factors:
                for reg in cf.tune_regularization:
                    for al in cf.tune_alpha:
                        c = cf.model_copy(update={"factors": fa, "regularization": reg,
                                                  "alpha": al, "visual_prior": 0.0})
                        grid[(fa, reg, al)] = plain_cf_ndcg(holdout, c, recs)
            cache["grid"] = grid
        grid = cache["grid"]
        best_key = max(grid, key=lambda g: grid[g].mean())
        ndcg["als_best_in_hindsight"] = grid[best_key]
    # new arrivals: relevant items nobody touched before the cutoff
    trained = set(holdout.train[C.ITEM_ID].astype(str))
    new_rel = {u: {i for i in holdout.relevant[u] if i not in trained} for u in users}
    new_rel = {u: r for u, r in new_rel.items() if r}
    cold_recall = {m: round(float(np.mean([len(set(lists[m].get(u, [])[:k]) & r) / len(r)
                                           for u, r in new_rel.items()])), 5) if new_rel else None
                   for m in lists}
    new_ids = {i for i in f.space.item_ids if i not in trained}
    with_new = float(np.mean([bool(set(lists["hybrid"].get(u, [])) & new_ids) for u in users]))
    est = blend.get("estimates") or {}
    agree = {}
    for m, e in est.items():
        if m in ndcg:
            h = ndcg[m]
            se_h = float(h.std(ddof=1) / np.sqrt(len(h))) if len(h) > 1 else 0.0
            z = (float(h.mean()) - e["ndcg"]) / max(1e-12, float(np.hypot(se_h, e["se"])))
            agree[m] = {"estimate": e["ndcg"], "estimate_se": e["se"],
                        "holdout": round(float(h.mean()), 5), "holdout_se": round(se_h, 5),
                        "z": round(z, 2)}
    vs = {name: _paired(ndcg["hybrid"], ndcg[name]) for name in ndcg if name != "hybrid"}
    learned = {}
    mine = ("ranker", "published", "ranker_slots")
    for m in mine:
        if m in ndcg:
            learned[f"{m}_vs"] = {name: _paired(ndcg[m], ndcg[name]) for name in ndcg
                                  if name not in mine or (m, name) == ("ranker_slots", "ranker")}
            learned[f"{m}_ratios"] = {name: round(float(ndcg[m].mean() / v.mean()), 3)
                                      for name, v in ndcg.items()
                                      if name not in mine and v.mean() > 0}
    others = {f"{a} vs {b}": _paired(ndcg[a], ndcg[b]) for a, b in
              (("visual_pref", "visual"), ("text", "visual_pref"), ("text", "visual"))
              if a in ndcg and b in ndcg}
    return {
        "users": int(len(users)), "train_pairs": int(len(holdout.train)), "k": k,
        "holdout": holdout.info(), "tuning_window": tuning.info(),
        "cf_tuning": {key: cf_rec.get(key) for key in ("chosen", "configured_ndcg",
                                                        "chosen_ndcg", "grid", "full_grid",
                                                        "skipped")},
        "als_tuning": {key: als_rec.get(key) for key in ("chosen", "chosen_ndcg")},
        "tuning": {key: blend.get(key) for key in ("chosen", "grid", "cf_only_ndcg",
                                                    "chosen_ndcg", "val_users", "skipped",
                                                    "extended_to", "new_arrival_grid",
                                                    "text_grid")},
        "ranker": None if rk is None else {key: rk.get(key) for key in (
            "chosen", "reason", "skipped", "validation", "slots", "train", "refit",
            "importance", "seconds", "train_window", "valid_window")},
        **learned,
        "map_quality": f.map_quality, "new_arrival_slots": f.policy.new_arrival_slots,
        "slots_off": f.slots_off,
        "ndcg_all": {name: round(float(v.mean()), 5) for name, v in ndcg.items()},
        "hybrid_vs": vs, "paired": others,
        "ratios": {f"hybrid / {name}": round(float(ndcg["hybrid"].mean() / v.mean()), 3)
                   for name, v in ndcg.items() if name != "hybrid" and v.mean() > 0},
        "als_grid_best_in_hindsight": ({"params": list(best_key),
                                        "ndcg": round(float(grid[best_key].mean()), 5)}
                                       if grid else None),
        "estimate_vs_holdout": agree,
        "cold": {"items_new": len(new_ids), "users_with_new_relevant": len(new_rel),
                 "recall_at_k": cold_recall},
        "lists_with_new_arrival": round(with_new, 4),
        "coverage": {name: round(len({i for lst in lists[name].values() for i in lst})
                                 / f.space.n, 4) for name in lists},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def weighted(events: pd.DataFrame) -> pd.DataFrame:
    """Events with vrec's default event-type weights (no time decay)."""
    return events.assign(weight=events[C.EVENT_TYPE].map(EVENT_WEIGHTS).fillna(2.0))


def forward_pair(events: pd.DataFrame, cut: pd.Timestamp, h: pd.Timedelta,
                 recs: RecsSettings, seed: int = 0) -> tuple[Window, Window, Window]:
    """(holdout, tuning window, the window before it): the holdout's features end at
    ``cut`` and its labels are the events after it; the tuning window's features end at
    ``cut - h`` and its labels are the events in ``[cut - h, cut)``; the window before
    it (where the learned ranker trains) ends its features at ``cut - 2h``, its labels
    at ``cut - h``: nothing of the holdout reaches either."""
    ev = weighted(events)
    ts = pd.to_datetime(ev[C.TS], utc=True)
    end = ts.max() + pd.Timedelta(seconds=1)
    holdout = forward_window(*pairs_from_events(ev, cut), cut, label_end=cut + (end - cut).ceil("D"))
    tuning = forward_window(*pairs_from_events(ev[ts < cut], cut - h), cut - h)
    before = forward_window(*pairs_from_events(ev[ts < cut - h], cut - 2 * h), cut - 2 * h)
    return (holdout, tuning.sampled(recs.tune_max_users, seed),
            before.sampled(recs.tune_max_users, seed + 1))


def movielens_pairs(ml_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, catalog) from MovieLens CSVs with vrec's default rating weights
    (rating >= 3: 2·r/5, else weight 0 = seen only); the catalog's text is the title,
    the genres (category = the first) and the users' tags."""
    from pathlib import Path

    r = pd.read_csv(Path(ml_dir) / "ratings.csv")
    m = pd.read_csv(Path(ml_dir) / "movies.csv")
    tags = pd.read_csv(Path(ml_dir) / "tags.csv")
    tag_text = tags.groupby("movieId")["tag"].apply(lambda t: " ".join(map(str, t)))
    pairs = pd.DataFrame({
        C.USER_ID: r["userId"].astype(str), C.ITEM_ID: r["movieId"].astype(str),
        "weight": np.where(r["rating"] >= 3.0, 2.0 * r["rating"] / 5.0, 0.0),
        "rating": r["rating"], "last_ts": pd.to_datetime(r["timestamp"], unit="s", utc=True)})
    catalog = pd.DataFrame({C.ITEM_ID: m["movieId"].astype(str), C.TITLE: m["title"],
                            C.CATEGORY: m["genres"].str.split("|").str[0],
                            C.DESCRIPTION: m["genres"].str.replace("|", " ") + " "
                            + m["movieId"].map(tag_text).fillna("")})
    return pairs, catalog


def movielens_tuning(train: pd.DataFrame, recs: RecsSettings, seed: int = 0) -> Window:
    """The tunings' window inside MovieLens's training part. MovieLens has no shared time
    axis: its users arrive in sessions over 22 years, and a global forward window over
    the training part (the cutoff at its 80th percentile in time) holds 107 labelled
    users of whom 97 were cold, so every setting scores alike there. Its tunings
    therefore validate per user, as its holdout does (each user's latest 20% of training
    pairs, after their earlier ones): forward in each user's own time."""
    end = pd.to_datetime(train["last_ts"], utc=True).max() + pd.Timedelta(seconds=1)
    return user_window(train, end).sampled(recs.tune_max_users, seed)


def movielens_holdout(ml_dir) -> tuple[Window, pd.DataFrame]:
    """(holdout, catalog) of MovieLens: the per-user chronological split (each user's
    last 20%; relevant = test ratings >= 3.5); the holdout's ``train`` is the training
    part."""
    pairs, catalog = movielens_pairs(ml_dir)
    train, test = per_user_chronological_split(pairs)
    test = test[test["rating"] >= 3.5]
    end = pairs["last_ts"].max() + pd.Timedelta(seconds=1)
    train = train.drop(columns=["rating"])
    return Window(train, test.groupby(C.USER_ID)[C.ITEM_ID].apply(
        lambda s: set(s.astype(str))).to_dict(), end, "user"), catalog


def run_movielens(ml_dir, vectors: pd.DataFrame, *, recs: RecsSettings | None = None,
                  cf: CFSettings | None = None, content: ContentSettings | None = None,
                  als_grid: bool = False, ranker: bool = True) -> dict:
    """:func:`movielens_holdout`; the tunings per user inside the training part
    (:func:`movielens_tuning`), and the learned ranker's training window per user inside
    the tuning window's features."""
    holdout, catalog = movielens_holdout(ml_dir)
    train = holdout.train
    recs = recs or RecsSettings()
    tuning = movielens_tuning(train, recs)
    # the ranker's training window: per user again, inside the tuning window's features
    before = movielens_tuning(tuning.train, recs, seed=1) if ranker else None
    return evaluate_forward(holdout, tuning, catalog, vectors,
                            cf=cf or CFSettings(), recs=recs, content=content,
                            als_grid=als_grid, before=before)


def run_movielens_models(ml_dir, vectors: pd.DataFrame, *, recs: RecsSettings | None = None,
                         cf: CFSettings | None = None, ks: tuple[int, ...] = (10, 50),
                         fraction: float = 0.2) -> tuple[pd.DataFrame, dict]:
    """The nightly evaluation's models on all of MovieLens-small with the per-user split
    (vrec's default rating weights: relevant = a held-out rating >= 3), the CF model and
    the blend tuned per user inside the training part (:func:`movielens_tuning`)."""
    pairs, catalog = movielens_pairs(ml_dir)
    pairs = pairs.drop(columns=["rating"])
    end = pairs["last_ts"].max() + pd.Timedelta(seconds=1)
    h = user_window(pairs, end, fraction=fraction)
    cf = cf or CFSettings()
    recs, visual = recs or RecsSettings(), VisualSettings()
    feats = content_features(vectors, catalog, visual, ContentSettings())
    tuning = movielens_tuning(h.train, recs)
    cf_t, _ = tuned(tuning, cf, recs, feats)
    fit = lambda p: fit_cf(p, cf_t, images=feats)  # noqa: E731
    blend = tune_blend(tuning, catalog, vectors, recs=recs, visual=visual, fit=fit,
                       content=feats)
    return evaluate_models(h, catalog, vectors, recs=recs, visual=visual, fit=fit, ks=ks,
                           blend=blend, content=feats)


def fashion_windows(events, *, days: int, test_days: int, window_days: int,
                    recs: RecsSettings, seed: int = 0, titles: str = "shop"
                    ) -> tuple[Window, Window, Window, pd.DataFrame]:
    """(holdout, tuning window, the window before it, catalog) of simulated shoppers
    (``events``: vrec.data.fashion.simulate_shoppers' (events, items)): the holdout is
    the last ``test_days`` of ``days``, the windows the ``window_days`` before it
    (:func:`forward_pair`); the catalog's titles as ``titles`` says (``shop``: colour and
    article type; ``opaque``: "Product <id>"; else the simulation's)."""
    ev, items = events
    if titles == "opaque":
        items = items.assign(**{C.TITLE: "Product " + items[C.ITEM_ID].astype(str)})
    elif titles == "shop":
        items = items.assign(**{C.TITLE: (items["baseColour"].fillna("") + " "
                                          + items["articleType"].fillna("")).str.strip()})
    cut = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=days - test_days)
    holdout, tuning, before = forward_pair(ev, cut, pd.Timedelta(days=window_days), recs, seed)
    return holdout, tuning, before, items[[C.ITEM_ID, C.TITLE, C.CATEGORY]]


def run_fashion(folder, vectors: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                test_days: int = 7, window_days: int = 7, recs: RecsSettings | None = None,
                cf: CFSettings | None = None, content: ContentSettings | None = None,
                seed: int = 0, taste: dict | None = None, form: str = "softmax",
                titles: str = "shop", als_grid: bool = False, events=None,
                als_cache: dict | None = None, ranker: bool = True) -> dict:
    """Simulated shoppers (vrec.data.fashion, generative ``form``, ``titles``): the
    holdout is the last ``test_days`` days (items arriving then are new arrivals with
    real photos and no history), the tunings' window the ``window_days`` before it, and
    with ``ranker`` the learned ranker's training window the ``window_days`` before that.
    ``events``: (events, items) already simulated (another title variant of the same
    shoppers; ``als_cache`` then spares the plain ALS peers)."""
    from vrec.data.fashion import load_styles, simulate_shoppers

    if events is None:
        styles = load_styles(folder, set(vectors[C.ITEM_ID].astype(str)))
        events = simulate_shoppers(styles, n_users=n_users, days=days, seed=seed, form=form,
                                   titles=titles, **(taste or {}))
    ev, items = events
    recs = recs or RecsSettings()
    holdout, tuning, before, catalog = fashion_windows(
        events, days=days, test_days=test_days, window_days=window_days, recs=recs, seed=seed,
        titles=titles)
    out = evaluate_forward(holdout, tuning, catalog, vectors, cf=cf or CFSettings(),
                           recs=recs, content=content, seed=seed, als_grid=als_grid,
                           als_cache=als_cache, before=before if ranker else None)
    out["simulation"] = {"users": n_users, "days": days, "test_days": test_days,
                         "window_days": window_days, "events": int(len(ev)),
                         "items": int(len(items)), "form": form, "titles": titles,
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

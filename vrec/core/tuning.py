"""Tuning on a forward window (docs/ranking.md "Tuning"): the CF model, then the blend.

Both tunings validate forward in time (vrec.core.window): everything is built as of a
cutoff ``as_of - recs.window_days`` (pairs, histories, trending, new arrivals), and lists
for a sample of the users active after it (cold users and new arrivals included) are
scored by NDCG@k against what they did in the days up to ``as_of``.

:func:`tune_cf`: the CF model's factors, regularization, alpha and image prior, by a
coordinate search from the configured values (alpha, regularization, factors, then the
image prior over their grids),
fitting the run's engine on the training part each time and scoring the plain CF lists;
a value replaces the current one only when it beats it by more than one standard error of
the paired per-user difference. With ``cf.tune_iterations`` below ``cf.iterations``
(:func:`screen_iterations`), the plain coordinates' points are screened: fit with that
many sweeps. The image prior's coordinate is always searched on full fits: the best
plain point is fit once more with all sweeps, and the prior points refine that fit, so a
refinement's own sweeps never compete with a screening fit's fewer.

:func:`tune_blend`: with the tuned CF model fit on the training part, retrieval and the
ranker (the production code, on users built by vrec.core.users) build lists at each
(visual weight, history shrink, preference share) of the grid; when the best visual
weight is the grid's largest, larger ones are tried up to 1. CF only is the default; a
blend replaces it only when its mean per-user NDCG@k beats CF only by more than
``tune_min_gain_se`` standard errors of the paired per-user difference, and then the best
such blend wins. Then the text share of the preference part (``text_mix``) and the
reserved slots' pick (``new_arrival_pref``) are chosen against the configured values
by one standard error, and with ``tune_slots`` the reserved slots are dropped when lists without them beat
lists with them by more than one standard error, or when the window's cold-start map was
not trusted (nothing then shows that they pay). The chosen blend is therefore never
worse than CF only on the window, and noise does not move it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, ContentSettings, RecsSettings, VisualSettings
from vrec.core.cf import HeldFit, sharing_plain_fits
from vrec.core.itemspace import ItemSpace, build_item_space, gate_new_arrivals, ranking_policy
from vrec.core.models import variant_lists
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import RankInput, retrieve
from vrec.core.topk import TopK
from vrec.core.users import UserBatch, pairs_by_user, row_pointer, seen_pairs, user_batch
from vrec.core.visual import ImageFeatures
from vrec.core.window import Window

if TYPE_CHECKING:
    from vrec.core.cf import CFModel


def paired_gain(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """The paired per-user difference new - old: its mean and standard error."""
    d = new - old
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


# ---------------------------------------------------------------- the CF model

def cf_lists(model: CFModel, rows: pd.DataFrame, k: int,
             seen_event_types: tuple[str, ...]) -> dict[str, list[str]]:
    """The plain CF top-k of each user row (vrec.core.users rows), seen items excluded."""
    item_index = {str(v): i for i, v in enumerate(model.item_ids)}
    user_index = {str(v): i for i, v in enumerate(model.user_ids)}
    seen_types = frozenset(seen_event_types)
    keep = [u for u in rows[C.USER_ID] if str(u) in user_index]
    if not keep:
        return {}
    sub = rows[rows[C.USER_ID].isin(keep)]
    lens = np.fromiter((len(x) for x in sub["items"]), np.int64, len(sub))
    owner = np.repeat(np.arange(len(sub)), lens)
    idx = np.asarray([item_index.get(str(it), -1) for x in sub["items"] for it in x],
                     dtype=np.int64)
    ok = (idx >= 0) & seen_pairs(sub["event_types"], lens, seen_types)
    import scipy.sparse as sp

    seen = sp.csr_matrix((np.ones(int(ok.sum()), np.int8), idx[ok],
                          row_pointer(owner[ok], len(sub))),
                         shape=(len(sub), len(model.item_ids)))
    uf = np.asarray(model.user_factors)[[user_index[str(u)] for u in sub[C.USER_ID]]]
    top, _ = TopK(np.asarray(model.item_factors)).search(uf, k, exclude=seen)
    ids = np.asarray(model.item_ids).astype(str)
    return {str(u): [ids[j] for j in row if j >= 0] for u, row in zip(sub[C.USER_ID], top)}


def tune_cf(window: Window, cf: CFSettings, recs: RecsSettings,
            fit_with: Callable[[CFSettings], Callable[[pd.DataFrame], CFModel]],
            label: str = "CF tuning",
            keep: Callable[[CFSettings, CFModel], None] | None = None) -> dict:
    """Choose factors, regularization and alpha on ``window``; see module doc.
    ``fit_with(settings)`` returns the run's engine fitting with those settings; each
    grid point is counted on a progress line (``label``). ``keep(settings, model)`` is
    called with each point that becomes the best so far and its model fit on the
    window's training pairs: the last call is the chosen one's, which the caller may use
    instead of fitting the same pairs with the same settings again."""
    from vrec.progress import progress

    t0 = time.perf_counter()
    out = {"window": window.info(), "val_users": int(len(window.users)), "grid": {},
           "chosen": None}
    skipped = window_skipped(window, recs)
    if skipped:
        return {**out, "skipped": skipped, "seconds": round(time.perf_counter() - t0, 2)}
    rows = pairs_by_user(window.train, window.users)
    grids = (("alpha", cf.tune_alpha), ("regularization", cf.tune_regularization),
             ("factors", cf.tune_factors), ("visual_prior", cf.tune_visual_prior))
    sweeps = screen_iterations(cf)
    screened = sweeps < cf.iterations
    out["screen_iterations"] = sweeps

    if screened:
        out["full_grid"] = {}  # the points fit with all sweeps: the prior's coordinate
    last: dict[str, CFModel] = {}  # the point just scored's model, for ``keep``

    def lists_ndcg(model: CFModel) -> np.ndarray:
        return window.ndcg(cf_lists(model, rows, recs.k, recs.seen_event_types), recs.k)

    with progress(label, 1 + sum(len(v) for _, v in grids) + int(screened),
                  "grid points") as bar, sharing_plain_fits():
        def score(c: CFSettings, full: bool) -> np.ndarray:
            last.clear()  # held only until the next fit: a best one is the caller's
            model = fit_with(c if full else c.model_copy(update={"iterations": sweeps})
                             )(window.train)
            v = lists_ndcg(model)
            if keep is not None and (full or not screened):
                last["model"] = model
            grid = out["full_grid"] if screened and full else out["grid"]
            grid[_cf_key(c)] = round(float(v.mean()), 5)
            bar.update()
            return v

        best, best_v = _cf_search(
            cf, grids, score, bar, screened=screened,
            on_best=None if keep is None else lambda c: keep(c, last["model"]))
        last.clear()
        if screened:
            out["chosen_full_ndcg"] = out["full_grid"][_cf_key(best)]
    out["configured_ndcg"] = out["grid"][_cf_key(cf)]
    out["chosen"] = {"factors": best.factors, "regularization": best.regularization,
                     "alpha": best.alpha, "visual_prior": best.visual_prior}
    out["chosen_ndcg"] = round(float(best_v.mean()), 5)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def screen_iterations(cf: CFSettings) -> int:
    """The ALS sweeps each grid point of the CF tuning is fit with: ``cf.tune_iterations``
    (null: ``cf.iterations``), never more than ``cf.iterations``."""
    return min(cf.tune_iterations or cf.iterations, cf.iterations)


def _cf_key(c: CFSettings) -> str:
    return f"f{c.factors}/r{c.regularization:g}/a{c.alpha:g}/p{c.visual_prior:g}"


def _cf_search(cf: CFSettings, grids, score: Callable[[CFSettings, bool], np.ndarray],
               bar, on_best: Callable[[CFSettings], None] | None = None,
               screened: bool = False) -> tuple[CFSettings, np.ndarray]:
    """One parameter at a time (module doc): keep a value only when it beats the best so
    far by more than one paired standard error. Skipped grid points count as done.
    ``score(settings, full)`` scores a point, fit with all sweeps when ``full`` (else the
    screening's, when ``screened``). The image prior's coordinate is searched on full
    fits: when ``screened``, the best so far is scored again with all sweeps (one
    progress step) before it, or at the end when there is none. ``on_best(settings)``
    runs right after the scoring of each point scored in full that becomes the best so
    far (the start included). Returns the best and its per-user scores, of a full fit."""
    on_best = on_best or (lambda c: None)
    full = not screened
    best, best_v = cf, score(cf, full)
    if full:
        on_best(best)

    def to_full() -> None:
        nonlocal full, best_v
        full, best_v = True, score(best, True)
        on_best(best)

    for key, values in grids:
        if key == "visual_prior" and values and not full:
            to_full()
        current = best
        for value in values:
            if value == getattr(current, key):
                bar.update()
                continue
            cand = current.model_copy(update={key: type(getattr(cf, key))(value)})
            v = score(cand, full)
            gain, se = paired_gain(v, best_v)
            if gain > se and v.mean() > best_v.mean():
                best, best_v = cand, v
                if full:
                    on_best(best)
    if not full:
        to_full()
    # an image prior chosen at the grid's largest value: try larger ones (x3 each) while
    # they keep winning by more than one SE (a prior at the edge may want more)
    edge = max(cf.tune_visual_prior, default=0.0)
    prior = best.visual_prior
    for _ in range(3):
        if not (edge > 0 and prior >= edge and prior == best.visual_prior):
            break
        prior = prior * 3.0
        bar.total = bar.total + 1
        cand = best.model_copy(update={"visual_prior": prior})
        v = score(cand, full)
        gain, se = paired_gain(v, best_v)
        if not (gain > se and v.mean() > best_v.mean()):
            break
        best, best_v = cand, v
        on_best(best)
    return best, best_v


def tuning_reusable(record: dict | None, *, as_of: str, max_age_days: int, key: dict,
                    size: dict[str, int]) -> bool:
    """Whether an earlier tuning ``record`` (a CF or blend tuning: what was chosen, the
    day its data ended, ``as_of``, the settings it started from, ``key``, and the data's
    ``size``) may be reused for data that ends on ``as_of``: it ran on data that ended
    that day or at most ``max_age_days`` before (never later: a backfill must not see
    the future), from the same settings, and each size (pairs, users, items) changed by
    at most 20%. ``max_age_days`` 0 never reuses."""
    import datetime as dt

    if not record or not record.get("chosen") or max_age_days == 0:
        return False
    age = (dt.date.fromisoformat(as_of) - dt.date.fromisoformat(record["as_of"])).days
    if not 0 <= age <= max_age_days or record.get("key") != key:
        return False
    had = record.get("size", {})
    return all(abs(now - had.get(k, 0)) <= 0.2 * max(1, had.get(k, 0)) for k, now in size.items())


def data_size(pairs: pd.DataFrame) -> dict[str, int]:
    """The size a tuning is reused by: pairs, distinct users, distinct items."""
    return {"pairs": int(len(pairs)), "users": int(pairs[C.USER_ID].nunique()),
            "items": int(pairs[C.ITEM_ID].nunique())}


# how hard the CF tuning screens its grid, not what it searches: a tuning stored with
# other screening is still a tuning of the same grid and starting point, and reused
SCREENING = {"tune_iterations"}


def settings_key(cf: CFSettings, content: ContentSettings) -> dict:
    """The CF settings a tuning starts from and the content features its image prior
    uses (a change of any of them tunes again)."""
    tuned = {"factors", "regularization", "alpha", "visual_prior"}
    return cf.model_dump(mode="json", exclude=tuned | SCREENING) | {
        "start": [cf.factors, cf.regularization, cf.alpha, cf.visual_prior],
        "content": content.model_dump(mode="json")}


def blend_settings_key(recs: RecsSettings, visual: VisualSettings, cf: CFSettings,
                       content: ContentSettings) -> dict:
    """What a blend tuning depends on besides the data: the list and tuning settings,
    the visual and content settings and the CF model it ranks with (a change of any
    tunes again)."""
    return {"recs": recs.model_dump(mode="json"), "visual": visual.model_dump(mode="json"),
            "cf": cf.model_dump(mode="json", exclude=SCREENING),
            "content": content.model_dump(mode="json")}


# ---------------------------------------------------------------- the blend

@dataclasses.dataclass
class WindowCandidates:
    """A forward window ranked as the night ranks: the CF model fit on its training part,
    the item space as of its cutoff (gated), the map's quality and why slots were off,
    its users (the window's sample) and their retrieved candidates."""

    window: Window
    model: CFModel
    space: ItemSpace
    quality: dict
    slots_off: str | None
    batch: UserBatch
    inp: RankInput


def window_candidates(window: Window, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
                      recs: RecsSettings, visual: VisualSettings,
                      fit: Callable[[pd.DataFrame], CFModel], seed: int = 0,
                      content: ImageFeatures | None = None, extra: bool = False,
                      spaces: HeldFit | None = None) -> WindowCandidates:
    """Fit, build the space and retrieve every sampled user's candidates as of the
    window's cutoff (``extra``: the learned ranker's sources too). ``spaces``: holds the
    item space (and its quality) built for the very model, training pairs and inputs, so
    that the blend tuning and the learned ranker's validation, which sample other users
    of one window, build it once."""
    model = fit(window.train)
    key = f"item space {seed} {window.end} {recs.model_dump_json()} {visual.model_dump_json()}"
    same = (model, catalog, vectors, content)
    held = spaces.get(window.train, key, *same) if spaces is not None else None
    space, quality = held or build_item_space(
        model, catalog, vectors, window.train, window.trending_ids(), recs, visual=visual,
        seed=seed, content=content, end=window.end)
    if spaces is not None and held is None:
        spaces.offer(window.train, key, (space, quality), *same)
    space, slots_off = gate_new_arrivals(space, quality, recs.new_arrival_min_auc)
    batch = user_batch(pairs_by_user(window.train, window.users), space, model, recs,
                       window.end)
    return WindowCandidates(window, model, space, quality, slots_off, batch,
                            retrieve(batch, space, recs.candidates, visual, extra=extra))


def tune_blend(window: Window, catalog: pd.DataFrame, vectors: pd.DataFrame, *,
               recs: RecsSettings, visual: VisualSettings,
               fit: Callable[[pd.DataFrame], CFModel] | None = None, seed: int = 0,
               content: ImageFeatures | None = None, label: str = "blend tuning",
               estimate_days: float | None = None,
               cands: Callable[[], WindowCandidates] | None = None, extra: bool = False
               ) -> dict:
    """Choose (visual_weight, history_shrink, pref_mix), then text_mix and
    new_arrival_pref, on a forward window; see module doc. ``fit`` fits the run's (tuned)
    CF engine; ``content``: the run's content features. The record also holds every
    model's NDCG@k on the window with the chosen blend (``estimates``: what the tuning
    expects; the evaluation measures the same models on its holdout), scored on the
    labels of the first ``estimate_days`` days after the window's cutoff when given (the
    holdout's length, so that the two compare; None: all of the window's labels). The
    ranked grid points are counted on a progress line (``label``). ``cands``: the
    window's candidates when the caller shares them (else built here with ``fit``,
    ``seed`` and ``content``); ``extra``: the candidates hold the learned ranker's
    sources (the night retrieves them)."""
    from vrec.progress import progress

    t0 = time.perf_counter()
    out = {"window": window.info(), "val_users": int(len(window.users)), "grid": {},
           "chosen": None}
    skipped = window_skipped(window, recs)
    if skipped:
        out["skipped"] = skipped
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out
    if cands is None and fit is None:
        raise ValueError("tune_blend needs the window's candidates (cands) or a CF fit (fit)")
    c = cands() if cands is not None else window_candidates(
        window, catalog, vectors, recs=recs, visual=visual, fit=fit, seed=seed, content=content,
        extra=extra)
    model, space, batch, inp, quality = c.model, c.space, c.batch, c.inp, c.quality
    out["cf"] = {k: model.params.get(k) for k in ("engine", "device")}
    out["slots_off"] = c.slots_off
    base = ranking_policy(recs, None, out["slots_off"])
    out["map_quality"] = quality
    with progress(label, _blend_points(recs, base.new_arrival_slots > 0 and bool(space.new.any())),
                  "grid points") as bar:
        out = _search_blend(out, recs, base, window, inp, space, bar)
    policy = base.model_copy(update=out["chosen"])
    lists = variant_lists(batch, space, policy, visual, (recs.k,), extra=extra)
    est = window.first_days(estimate_days) if estimate_days else window
    out["estimates"], out["estimate_days"] = {}, estimate_days
    out["estimate_users"] = int(len(est.users))
    for (name, _), per_user in lists.items():
        v = est.ndcg(per_user, recs.k)
        if len(v) == 0:
            continue
        out["estimates"][name] = {"ndcg": round(float(v.mean()), 5),
                                  "se": round(float(v.std(ddof=1) / np.sqrt(len(v))), 5)
                                  if len(v) > 1 else 0.0}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def window_skipped(window: Window, recs: RecsSettings) -> str | None:
    """Why a window is too small to tune on (None: it is not)."""
    n = len(window.users)
    if n < recs.tune_min_users:
        return (f"{n} users with labels in the forward window < recs.tune_min_users "
                f"{recs.tune_min_users}")
    if window.train.empty or not (window.train["weight"] > 0).any():
        return "no interactions before the forward window's cutoff"
    return None


def _blend_points(recs: RecsSettings, slots: bool) -> int:
    """How many rankings :func:`tune_blend`'s search plans (an extended edge adds more)."""
    weights = sorted(set(recs.tune_grid))
    pairs = {(b, h) for b in weights for h in recs.tune_shrink_grid} - {(0.0, 0.0)}
    return 2 + len(pairs) * len(recs.tune_pref_grid) + len(recs.tune_text_grid) + (
        len(recs.tune_new_grid) + 1 + 2 * bool(recs.tune_slots) if slots else 0)


def _search_blend(out: dict, recs: RecsSettings, base, window: Window, inp, space,
                  bar) -> dict:
    """The blend search of :func:`tune_blend` on the ranked window (``bar`` counts)."""
    scores: dict[tuple, np.ndarray] = {}

    def per_user(**update) -> np.ndarray:
        key = tuple(sorted(update.items()))
        if key not in scores:
            policy = base.model_copy(update=update)
            scores[key] = window.ndcg(lists_by_user(rank(inp, space, policy), space), recs.k)
            bar.total = max(bar.total, bar.n + 1)
            bar.update()
        return scores[key]

    cf_only = per_user(visual_weight=0.0, history_shrink=0.0)
    best = (float(cf_only.mean()), {"visual_weight": 0.0, "history_shrink": 0.0,
                                     "pref_mix": recs.pref_mix})
    out["grid"]["0/0"] = round(best[0], 5)

    def consider(b: float) -> None:
        nonlocal best
        for h in recs.tune_shrink_grid:
            for m in recs.tune_pref_grid:
                if (b, h) == (0.0, 0.0):
                    continue
                v = per_user(visual_weight=b, history_shrink=h, pref_mix=m)
                gain, se = paired_gain(v, cf_only)
                out["grid"][f"{b:g}/{h:g}/{m:g}"] = round(float(v.mean()), 5)
                # a blend must beat CF only by more than tune_min_gain_se standard errors
                # of the paired per-user difference: 3 SE covers the grid's comparisons
                if gain > recs.tune_min_gain_se * se and v.mean() > best[0]:
                    best = (float(v.mean()), {"visual_weight": b, "history_shrink": h,
                                              "pref_mix": m})

    weights = sorted(set(recs.tune_grid))
    for b in weights:
        consider(b)
    step = (weights[-1] - weights[-2]) if len(weights) > 1 else 0.25
    edge = weights[-1]
    while best[1]["visual_weight"] == edge and edge < 1.0:  # the best sits on the edge
        edge = round(min(1.0, edge + max(step, 0.05)), 4)
        consider(edge)
    out["extended_to"] = edge if edge > weights[-1] else None
    chosen = dict(best[1])

    def one_setting(key: str, start: float, grid, scores: dict) -> float:
        """``key`` over ``grid`` with the rest of the choice fixed: a value replaces the
        configured ``start`` only when it beats it by more than one paired SE."""
        ref = per_user(**chosen, **{key: start})
        best_v = (float(ref.mean()), start)
        for x in grid:
            v = per_user(**chosen, **{key: x})
            scores[f"{x:g}"] = round(float(v.mean()), 5)
            gain, se = paired_gain(v, ref)
            if gain > se and v.mean() > best_v[0]:
                best_v = (float(v.mean()), x)
        return best_v[1]

    # the text share of the preference part (decision-level fusion), when there is text
    out["text_grid"] = {}
    if space.text_only() is not None:
        chosen["text_mix"] = one_setting("text_mix", recs.text_mix, recs.tune_text_grid,
                                         out["text_grid"])
    # how the reserved slots pick new arrivals: the map, the preference model, or a mix
    slot_scores = {}
    if base.new_arrival_slots > 0 and space.new.any():
        chosen["new_arrival_pref"] = one_setting("new_arrival_pref", recs.new_arrival_pref,
                                                 recs.tune_new_grid, slot_scores)
        if recs.tune_slots:  # slots that cost more than one SE on the window are dropped
            on = per_user(**chosen)
            off = per_user(**chosen, new_arrival_slots=0)
            gain, se = paired_gain(off, on)
            slot_scores["slots_on"] = round(float(on.mean()), 5)
            slot_scores["slots_off"] = round(float(off.mean()), 5)
            if gain > se and off.mean() > on.mean():
                chosen["new_arrival_slots"] = 0
    elif base.new_arrival_slots == 0 and recs.new_arrival_slots > 0 and recs.tune_slots:
        # the window did not trust the cold-start map: nothing shows the slots would pay
        chosen["new_arrival_slots"] = 0
        slot_scores["dropped"] = out["slots_off"]
    out["new_arrival_grid"] = slot_scores
    out["cf_only_ndcg"] = out["grid"]["0/0"]
    out["als_only_ndcg"] = round(float(per_user(
        visual_weight=0.0, history_shrink=0.0, new_arrival_slots=0, mmr_penalty=0.0,
        max_per_category=0).mean()), 5)
    out["chosen"] = chosen
    out["chosen_ndcg"] = round(float(per_user(**chosen).mean()), 5)
    return out

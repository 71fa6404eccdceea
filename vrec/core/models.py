"""The models the evaluation measures, as restrictions of the production inputs.

Every model is the production retrieval and ranker (vrec.core.retrieval,
vrec.core.ranking) with restricted inputs, so the numbers describe the lists a run
publishes and their parts:

* ``popularity``: no CF factors, no history: the ranker's trending fill;
* ``als``: CF factors only (no visual profile, new arrivals not scored);
* ``visual``: the mean visual profile only (visual and new-arrival candidates by picture);
* ``visual_pref``: the learned content preference only (vrec.core.visual), over the
  content features the run uses (images, text or both);
* ``text``: the learned preference over the items' text features alone;
* ``hybrid``: everything, with the tuned blend and the production list policy;
* ``ranker``: the hybrid's candidates (with the learned ranker's extra sources) ranked
  by a learned ranker (vrec.core.ranker) under the same list policy, when one is given.

The blend tuning scores them on its window (the estimate) and the evaluation on its
holdout (what happened); the report shows both.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from vrec.config import RecsSettings, VisualSettings
from vrec.core.itemspace import ItemSpace
from vrec.core.ranking import lists_by_user, rank
from vrec.core.retrieval import profile_source, retrieve
from vrec.core.users import UserBatch

MODELS = ("popularity", "als", "visual", "visual_pref", "text", "hybrid", "ranker")


def restricted(batch: UserBatch, *, cf: bool, profile: bool, pref: bool = True) -> UserBatch:
    """The same users with CF factors and/or history (the visual profile and the
    preference model; ``pref`` False: the preference model only) removed."""
    n = len(batch.user_ids)
    empty = sp.csr_matrix(batch.hist.shape, dtype=np.float32)
    return dataclasses.replace(
        batch, uf=batch.uf if cf else np.zeros_like(batch.uf),
        in_model=batch.in_model if cf else np.zeros(n, dtype=bool),
        hist=batch.hist if profile else empty,
        weights=batch.weights if profile and pref else empty,
        last_items=batch.last_items if profile else [])


def variants(batch: UserBatch, space: ItemSpace, hybrid: RecsSettings
             ) -> dict[str, tuple[UserBatch, ItemSpace, RecsSettings]]:
    """``{model: (users, item space, policy)}`` of :data:`MODELS` (module doc); ``hybrid``
    is the run's list policy. ``text`` is left out when the space has no text features."""
    plain = dict(new_arrival_slots=0, mmr_penalty=0.0, max_per_category=0)
    no_new = dataclasses.replace(space, new=np.zeros_like(space.new))
    pref_only = dict(visual_weight=1.0, history_shrink=0.0, pref_mix=1.0, text_mix=0.0, **plain)
    out = {
        "popularity": (restricted(batch, cf=False, profile=False), space,
                       hybrid.model_copy(update=plain)),
        "als": (restricted(batch, cf=True, profile=False), no_new,
                hybrid.model_copy(update=dict(visual_weight=0.0, history_shrink=0.0, **plain))),
        "visual": (restricted(batch, cf=False, profile=True, pref=False), space,
                   hybrid.model_copy(update=dict(visual_weight=1.0, history_shrink=0.0,
                                                 pref_mix=0.0, **plain))),
        "visual_pref": (restricted(batch, cf=False, profile=True), space,
                        hybrid.model_copy(update=pref_only)),
    }
    text = space.text_only()
    if text is not None:
        out["text"] = (restricted(batch, cf=False, profile=True), text,
                       hybrid.model_copy(update={**pref_only, "text_mix": 1.0}))
    out["hybrid"] = (batch, space, hybrid)
    return out


def variant_lists(batch: UserBatch, space: ItemSpace, hybrid: RecsSettings,
                  visual: VisualSettings, ks: tuple[int, ...], bar=None, *,
                  extra: bool = False, ranker=None, workers: int = 1
                  ) -> dict[tuple[str, int], dict[str, list[str]]]:
    """``{(model, k): {user: [item_id, ...]}}`` of every variant at each K (``bar``: a
    progress bar counting lists); ``extra``: the hybrid retrieves the learned ranker's
    sources too (as the night does when the ranker is on); ``ranker``: also the
    ``ranker`` model's lists. ``workers`` > 1: the users are cut into that many parts,
    each variant's part listed in one of ``workers`` processes started from a fork
    server (each user's lists depend on that user alone), with at least
    :data:`MIN_USERS_PER_WORKER` users a part."""
    hybrid = hybrid.model_copy(update={"candidates": max(hybrid.candidates, *ks)})
    parts = max(1, min(workers, len(batch.user_ids) // MIN_USERS_PER_WORKER))
    per_model = len(ks) * (1 + (ranker is not None))
    if parts == 1:
        out = {}
        for name, (b, s, policy) in variants(batch, space, hybrid).items():
            out.update(_variant_lists(name, b, s, policy, visual, ks, extra, ranker))
            if bar is not None:
                bar.update(per_model if name == "hybrid" else len(ks))
        return out
    import multiprocessing

    cuts = np.linspace(0, len(batch.user_ids), parts + 1).astype(int)
    users = [batch.rows(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
    names = list(variants(batch, space, hybrid))
    jobs = [(name, part) for name in names for part in users]
    if ranker is not None:  # the model's text only: each process builds its own booster
        ranker = dataclasses.replace(ranker)
    out: dict = {}
    left = {name: parts for name in names}
    # a fork server, not a fork of this process: a fork of a process that has run OpenMP
    # code (the CF refit, LightGBM) hangs in the child's first OpenMP region (LightGBM's
    # model parsing). Each process gets the item side once and its users with each job.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vrec.core.models"])
    with ctx.Pool(parts, initializer=_take_shared,
                  initargs=((space, hybrid, visual, ks, extra, ranker),)) as pool:
        for name, lists in pool.imap_unordered(_part_lists, jobs):
            for key, per_user in lists.items():
                out.setdefault(key, {}).update(per_user)
            left[name] -= 1
            if bar is not None and left[name] == 0:
                bar.update(per_model if name == "hybrid" else len(ks))
    return out


MIN_USERS_PER_WORKER = 200  # fewer: one process (starting one costs more than the lists)
_SHARED: tuple | None = None  # what a list process of variant_lists got at its start


def _take_shared(shared: tuple) -> None:
    """In a list process, at its start: the item side every job uses."""
    global _SHARED
    _SHARED = shared


def _part_lists(job: tuple[str, UserBatch]) -> tuple[str, dict]:
    """In a list process: one variant's lists for a part of the users."""
    from threadpoolctl import threadpool_limits

    name, users = job
    space, hybrid, visual, ks, extra, ranker = _SHARED
    b, s, policy = variants(users, space, hybrid)[name]
    with threadpool_limits(1, "blas"):  # one process per core
        return name, _variant_lists(name, b, s, policy, visual, ks, extra, ranker)


def _variant_lists(name: str, b: UserBatch, s: ItemSpace, policy: RecsSettings,
                   visual: VisualSettings, ks: tuple[int, ...], extra: bool, ranker
                   ) -> dict[tuple[str, int], dict[str, list[str]]]:
    """One variant's lists at each K (and the ranker's, from the hybrid's candidates)."""
    inp = retrieve(b, s, policy.candidates, visual, profile=profile_source(policy),
                   extra=(extra or ranker is not None) and name == "hybrid")
    out = {(name, k): lists_by_user(rank(inp, s, policy.model_copy(update={"k": k})), s)
           for k in ks}
    if name == "hybrid" and ranker is not None:
        for k in ks:
            out[("ranker", k)] = lists_by_user(
                rank(inp, s, policy.model_copy(update={"k": k}), ranker), s)
    return out

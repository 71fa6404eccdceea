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
                  extra: bool = False, ranker=None
                  ) -> dict[tuple[str, int], dict[str, list[str]]]:
    """``{(model, k): {user: [item_id, ...]}}`` of every variant at each K (``bar``: a
    progress bar counting lists); ``extra``: the hybrid retrieves the learned ranker's
    sources too (as the night does when the ranker is on); ``ranker``: also the
    ``ranker`` model's lists."""
    hybrid = hybrid.model_copy(update={"candidates": max(hybrid.candidates, *ks)})
    out = {}
    for name, (b, s, policy) in variants(batch, space, hybrid).items():
        inp = retrieve(b, s, policy.candidates, visual, profile=profile_source(policy),
                       extra=(extra or ranker is not None) and name == "hybrid")
        for k in ks:
            out[(name, k)] = lists_by_user(rank(inp, s, policy.model_copy(update={"k": k})), s)
            if bar is not None:
                bar.update()
        if name == "hybrid" and ranker is not None:
            for k in ks:
                out[("ranker", k)] = lists_by_user(
                    rank(inp, s, policy.model_copy(update={"k": k}), ranker), s)
                if bar is not None:
                    bar.update()
    return out

"""The hybrid ranker: one list per user from the retrieved candidates (vrec.core.retrieval).

Everything here is plain numpy over *catalog-indexed* arrays (vrec.core.itemspace), so
the nightly build_recs stage (inside Spark tasks), the blend tuning and the offline
evaluation (on the driver) run exactly the same code. docs/ranking.md documents the
formulas; in short, for a user ``u`` with history ``H``:

* profile ``p_u`` = L2-normalised sum over ``H`` of ``w_ui · e_i`` (``w_ui`` = the pair's
  interaction weight times recency ``0.5 ** (age_days / profile_half_life_days)``);
  ``visual(u, i) = cos(p_u, e_i)``;
* ``cf(u, i) = x_u · y_i``, where ``y_i`` is the ALS factor of a warm item or, for a new
  arrival (an item with an embedding and at most ``cold_item_max_users`` users), the
  factor predicted from its image by the ridge map (:func:`fit_ridge_map`);
* ``pref(u, i) = v_u · z_i``: the learned content preference (vrec.core.visual) over the
  run's content features (image and/or text); ``txt(u, i)`` the same over the text
  block alone;
* candidates = CF top-N ∪ visual top-N ∪ preference top-N ∪ new-arrival top-N, seen
  items excluded (vrec.core.retrieval);
* each score is normalised over the user's candidates (``zscore``, or ``rank`` =
  ``1 - 2·(r-1)/(n-1)``; a missing score counts as 0); the visual part is
  ``n_v = (1 - m) · n_vis + m · ((1 - t) · n_pref + t · n_txt)`` (``m`` = pref_mix; 1
  without a profile, 0 without a preference vector; ``t`` = text_mix, 1 without a
  content preference, 0 without a text preference) and the blend
  ``s = (1 - b_u) · n_cf + b_u · n_v`` with
  ``b_u = b + (1 - b) · h0 / (h0 + |H|)`` (``b`` = visual weight, ``h0`` = history
  shrink): short histories lean on the picture; ``b_u = 1`` without CF factors,
  ``0`` without a picture in the history;
* the list is picked greedily: gain = ``s - mmr_penalty · max cos(e_i, picked)``, at most
  ``max_per_category`` items per category, and the last ``new_arrival_slots`` places
  reserved for new arrivals, picked by ``(1 - q) · n_cf + q · n_p`` (``n_p`` the
  preference part above; ``q`` =
  new_arrival_pref: the cold-start map, the preference model, or a mix). Each pick's
  gain is its ``score``, made non-increasing by rank;
* reason: ``new_arrival_visual`` for a new arrival, ``similar_to_history`` when
  ``b_u · n_v > (1 - b_u) · n_cf`` (with ``reason_item_id`` = the history item most
  similar to it), else ``collaborative``; ``trending`` for fill and cold users.

With a learned ranker (vrec.core.ranker) its score, normalised per user, replaces the
blend ``s`` (and the slot key); the list rules are the same, except the number of
reserved new-arrival slots, which the ranker's validation chose. A pick's reason then comes
from its strongest source: ``new_arrival_visual`` for a new arrival, ``trending`` when no
source scored it (the trending source brought it), ``similar_to_history`` when its best
content rank (visual profile, preference, text, last items) beats its CF rank, else
``collaborative``; the history anchor is found as above.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import RecsSettings
from vrec.core.itemspace import ItemSpace, open_trending
from vrec.core.retrieval import RankInput, score_positions

REASON_CODES = C.REASONS  # the codes below index it
R_CF, R_SIM, R_NEW, R_TREND = range(4)
LIST_COLUMNS = ("user_id", "rank", "item", "score", "cf_score", "visual_score", "reason",
                "reason_item")


def user_visual_weight(beta: float, shrink: float, n_hist: np.ndarray, in_model: np.ndarray,
                       has_profile: np.ndarray) -> np.ndarray:
    """``b_u = b + (1 - b) · h0 / (h0 + n)``; 1 without CF factors, 0 without a profile."""
    n = np.asarray(n_hist, dtype=np.float64)
    extra = shrink / (shrink + n) if shrink > 0 else np.zeros_like(n)
    b = beta + (1.0 - beta) * extra
    b = np.where(in_model, b, 1.0)
    return np.where(has_profile, b, 0.0)


def normalise(x: np.ndarray, mode: str) -> np.ndarray:
    """Per-list normalisation of one score vector (NaN = missing, becomes 0)."""
    if mode == "rank":
        return rank_scale(*score_positions(x))
    ok = ~np.isnan(x)
    out = np.zeros(len(x), dtype=np.float64)
    m = int(ok.sum())
    if m < 2:
        return out
    v = x[ok]
    sd = v.std()
    out[ok] = (v - v.mean()) / sd if sd > 1e-12 else 0.0
    return out


def rank_scale(places: np.ndarray, m: int) -> np.ndarray:
    """:func:`normalise`'s rank mode from :func:`vrec.core.retrieval.score_positions`:
    1 for the best of ``m`` scores down to -1 for the worst, 0 without a score (and for
    every entry when fewer than two have one)."""
    if m < 2:
        return np.zeros(len(places), dtype=np.float64)
    return np.where(np.isnan(places), 0.0, 1.0 - 2.0 * places / (m - 1))


def greedy_pick(blend: np.ndarray, emb: np.ndarray | None, category: np.ndarray,
                is_new: np.ndarray,
                *, k: int, slots: int, mmr_penalty: float, max_per_category: int,
                slot_key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the candidates, in list order, and their gains (non-increasing).

    gain = blend - mmr_penalty · (max cosine to the items already picked); at most
    ``max_per_category`` per known category (0 = no cap); the last ``slots`` places are
    reserved for candidates flagged ``is_new`` (fewer when fewer exist), chosen by the
    largest ``slot_key`` (default: the gain). When the cap leaves nothing to pick the cap
    is lifted for that place. ``emb`` (the candidates' embeddings) is read only with a
    ``mmr_penalty``.
    """
    n = len(blend)
    k = min(k, n)
    slots = min(slots, int(is_new.sum()), k)
    if mmr_penalty == 0 and max_per_category <= 0:
        return _greedy_plain(blend.astype(np.float64), is_new, k, slots, slot_key)
    gain = blend.astype(np.float64).copy()
    maxsim = np.zeros(n)
    avail = np.ones(n, dtype=bool)
    known = category >= 0
    codes, inv = np.unique(category, return_inverse=True)
    counts = np.zeros(len(codes), dtype=np.int64)
    picked, gains = [], []
    n_new = 0
    for step in range(k):
        must_new = (k - step) <= (slots - n_new)
        allowed = avail & (is_new if must_new else True)
        if max_per_category > 0:
            capped = known & (counts[inv] >= max_per_category)
            if (allowed & ~capped).any():
                allowed = allowed & ~capped
        if not allowed.any():
            break
        g = np.where(allowed, gain - mmr_penalty * maxsim, -np.inf)
        j = int(np.argmax(np.where(allowed, slot_key, -np.inf) if must_new and
                          slot_key is not None else g))
        picked.append(j)
        gains.append(g[j])
        avail[j] = False
        n_new += int(is_new[j])
        counts[inv[j]] += 1
        if mmr_penalty > 0:
            maxsim = np.maximum(maxsim, emb @ emb[j])
    out = np.asarray(gains, dtype=np.float64)
    # lifting the cap can let a later pick gain more: keep the contract (non-increasing)
    return np.asarray(picked, dtype=np.int64), np.minimum.accumulate(out) if len(out) else out


def _greedy_plain(gain: np.ndarray, is_new: np.ndarray, k: int, slots: int,
                  slot_key: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`greedy_pick` without diversity or a category cap, by sorting: the places
    before the reserved ones take the largest gains (ties: the earlier candidate, as the
    greedy argmax does); once the places left equal the new arrivals still owed, every
    place takes the new arrival with the largest slot key (or gain)."""
    order = np.argsort(-gain, kind="stable")
    head = 0
    n_new = 0
    while head < k and (k - head) > (slots - n_new):
        n_new += int(is_new[order[head]])
        head += 1
    picked = order[:head]
    if head < k:
        taken = np.zeros(len(gain), dtype=bool)
        taken[picked] = True
        pool = np.flatnonzero(is_new & ~taken)
        key = gain if slot_key is None else np.asarray(slot_key, dtype=np.float64)
        picked = np.concatenate([picked, pool[np.argsort(-key[pool], kind="stable")[:k - head]]])
    picked = picked.astype(np.int64)
    out = gain[picked]
    return picked, np.minimum.accumulate(out) if len(out) else out


def trending_for(n: int, exclude: set[int], trending: np.ndarray, category: np.ndarray,
                 touched: np.ndarray | None) -> list[int]:
    """Up to ``n`` trending catalog indices not in ``exclude``: first those in the
    ``touched`` categories (when given), then the rest in trending order."""
    out: list[int] = []
    if touched is not None and len(touched):
        tset = set(int(t) for t in touched)
        for t in trending:
            if len(out) >= n:
                return out
            if int(t) not in exclude and int(category[t]) in tset:
                out.append(int(t))
    taken = exclude | set(out)
    for t in trending:
        if len(out) >= n:
            break
        if int(t) not in taken:
            out.append(int(t))
    return out


# ---------------------------------------------------------------- lists

def rank(inp: RankInput, space: ItemSpace, policy: RecsSettings, ranker=None) -> pd.DataFrame:
    """Final lists for a batch of users (:data:`LIST_COLUMNS`): ``item`` and
    ``reason_item`` are catalog indices (-1: none); ``ranker``: a learned ranker
    (vrec.core.ranker.Ranker) to score with in place of the blend; see the module doc."""
    learned = None
    if ranker is not None and ranker.slots is not None:
        policy = policy.model_copy(update={"new_arrival_slots": ranker.slots})
    if ranker is not None:
        from vrec.core.ranker import features

        cuts = np.cumsum([len(c) for c in inp.items])[:-1]
        learned = np.split(ranker.predict(features(inp, space)), cuts)
    else:  # the blend's parts (the learned ranker's score replaces them)
        ncf, nvis, npref, ntxt = inp.normalised(policy.normalize)
    q = policy.new_arrival_pref
    # the content part's preference share; a user with only one of the signals (e.g. a
    # history too old for the decayed profile) uses that one
    any_pref = inp.has_pref | inp.has_txt
    mu = np.where(~inp.has_profile, 1.0, np.where(~any_pref, 0.0, policy.pref_mix))
    tu = np.where(~inp.has_txt, 0.0, np.where(~inp.has_pref, 1.0, policy.text_mix))
    bu = user_visual_weight(policy.visual_weight, policy.history_shrink, inp.n_hist,
                            inp.in_model, inp.has_profile | any_pref)
    cols: dict[str, list] = {k: [] for k in LIST_COLUMNS}
    # plain ndarray views: np.memmap adds Python work to every indexing call
    emb, new, category, has_vec = (np.asarray(getattr(space, a))
                                   for a in ("emb", "new", "category", "has_vec"))
    trending = open_trending(space)
    for r, uid in enumerate(inp.user_ids):
        cand = inp.items[r]
        if learned is not None:
            blend = slot_key = normalise(learned[r], "zscore")
        else:
            p_r = (1.0 - tu[r]) * npref[r] + tu[r] * ntxt[r]
            c_cf, c_vis = (1.0 - bu[r]) * ncf[r], bu[r] * ((1.0 - mu[r]) * nvis[r] + mu[r] * p_r)
            blend = c_cf + c_vis
            slot_key = (1.0 - q) * ncf[r] + q * p_r
        is_new = new[cand]
        # the candidates' pictures only for the diversity penalty (1.7 MB a user at 10M)
        pick, gain = greedy_pick(blend, emb[cand] if policy.mmr_penalty > 0 else None,
                                 category[cand], is_new,
                                 k=policy.k, slots=policy.new_arrival_slots,
                                 mmr_penalty=policy.mmr_penalty,
                                 max_per_category=policy.max_per_category,
                                 slot_key=slot_key)
        items = cand[pick]
        has_visual = ~(np.isnan(inp.vis[r][pick]) & np.isnan(inp.pref[r][pick])
                       & np.isnan(inp.txt[r][pick]) & np.isnan(inp.last[r][pick]))
        if learned is not None:
            reason = _source_reasons(inp, r, pick, is_new[pick], has_visual)
        else:
            reason = np.where(is_new[pick], R_NEW,
                              np.where((c_vis[pick] > c_cf[pick]) & has_visual, R_SIM, R_CF))
        h = inp.hist[r]
        reason_item = np.full(len(items), -1, dtype=np.int64)
        explain = np.isin(reason, (R_SIM, R_NEW)) & has_vec[items]
        if len(h) and explain.any():
            sims = emb[items[explain]] @ emb[h].T
            reason_item[explain] = h[np.argmax(sims, axis=1)]
        cf_raw, vis_raw = inp.cf[r][pick], inp.vis[r][pick]
        if len(items) < policy.k:
            touched = inp.touched[r] if policy.cold_user_categories else None
            fill = trending_for(policy.k - len(items), set(inp.seen[r].tolist()) | set(items.tolist()),
                                trending, category, touched)
            base = float(gain[-1]) if len(gain) else 0.0
            items = np.concatenate([items, np.asarray(fill, dtype=np.int64)])
            gain = np.concatenate([gain, base - 0.01 * np.arange(1, len(fill) + 1)])
            reason = np.concatenate([reason, np.full(len(fill), R_TREND)])
            reason_item = np.concatenate([reason_item, np.full(len(fill), -1)])
            cf_raw = np.concatenate([cf_raw, np.full(len(fill), np.nan)])
            vis_raw = np.concatenate([vis_raw, np.full(len(fill), np.nan)])
        n = len(items)
        cols["user_id"] += [uid] * n
        cols["rank"] += list(range(1, n + 1))
        cols["item"] += items.tolist()
        cols["score"] += gain.tolist()
        cols["cf_score"] += cf_raw.tolist()
        cols["visual_score"] += vis_raw.tolist()
        cols["reason"] += [REASON_CODES[x] for x in reason]
        cols["reason_item"] += reason_item.tolist()
    return pd.DataFrame(cols)


def _source_reasons(inp: RankInput, r: int, pick: np.ndarray, is_new: np.ndarray,
                    has_visual: np.ndarray) -> np.ndarray:
    """The reason codes of a learned ranker's picks from their strongest source (module
    doc): by rank among the user's candidates, CF against the best content source."""
    def ranks(s):  # normalise(score, "rank")[pick], from the places the features used
        places, m = inp.positions(s)[r]
        return rank_scale(places[pick], m)

    cf = np.where(np.isnan(inp.cf[r][pick]), -np.inf, ranks("cf"))
    content = np.max([np.where(np.isnan(getattr(inp, s)[r][pick]), -np.inf, ranks(s))
                      for s in ("vis", "pref", "txt", "last")], axis=0)
    scored = has_visual | ~np.isnan(inp.cf[r][pick])
    return np.where(is_new, R_NEW, np.where(~scored, R_TREND,
                                            np.where(content > cf, R_SIM, R_CF)))


def lists_by_user(lists: pd.DataFrame, space: ItemSpace) -> dict[str, list[str]]:
    """``{user_id: [item_id, ...]}`` in rank order, from :func:`rank`'s output."""
    ids = space.item_ids[lists["item"].to_numpy()]
    users = lists["user_id"].to_numpy()
    if not len(users):
        return {}
    # rank() writes each user's rows together, in rank order
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return {users[a]: ids[a:b].tolist()
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(users)])}


def to_user_recs(lists: pd.DataFrame, space: ItemSpace, model_version: str) -> pd.DataFrame:
    """:func:`rank`'s output in the published ``user_recs`` shape (item ids, not indices)."""
    ri = lists["reason_item"].to_numpy()
    return pd.DataFrame({
        C.USER_ID: lists["user_id"].astype(str), "rank": lists["rank"].astype(np.int32),
        C.ITEM_ID: space.item_ids[lists["item"].to_numpy()].astype(str),
        "score": lists["score"].astype(float), "cf_score": lists["cf_score"].astype(float),
        "visual_score": lists["visual_score"].astype(float), "reason": lists["reason"],
        "reason_item_id": [str(space.item_ids[i]) if i >= 0 else None for i in ri],
        "model_version": model_version})[S.USER_RECS.names()]

"""The hybrid ranker: CF, visual profile and new arrivals in one list per user.

Everything here is plain numpy over *catalog-indexed* arrays (see :class:`ItemSpace`),
so the nightly build_recs stage (inside Spark tasks) and the blend tuning (on the
driver, on a validation window) run exactly the same code. README "How a list is built"
documents the formulas; in short, for a user ``u`` with history ``H``:

* profile ``p_u`` = L2-normalised sum over ``H`` of ``w_ui · e_i`` (``w_ui`` = the pair's
  interaction weight times recency ``0.5 ** (age_days / profile_half_life_days)``);
  ``visual(u, i) = cos(p_u, e_i)``;
* ``cf(u, i) = x_u · y_i``, where ``y_i`` is the ALS factor of a warm item or, for a new
  arrival (an item with an embedding and at most ``cold_item_max_users`` users), the
  factor predicted from its image by the ridge map (:func:`fit_ridge_map`);
* candidates = CF top-N ∪ visual top-N ∪ new-arrival top-N, seen items excluded;
* each score is normalised over the user's candidates (``zscore``, or ``rank`` =
  ``1 - 2·(r-1)/(n-1)``; a missing score counts as 0) and blended:
  ``s = (1 - b_u) · n_cf + b_u · n_vis`` with
  ``b_u = b + (1 - b) · h0 / (h0 + |H|)`` (``b`` = visual weight, ``h0`` = history
  shrink): short histories lean on the picture; ``b_u = 1`` without CF factors,
  ``0`` without a profile;
* the list is picked greedily: gain = ``s - mmr_penalty · max cos(e_i, picked)``, at most
  ``max_per_category`` items per category, and the last ``new_arrival_slots`` places
  reserved for the best new arrivals. Each pick's gain is its ``score``; the gains of a
  greedy pick never increase, so scores are non-increasing by rank;
* reason: ``new_arrival_visual`` for a new arrival, ``similar_to_history`` when
  ``b_u · n_vis > (1 - b_u) · n_cf`` (with ``reason_item_id`` = the history item most
  similar to it), else ``collaborative``; ``trending`` for fill and cold users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.spark.candidates import topk_blocked

REASON_CODES = (C.REASON_COLLABORATIVE, C.REASON_SIMILAR, C.REASON_NEW_ARRIVAL,
                C.REASON_TRENDING)
R_CF, R_SIM, R_NEW, R_TREND = range(4)


@dataclass(frozen=True)
class ListPolicy:
    """How one list is assembled (the ``recs`` settings the ranker needs)."""

    k: int = 10
    candidates: int = 50
    visual_weight: float = 0.2
    history_shrink: float = 0.0
    normalize: str = "zscore"
    new_arrival_slots: int = 1
    mmr_penalty: float = 0.0
    max_per_category: int = 0
    cold_user_categories: bool = True


@dataclass
class ItemSpace:
    """The catalog as the ranker sees it; row ``i`` of every array is catalog item ``i``.

    ``emb``: L2-normalised image embeddings (zero rows for items without one);
    ``factors``: ALS factors of warm items, predicted factors of new arrivals, zeros
    otherwise; ``warm``: has an ALS factor; ``new``: new arrival (predicted factor);
    ``category``: integer category code (-1 unknown); ``trending``: catalog indices in
    trending order.
    """

    item_ids: np.ndarray
    emb: np.ndarray
    has_vec: np.ndarray
    factors: np.ndarray
    warm: np.ndarray
    new: np.ndarray
    category: np.ndarray
    trending: np.ndarray

    @property
    def n(self) -> int:
        return len(self.item_ids)


@dataclass
class UserBatch:
    """A batch of users: CF factors (zeros and ``in_model`` False when the model lacks
    the user), history CSR of profile weights, seen CSR (excluded), categories touched."""

    user_ids: np.ndarray
    uf: np.ndarray
    in_model: np.ndarray
    hist: sp.csr_matrix
    seen: sp.csr_matrix
    touched: list[np.ndarray] = field(default_factory=list)

    @property
    def n_hist(self) -> np.ndarray:
        return np.diff(self.hist.indptr)


# ---------------------------------------------------------------- building blocks

def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def profiles(hist: sp.csr_matrix, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised visual profiles, has_profile) for each row of a history CSR whose
    values are profile weights; items without an embedding have zero rows in ``emb``."""
    p = np.asarray(hist.astype(np.float32) @ emb, dtype=np.float32)
    ok = np.linalg.norm(p, axis=1) > 0
    return l2_normalise(p), ok


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
    ok = ~np.isnan(x)
    out = np.zeros(len(x), dtype=np.float64)
    m = int(ok.sum())
    if m < 2:
        return out
    v = x[ok]
    if mode == "rank":
        r = np.empty(m)
        r[np.argsort(-v, kind="stable")] = np.arange(m)
        out[ok] = 1.0 - 2.0 * r / (m - 1)
    else:
        sd = v.std()
        out[ok] = (v - v.mean()) / sd if sd > 1e-12 else 0.0
    return out


def greedy_pick(blend: np.ndarray, emb: np.ndarray, category: np.ndarray, is_new: np.ndarray,
                *, k: int, slots: int, mmr_penalty: float, max_per_category: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the candidates, in list order, and their gains (non-increasing).

    gain = blend - mmr_penalty · (max cosine to the items already picked); at most
    ``max_per_category`` per known category (0 = no cap); the last ``slots`` places are
    reserved for candidates flagged ``is_new`` (fewer when fewer exist). When the cap
    leaves nothing to pick the cap is lifted for that place.
    """
    n = len(blend)
    k = min(k, n)
    slots = min(slots, int(is_new.sum()), k)
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
        j = int(np.argmax(g))
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


# ---------------------------------------------------------------- candidates

@dataclass
class Candidates:
    """Per user: candidate catalog indices with raw and normalised scores."""

    items: list[np.ndarray]
    cf: list[np.ndarray]
    vis: list[np.ndarray]
    ncf: list[np.ndarray]
    nvis: list[np.ndarray]
    has_profile: np.ndarray
    profiles: np.ndarray


def _topk_rows(q: np.ndarray, items: np.ndarray, k: int, exclude) -> np.ndarray:
    if len(q) == 0 or items.shape[0] == 0 or k <= 0:
        return np.full((len(q), 0), -1, dtype=np.int64)
    idx, _ = topk_blocked(q, items, min(k, items.shape[0]), exclude=exclude)
    return idx


def candidates(batch: UserBatch, space: ItemSpace, policy: ListPolicy) -> Candidates:
    """The union of CF, visual and new-arrival top-N for each user, with scores."""
    P, has_p = profiles(batch.hist, space.emb)
    N = policy.candidates
    seen = batch.seen.tocsr()
    warm_idx = np.flatnonzero(space.warm)
    new_idx = np.flatnonzero(space.new)
    vec_idx = np.flatnonzero(space.has_vec)
    cf_top = _topk_rows(batch.uf, space.factors[warm_idx], N, seen[:, warm_idx])
    vis_top = _topk_rows(P, space.emb[vec_idx], N, seen[:, vec_idx])
    # new arrivals: through the CF space when the user has factors, else by the picture
    new_q = np.where(batch.in_model[:, None], batch.uf, 0).astype(np.float32)
    new_cf = _topk_rows(new_q, space.factors[new_idx], N, seen[:, new_idx])
    new_vis = _topk_rows(P, space.emb[new_idx], N, seen[:, new_idx])
    out = Candidates([], [], [], [], [], has_p, P)
    for r in range(len(batch.user_ids)):
        parts = []
        if batch.in_model[r]:
            parts += [warm_idx[cf_top[r][cf_top[r] >= 0]], new_idx[new_cf[r][new_cf[r] >= 0]]]
        if has_p[r]:
            parts += [vec_idx[vis_top[r][vis_top[r] >= 0]]]
            if not batch.in_model[r]:
                parts += [new_idx[new_vis[r][new_vis[r] >= 0]]]
        cand = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        cf = (space.factors[cand] @ batch.uf[r]).astype(np.float64) if batch.in_model[r] \
            else np.full(len(cand), np.nan)
        cf[~(space.warm[cand] | space.new[cand])] = np.nan
        vis = (space.emb[cand] @ P[r]).astype(np.float64) if has_p[r] \
            else np.full(len(cand), np.nan)
        vis[~space.has_vec[cand]] = np.nan
        out.items.append(cand)
        out.cf.append(cf)
        out.vis.append(vis)
        out.ncf.append(normalise(cf, policy.normalize))
        out.nvis.append(normalise(vis, policy.normalize))
    return out


# ---------------------------------------------------------------- lists

def assemble(batch: UserBatch, space: ItemSpace, cands: Candidates, policy: ListPolicy
             ) -> pd.DataFrame:
    """Final lists for a batch: columns user_id, rank, item (catalog index), score,
    cf_score, visual_score, reason, reason_item (catalog index or -1)."""
    bu = user_visual_weight(policy.visual_weight, policy.history_shrink, batch.n_hist,
                            batch.in_model, cands.has_profile)
    cols: dict[str, list] = {k: [] for k in ("user_id", "rank", "item", "score", "cf_score",
                                             "visual_score", "reason", "reason_item")}
    hist = batch.hist
    for r, uid in enumerate(batch.user_ids):
        cand = cands.items[r]
        c_cf, c_vis = (1.0 - bu[r]) * cands.ncf[r], bu[r] * cands.nvis[r]
        blend = c_cf + c_vis
        is_new = space.new[cand]
        pick, gain = greedy_pick(blend, space.emb[cand], space.category[cand], is_new,
                                 k=policy.k, slots=policy.new_arrival_slots,
                                 mmr_penalty=policy.mmr_penalty,
                                 max_per_category=policy.max_per_category)
        items = cand[pick]
        reason = np.where(is_new[pick], R_NEW,
                          np.where((c_vis[pick] > c_cf[pick]) & ~np.isnan(cands.vis[r][pick]),
                                   R_SIM, R_CF))
        h = hist.indices[hist.indptr[r]:hist.indptr[r + 1]]
        h = h[space.has_vec[h]]
        reason_item = np.full(len(items), -1, dtype=np.int64)
        explain = (reason != R_CF) & space.has_vec[items]
        if len(h) and explain.any():
            sims = space.emb[items[explain]] @ space.emb[h].T
            reason_item[explain] = h[np.argmax(sims, axis=1)]
        cf_raw, vis_raw = cands.cf[r][pick], cands.vis[r][pick]
        if len(items) < policy.k:
            seen = set(batch.seen.indices[batch.seen.indptr[r]:batch.seen.indptr[r + 1]].tolist())
            touched = batch.touched[r] if batch.touched and policy.cold_user_categories else None
            fill = trending_for(policy.k - len(items), seen | set(items.tolist()),
                                space.trending, space.category, touched)
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


def rank_batch(batch: UserBatch, space: ItemSpace, policy: ListPolicy) -> pd.DataFrame:
    """Candidates, blend and list assembly for one batch (see the module docstring)."""
    return assemble(batch, space, candidates(batch, space, policy), policy)


# ---------------------------------------------------------------- cold start: image -> factors

def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an intercept: (W, b) minimising |xW + b - y|² + lam·|W|²."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    if x.shape[0] < x.shape[1]:  # dual form: n x n system
        a = np.linalg.solve(xc @ xc.T + lam * np.eye(len(xc)), yc)
        w = xc.T @ a
    else:
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)
    return w, my - mx @ w


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = pd.Series(allv).rank(method="average").to_numpy()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def per_user_auc(user_factors: np.ndarray, item_vecs: np.ndarray, liked: sp.csr_matrix,
                 max_users: int = 2000, seed: int = 0) -> float:
    """Mean over users of the AUC of ranking a set of items by ``x_u · y_i``: the items
    the user interacted with (``liked``: users x these items) against the others. This
    is the ranking a cold-start path has to get right."""
    counts = np.diff(liked.indptr)
    rows = np.flatnonzero((counts > 0) & (counts < liked.shape[1]))
    if len(rows) > max_users:
        rows = np.random.default_rng(seed).choice(rows, max_users, replace=False)
    if len(rows) == 0:
        return float("nan")
    scores = np.asarray(user_factors[rows], dtype=np.float64) @ np.asarray(item_vecs).T
    vals = []
    for r, s in zip(rows, scores):
        mask = np.zeros(liked.shape[1], dtype=bool)
        mask[liked.indices[liked.indptr[r]:liked.indptr[r + 1]]] = True
        vals.append(auc(s[mask], s[~mask]))
    return float(np.mean(vals))


@dataclass
class RidgeMap:
    """Image embedding -> ALS item factor, fit on warm items."""

    w: np.ndarray
    b: np.ndarray
    lam: float
    quality: dict

    def predict(self, emb: np.ndarray) -> np.ndarray:
        return (np.asarray(emb, dtype=np.float64) @ self.w + self.b).astype(np.float32)


def fit_ridge_map(emb: np.ndarray, factors: np.ndarray, user_factors: np.ndarray,
                  liked: sp.csr_matrix, *, lams=(1.0, 10.0, 100.0, 1000.0),
                  holdout: float = 0.2, seed: int = 0) -> RidgeMap | None:
    """Fit the content-to-factor map on warm items, choosing lambda on a held-out share.

    ``liked`` is users x these items (interactions). Lambda is chosen by the per-user
    AUC of ranking the held-out items with their predicted factors (what cold start
    needs); quality also reports that AUC with the true ALS factors (the ceiling), the
    R² of the predicted factors and their mean cosine to the true ones. Returns None
    when fewer than 20 warm items with an image are given.
    """
    n = len(emb)
    if n < 20:
        return None
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_te = max(1, int(round(holdout * n)))
    te, tr = perm[:n_te], perm[n_te:]
    y_te = np.asarray(factors[te], dtype=np.float64)
    liked_te = sp.csr_matrix(liked)[:, te].tocsr()
    best = None
    for lam in lams:
        w, b = fit_ridge(emb[tr], factors[tr], lam)
        pred = emb[te] @ w + b
        a = per_user_auc(user_factors, pred, liked_te, seed=seed)
        if best is None or a > best[0]:
            best = (a, lam, pred)
    a, lam, pred = best
    ss_tot = ((y_te - y_te.mean(axis=0)) ** 2).sum()
    r2 = 1.0 - ((pred - y_te) ** 2).sum() / ss_tot if ss_tot > 0 else 0.0
    cos = float(np.mean((l2_normalise(pred) * l2_normalise(y_te)).sum(axis=1)))
    quality = {"warm_items": int(n), "heldout_items": int(n_te), "lambda": float(lam),
               "r2": round(float(r2), 4), "cosine": round(cos, 4),
               "auc_mapped": round(float(a), 4),
               "auc_true_factors": round(per_user_auc(user_factors, y_te, liked_te, seed=seed), 4)}
    w, b = fit_ridge(emb, factors, lam)
    return RidgeMap(w, b, lam, quality)

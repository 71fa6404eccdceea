"""Cold start: predict an item's CF factor from its image (a ridge map fit on warm
items) and measure how well a set of factors ranks items for their users (per-user AUC).

A new arrival has an embedding but no (or too few) interactions; the ranker scores it
with ``x_u · W(e_i)``, where ``W`` is this map. The map is trusted with list places only
when its held-out AUC reaches ``recs.new_arrival_min_auc`` (vrec.core.itemspace).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


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
    # twice the Mann-Whitney U, counted per negative against the sorted positives (few):
    # 2·#(p > n) + #(p = n), an exact integer; the same value as the rank-sum form
    sp_ = np.sort(pos)
    below = np.searchsorted(sp_, neg, side="left")
    upto = np.searchsorted(sp_, neg, side="right")
    u2 = int((2 * len(pos) - below - upto).sum())
    return float((u2 / 2) / (len(pos) * len(neg)))


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

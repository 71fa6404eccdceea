"""Candidate retrieval: for each user, the union of three top-N lists, with raw scores.

* CF: ``x_u · y_i`` over warm items (users the model knows);
* visual: ``cos(p_u, e_i)`` over items with an image, ``p_u`` = the L2-normalised sum
  of the history's embeddings weighted by the profile weights (vrec.core.users);
* new arrivals: through the CF space (``x_u · W(e_i)``, the cold-start map) for users with
  factors, by the picture otherwise.

Seen items are excluded with the exact top-k kernel (vrec.core.topk). The result,
:class:`RankInput`, is everything the ranker needs for those users; the candidates stage
stores it (one row per user) and build_recs ranks it; the tuning and the evaluation call
:func:`retrieve` and :func:`vrec.core.ranking.rank` in memory on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.core.coldstart import l2_normalise
from vrec.core.itemspace import ItemSpace
from vrec.core.topk import topk_blocked
from vrec.core.users import UserBatch

# the stored form: one row per user, arrays of catalog indices and scores
FRAME_COLUMNS = (C.USER_ID, "in_model", "has_profile", "n_hist", "hist", "seen", "touched",
                 "items", "cf", "vis")
SPARK_SCHEMA = ("user_id string, in_model boolean, has_profile boolean, n_hist int, "
                "hist array<int>, seen array<int>, touched array<int>, items array<int>, "
                "cf array<double>, vis array<double>")


@dataclass
class RankInput:
    """Per user: whether the model knows them, whether they have a visual profile, the
    number of history items, history items with an image (for reasons), seen items and
    touched categories (for the trending fill), and the candidates with raw CF and
    visual scores (NaN = no score). Indices are catalog rows of the run's item space."""

    user_ids: np.ndarray
    in_model: np.ndarray
    has_profile: np.ndarray
    n_hist: np.ndarray
    hist: list[np.ndarray]
    seen: list[np.ndarray]
    touched: list[np.ndarray]
    items: list[np.ndarray]
    cf: list[np.ndarray]
    vis: list[np.ndarray]

    def to_frame(self) -> pd.DataFrame:
        """The stored form (:data:`FRAME_COLUMNS`)."""
        return pd.DataFrame({
            C.USER_ID: self.user_ids.astype(str), "in_model": self.in_model.astype(bool),
            "has_profile": self.has_profile.astype(bool), "n_hist": self.n_hist.astype(np.int32),
            "hist": [a.astype(np.int32) for a in self.hist],
            "seen": [a.astype(np.int32) for a in self.seen],
            "touched": [a.astype(np.int32) for a in self.touched],
            "items": [a.astype(np.int32) for a in self.items],
            "cf": [a.astype(np.float64) for a in self.cf],
            "vis": [a.astype(np.float64) for a in self.vis]})

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> RankInput:
        """Read the stored form back (nulls in score arrays become NaN)."""
        def ints(col):
            return [np.asarray(v if v is not None else [], dtype=np.int64) for v in df[col]]

        def floats(col):
            return [np.asarray([np.nan if x is None else x for x in (v if v is not None else [])],
                               dtype=np.float64) for v in df[col]]

        return cls(df[C.USER_ID].astype(str).to_numpy(), df["in_model"].to_numpy(dtype=bool),
                   df["has_profile"].to_numpy(dtype=bool), df["n_hist"].to_numpy(dtype=np.int64),
                   ints("hist"), ints("seen"), ints("touched"), ints("items"), floats("cf"),
                   floats("vis"))


def profiles(hist, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised visual profiles, has_profile) for each row of a history CSR whose
    values are profile weights; items without an embedding have zero rows in ``emb``."""
    p = np.asarray(hist.astype(np.float32) @ emb, dtype=np.float32)
    ok = np.linalg.norm(p, axis=1) > 0
    return l2_normalise(p), ok


def _topk_rows(q: np.ndarray, items: np.ndarray, k: int, exclude) -> np.ndarray:
    if len(q) == 0 or items.shape[0] == 0 or k <= 0:
        return np.full((len(q), 0), -1, dtype=np.int64)
    idx, _ = topk_blocked(q, items, min(k, items.shape[0]), exclude=exclude)
    return idx


def retrieve(batch: UserBatch, space: ItemSpace, n: int) -> RankInput:
    """The CF, visual and new-arrival top-``n`` of each user (seen items excluded), their
    union, and the raw scores of every candidate (see the module doc)."""
    P, has_p = profiles(batch.hist, space.emb)
    seen = batch.seen.tocsr()
    warm_idx = np.flatnonzero(space.warm)
    new_idx = np.flatnonzero(space.new)
    vec_idx = np.flatnonzero(space.has_vec)
    cf_top = _topk_rows(batch.uf, space.factors[warm_idx], n, seen[:, warm_idx])
    vis_top = _topk_rows(P, space.emb[vec_idx], n, seen[:, vec_idx])
    # new arrivals: through the CF space when the user has factors, else by the picture
    new_q = np.where(batch.in_model[:, None], batch.uf, 0).astype(np.float32)
    new_cf = _topk_rows(new_q, space.factors[new_idx], n, seen[:, new_idx])
    new_vis = _topk_rows(P, space.emb[new_idx], n, seen[:, new_idx])
    hist = batch.hist
    out = RankInput(batch.user_ids, batch.in_model, has_p, batch.n_hist, [], [],
                    list(batch.touched) if batch.touched else
                    [np.zeros(0, np.int64) for _ in batch.user_ids], [], [], [])
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
        h = hist.indices[hist.indptr[r]:hist.indptr[r + 1]]
        out.hist.append(np.sort(h[space.has_vec[h]]))
        out.seen.append(np.sort(seen.indices[seen.indptr[r]:seen.indptr[r + 1]]))
        out.items.append(cand)
        out.cf.append(cf)
        out.vis.append(vis)
    return out

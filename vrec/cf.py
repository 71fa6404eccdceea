"""train_cf: implicit-feedback ALS with the ``implicit`` library.

Confidence for a (user, item) pair is ``1 + alpha * weight`` where ``weight`` is the
summed event weight from build_interactions; implicit receives these confidences directly
(its own ``alpha`` stays 1). BLAS threads are limited to one around the fit only
(implicit runs its own thread pool; DESIGN trap 4).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import ALSSettings


@dataclass
class CFModel:
    """User and item factors with their id mappings."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    params: dict
    version: str

    def save(self, folder: str | Path) -> Path:
        """Write ``factors.npz`` and ``model.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "factors.npz", user_ids=self.user_ids.astype(str),
                 item_ids=self.item_ids.astype(str), user_factors=self.user_factors,
                 item_factors=self.item_factors)
        (folder / "model.json").write_text(json.dumps(
            {"version": self.version, "params": self.params,
             "n_users": int(len(self.user_ids)), "n_items": int(len(self.item_ids))}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CFModel:
        """Load a model written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        z = np.load(folder / "factors.npz")
        return cls(z["user_ids"], z["item_ids"], z["user_factors"], z["item_factors"],
                   meta["params"], meta["version"])


def build_matrix(interactions: pd.DataFrame, alpha: float
                 ) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """CSR users x items of confidences ``1 + alpha * weight`` (pairs with weight > 0)."""
    pos = interactions[interactions["weight"] > 0]
    users = pd.Categorical(pos[C.USER_ID])
    items = pd.Categorical(pos[C.ITEM_ID])
    conf = (1.0 + alpha * pos["weight"].to_numpy(dtype=np.float64)).astype(np.float32)
    mat = sp.csr_matrix((conf, (users.codes, items.codes)),
                        shape=(len(users.categories), len(items.categories)))
    return np.asarray(users.categories, dtype=object), np.asarray(items.categories, dtype=object), mat


def train_als(interactions: pd.DataFrame, params: ALSSettings, *, ds: str) -> CFModel:
    """Fit implicit ALS on the run's interactions; returns factors and ids."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_ids, item_ids, mat = build_matrix(interactions, params.alpha)
    if mat.nnz == 0:
        raise ValueError(f"no positive interactions to train on for ds={ds}")
    model = AlternatingLeastSquares(
        factors=params.factors, regularization=params.regularization, alpha=1.0,
        iterations=params.iterations, random_state=params.random_state,
        calculate_training_loss=False)
    with threadpool_limits(1, "blas"):
        model.fit(mat, show_progress=False)
    p = params.model_dump()
    digest = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]
    return CFModel(user_ids, item_ids, np.asarray(model.user_factors, dtype=np.float32),
                   np.asarray(model.item_factors, dtype=np.float32), p,
                   version=f"als-{ds}-{digest}")

"""The learned visual preference model: what each user likes in image space.

Items are represented by their CNN embeddings reduced to ``d`` dimensions by a PCA fit on
the catalog (:func:`fit_pca`; optionally whitened). Each user gets one preference vector
``x_u`` fit to the user's confidence-weighted implicit feedback with the item features
``z_i`` held fixed: the implicit-feedback weighted least squares of ALS, one half-step,

    min_x  Σ_i c_ui (p_ui - x · z_i)² + λ |x|²,   p_ui = 1 for the user's items, 0 else,
           c_ui = 1 + alpha · w_ui (w: the pair weight; 1 for items not interacted with)

whose closed form is ``x_u = (ZᵀZ + Z_Hᵀ (C_H - I) Z_H + λI)⁻¹ Z_Hᵀ c_H``; ``ZᵀZ`` over all
items with a picture is computed once (:func:`gram`), so a user costs one d × d solve.
``x_u · z_i`` then scores every item with a usable picture, new arrivals included.

Unlike the mean profile (a single direction, the weighted mean of the history's
embeddings), the fit also uses the items the user did not pick, so it learns which
directions separate the user's choices from the rest of the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Pca:
    """A PCA of image embeddings: the mean, the components (d × D) and, when whitened,
    each component's scale."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    explained: float

    def project(self, emb: np.ndarray) -> np.ndarray:
        """(n × d) float32 features of (n × D) embeddings."""
        z = (np.asarray(emb, dtype=np.float32) - self.mean) @ self.components.T
        return (z / self.scale).astype(np.float32)


def fit_pca(emb: np.ndarray, d: int, *, whiten: bool = False) -> Pca:
    """PCA of the rows of ``emb`` to ``d`` dimensions (fewer when there are fewer rows or
    columns); ``explained`` is the share of variance kept."""
    x = np.asarray(emb, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(-w)[:max(1, min(d, len(x) - 1, x.shape[1]))]
    w = np.maximum(w[order], 0.0)
    total = float(np.clip(np.linalg.eigvalsh(cov), 0, None).sum()) or 1.0
    scale = np.sqrt(w + 1e-12) if whiten else np.ones(len(order))
    return Pca(mean.astype(np.float32), v[:, order].T.astype(np.float32),
               scale.astype(np.float32), round(float(w.sum() / total), 4))


@dataclass
class ImageFeatures:
    """An item's content features, looked up by item id: the PCA features of its image
    and/or its text features (vrec.core.text), side by side; the last ``text_dims``
    columns are the text block. Items with neither are absent."""

    ids: np.ndarray
    z: np.ndarray
    text_dims: int = 0

    def text_only(self) -> ImageFeatures | None:
        """The text block alone, for the items with text (None without text)."""
        if not self.text_dims:
            return None
        z = self.z[:, -self.text_dims:]
        has = np.abs(z).sum(axis=1) > 0
        return ImageFeatures(self.ids[has], np.ascontiguousarray(z[has]), self.text_dims)

    def lookup(self, item_ids) -> tuple[np.ndarray, np.ndarray]:
        """(features aligned with ``item_ids``, zero rows without an image; has image)."""
        pos = {str(i): j for j, i in enumerate(self.ids)}
        idx = np.asarray([pos.get(str(i), -1) for i in item_ids], dtype=np.int64)
        out = np.zeros((len(idx), self.z.shape[1]), dtype=np.float32)
        has = idx >= 0
        out[has] = self.z[idx[has]]
        return out, has


def image_features(vectors, d: int, *, whiten: bool = False) -> ImageFeatures | None:
    """:class:`ImageFeatures` of a vectors frame (item_id, embedding: L2-normalised), by a
    PCA to ``d`` dimensions; None with fewer than two images."""
    if len(vectors) < 2:
        return None
    emb = np.stack(vectors["embedding"].to_numpy()).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    pca = fit_pca(emb, d, whiten=whiten)
    return ImageFeatures(vectors["item_id"].astype(str).to_numpy(), pca.project(emb))


def save_features(features: ImageFeatures | None, path) -> None:
    """Write content features (or that there are none) to one ``.npz`` file."""
    with open(path, "wb") as f:
        if features is None:
            np.savez(f, none=np.ones(1, dtype=bool))
        else:
            np.savez(f, ids=np.asarray(features.ids).astype(str), z=features.z,
                     text_dims=np.asarray([features.text_dims], dtype=np.int64))


def load_features(path) -> ImageFeatures | None:
    """What :func:`save_features` wrote: the same ids, features and text block."""
    with np.load(path, allow_pickle=False) as f:
        if "none" in f:
            return None
        return ImageFeatures(f["ids"], f["z"], int(f["text_dims"][0]))


def _unit_scale(z: np.ndarray, has: np.ndarray) -> np.ndarray:
    """``z`` scaled so that its rows in ``has`` have a mean squared norm of 1."""
    ms = float((z[has] ** 2).sum(axis=1).mean()) if has.any() else 0.0
    return z / np.sqrt(ms) if ms > 0 else z


def content_features(vectors, catalog, visual, content, *, seed: int = 0
                     ) -> ImageFeatures | None:
    """The fused content features of the catalog's items (``content.features``: image,
    text or both; see vrec.config.ContentSettings): the image block is the PCA of the
    embeddings (:func:`image_features`), the text block the LSA of title, category and
    description (vrec.core.text); each scaled to a mean squared row norm of 1, the text
    block then by ``content.text_weight``. None when no item has either."""
    from vrec.core.text import text_vectors

    img = image_features(vectors, visual.dim, whiten=visual.whiten) \
        if content.features in ("image", "both") else None
    if content.features == "image":
        return img
    ids, t, has_t = text_vectors(catalog, content.text_dim, seed=seed)
    if not has_t.any():
        return img
    t = _unit_scale(t, has_t) * content.text_weight
    if img is None:
        return ImageFeatures(ids[has_t], t[has_t], t.shape[1])
    zi, has_i = img.lookup(ids)
    zi = _unit_scale(zi, has_i)
    keep = has_i | has_t
    z = np.concatenate([zi, t], axis=1)[keep].astype(np.float32)
    return ImageFeatures(ids[keep], z, t.shape[1])


def gram(z: np.ndarray) -> np.ndarray:
    """ZᵀZ over the items with a picture (the rows of ``z``), float64."""
    z = np.asarray(z, dtype=np.float64)
    return z.T @ z


def fit_preferences(weights: sp.csr_matrix, z: np.ndarray, zz: np.ndarray, *,
                    regularization: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, has): each row's preference vector (float32; zeros without history) and
    whether it has one. ``weights`` is users × catalog items, values = pair weights of
    the users' history (weight > 0); ``z`` the catalog's features (zero rows for items
    without a picture, which then carry no information); ``zz`` = :func:`gram` of the
    rows with a picture."""
    from vrec.core.cf import half_step

    n = weights.shape[0]
    # a history with at least one picture: any non-zero feature among its items
    item_has = (np.asarray(z)[weights.indices] != 0).any(axis=1)
    has = np.bincount(np.repeat(np.arange(n), np.diff(weights.indptr))[item_has],
                      minlength=n) > 0
    conf = weights.tocsr(copy=True).astype(np.float64)
    conf.data = 1.0 + alpha * conf.data
    x = half_step(z, conf, regularization, gram=zz, woodbury=True)
    x[~has] = 0.0
    return x, has

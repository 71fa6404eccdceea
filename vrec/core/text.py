"""Item text as vectors, offline and without a download (docs/ranking.md, "Content: images and text").

An item's text is its title, its category and its optional description. It becomes a
vector in three steps, all plain numpy/scipy:

1. **Hashed n-grams**: lower-cased word unigrams and bigrams and character 3- to
   5-grams within words (so "T-Shirts" and "Tshirt" share most of their grams), each
   hashed with CRC-32 into ``2**18`` buckets (stable across processes and machines).
2. **TF-IDF**: sublinear term frequency ``1 + log(tf)``, smoothed idf
   ``log((1 + n) / (1 + df)) + 1``, each row L2-normalised (the classic weighting).
   Grams found in one item only are dropped, and so are numbers (product codes).
3. **Truncated SVD** to ``dim`` dimensions (latent semantic analysis), by a seeded
   randomized range finder with power iterations (Halko et al. 2011): deterministic
   for a given catalog and seed.

The rows of items without any text are zeros.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C

N_BUCKETS = 2 ** 18
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def item_text(catalog: pd.DataFrame) -> pd.Series:
    """Title, category and description (where present) joined, per catalog row."""
    parts = [catalog[c].fillna("").astype(str) for c in (C.TITLE, C.CATEGORY, C.DESCRIPTION)
             if c in catalog]
    if not parts:
        return pd.Series([""] * len(catalog), index=catalog.index)
    out = parts[0]
    for p in parts[1:]:
        out = out + " " + p
    return out.str.strip()


def grams(text: str) -> list[str]:
    """The hashed features of one text: word unigrams and bigrams, and character 3- to
    5-grams of each word padded with spaces. Numbers (product codes, sizes) are left out:
    they name no taste."""
    words = [w.lower() for w in _WORD.findall(text) if not w.isdigit()]
    out = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    for w in words:
        p = f" {w} "
        for n in (3, 4, 5):
            out += [f"c:{p[i:i + n]}" for i in range(max(0, len(p) - n + 1))]
    return out


def tfidf(texts: list[str], n_buckets: int = N_BUCKETS) -> sp.csr_matrix:
    """Rows = texts, columns = hashed grams; sublinear tf, smoothed idf, L2 rows."""
    indptr, indices, data = [0], [], []
    for t in texts:
        counts: dict[int, int] = {}
        for g in grams(t):
            h = zlib.crc32(g.encode("utf-8")) % n_buckets
            counts[h] = counts.get(h, 0) + 1
        indices += counts.keys()
        data += counts.values()
        indptr.append(len(indices))
    x = sp.csr_matrix((np.asarray(data, np.float64), np.asarray(indices, np.int64),
                       np.asarray(indptr, np.int64)), shape=(len(texts), n_buckets))
    x.sum_duplicates()
    x.data = 1.0 + np.log(x.data)
    df = np.bincount(x.indices, minlength=n_buckets)
    x.data[df[x.indices] < 2] = 0.0  # a gram of one item alone relates it to nothing
    x.eliminate_zeros()
    idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
    x = x.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x


def truncated_svd(x: sp.csr_matrix, dim: int, *, seed: int = 0, n_iter: int = 4) -> np.ndarray:
    """``U·S`` of the rank-``dim`` truncated SVD of ``x`` (rows × dim), by a randomized
    range finder with ``n_iter`` power iterations, on the columns ``x`` uses (hashing
    leaves most buckets empty); each column's sign is fixed so that its largest entry is
    positive (deterministic output)."""
    x = sp.csr_matrix(x)
    used = np.unique(x.indices)
    x = sp.csr_matrix((x.data, np.searchsorted(used, x.indices), x.indptr),
                      shape=(x.shape[0], len(used)))
    n, m = x.shape
    k = max(1, min(dim, n - 1, m - 1)) if n > 1 and m > 1 else 1
    rng = np.random.default_rng(seed)
    q = np.asarray(x @ rng.standard_normal((m, k + 10)))
    for _ in range(n_iter):  # orthonormalised on the (small) row side only
        q, _ = np.linalg.qr(q)
        q = np.asarray(x @ np.asarray(x.T @ q))
    q, _ = np.linalg.qr(q)
    b = np.asarray(x.T @ q)  # m × (k + 10): B = Qᵀx, held transposed
    w, v = np.linalg.eigh(b.T @ b)  # BBᵀ = V S² Vᵀ
    order = np.argsort(-w)[:k]
    u = (q @ v[:, order]) * np.sqrt(np.maximum(w[order], 0.0))
    flip = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    return (u * np.where(flip == 0, 1.0, flip)).astype(np.float32)


def text_vectors(catalog: pd.DataFrame, dim: int, *, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item ids, ``dim``-dimensional LSA vectors, has text) of a catalog's rows."""
    ids = catalog[C.ITEM_ID].astype(str).to_numpy()
    texts = item_text(catalog).tolist()
    has = np.asarray([bool(t) for t in texts])
    z = np.zeros((len(ids), dim), dtype=np.float32)
    if has.sum() >= 2:
        v = truncated_svd(tfidf([t for t, h in zip(texts, has) if h]), dim, seed=seed)
        z[np.flatnonzero(has), :v.shape[1]] = v
    return ids, z, has

"""Collaborative filtering: the model (user and item factors with their id mappings) and
implicit's ALS fit on a confidence matrix. The engine factory that picks implicit or
Spark MLlib for a run, and prepares the pairs, is ``vrec.spark.cf.fit_cf``.

Two engines produce the same :class:`CFModel` (user and item factors, id mappings,
parameters, version), which the candidates stage consumes:

* ``implicit`` (default): Spark filters and reweights the pairs, the driver assembles a
  users x items CSR of confidences and fits ``implicit``'s ALS (CPU, or CUDA when present
  and ``cf.gpu`` allows). BLAS threads are limited to one around the fit only: implicit
  runs its own thread pool and its ALS is much slower when OpenBLAS runs one too, while
  numpy's products elsewhere want every core.
* ``spark_mllib``: ``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` on the same
  weighted pairs, for data beyond one machine.

Confidence for a pair is ``1 + alpha * w``, where ``w`` is the pair weight from
build_interactions, optionally reweighted by BM25 or TF-IDF (``implicit``'s formulas,
rows = items, columns = users, as in implicit's lastfm recipe). Both engines see the same
``w`` and ``alpha``: implicit receives the confidences directly (its own alpha stays 1);
MLlib applies ``1 + alpha * w`` itself. One difference is definitional: MLlib scales the
regularization by each user's / item's number of ratings (ALS-WR), implicit does not, so
the same ``regularization`` is a stronger penalty under MLlib.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import CFSettings

MODEL_ARRAYS = ("user_ids", "item_ids", "user_factors", "item_factors")


@dataclass
class CFModel:
    """User and item factors with their id mappings.

    Saved as one ``.npy`` file per array plus ``model.json`` (version, parameters, sizes),
    so scoring tasks can memory-map the factors instead of receiving them by broadcast.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    params: dict
    version: str

    def save(self, folder: str | Path) -> Path:
        """Write ``<array>.npy`` files and ``model.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("*.npy"), folder / "model.json"]:  # no earlier model's files
            old.unlink(missing_ok=True)
        np.save(folder / "user_ids.npy", self.user_ids.astype(str))
        np.save(folder / "item_ids.npy", self.item_ids.astype(str))
        np.save(folder / "user_factors.npy", np.ascontiguousarray(self.user_factors, dtype=np.float32))
        np.save(folder / "item_factors.npy", np.ascontiguousarray(self.item_factors, dtype=np.float32))
        (folder / "model.json").write_text(json.dumps(
            {"version": self.version, "params": self.params, "factors": int(self.item_factors.shape[1]),
             "n_users": int(len(self.user_ids)), "n_items": int(len(self.item_ids))}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = False) -> CFModel:
        """Load a model written by :meth:`save` (``mmap``: map the arrays, read lazily)."""
        folder = Path(folder)
        if not (folder / "model.json").is_file():
            raise FileNotFoundError(f"no CF model in {folder} (model.json missing)")
        meta = json.loads((folder / "model.json").read_text())
        arrays = [np.load(folder / f"{a}.npy", mmap_mode="r" if mmap else None) for a in MODEL_ARRAYS]
        return cls(*arrays, meta["params"], meta["version"])


# ---------------------------------------------------------------- training pairs

def build_matrix(interactions: pd.DataFrame, alpha: float
                 ) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """CSR users x items of confidences ``1 + alpha * weight`` (pairs with weight > 0).

    Users and items are indexed in sorted id order (the model's id mappings). Within
    :func:`sharing_plain_fits` the ids' codes of one pairs frame are found once and kept
    for its other fits (they do not depend on ``alpha``).
    """
    user_ids, item_ids, u, i, weight, indptr = _pair_codes(interactions)
    conf = (1.0 + alpha * weight).astype(np.float32)
    shape = (len(user_ids), len(item_ids))
    if indptr is not None:
        mat = sp.csr_matrix((conf, i, indptr), shape=shape)
    else:
        mat = sp.csr_matrix((conf, (u, i)), shape=shape)
        mat.sum_duplicates()
    return user_ids, item_ids, mat


def _pair_codes(interactions: pd.DataFrame) -> tuple:
    """(user ids, item ids, user codes, item codes, weights, CSR row pointer or None) of
    the pairs with weight > 0 (:func:`build_matrix`); the row pointer when the rows come
    sorted by (user, item) and unique, as build_interactions writes them (no sort).
    Held for the very same frame within :func:`sharing_plain_fits`: at 10M, finding the
    codes of the tuning window's 6.3M pairs took about 2 s of each of its fits."""
    held = _PAIR_CODES.get()
    got = held.get(interactions, "pair codes") if held is not None else None
    if got is not None:
        return got
    w = interactions["weight"].to_numpy(dtype=np.float64)
    pos = interactions if (w > 0).all() else interactions[w > 0]
    (user_ids, u), (item_ids, i) = (_sorted_codes(pos[c]) for c in (C.USER_ID, C.ITEM_ID))
    i = i.astype(np.int32)
    pair = u * len(item_ids) + i
    indptr = None
    if len(pair) and (np.diff(pair) > 0).all():
        indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=len(user_ids)))])
    out = (user_ids, item_ids, u, i, pos["weight"].to_numpy(dtype=np.float64), indptr)
    if held is not None:
        held.offer(interactions, "pair codes", out)
    return out


def _sorted_codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids as an object array, int64 codes into them), as fresh
    writable arrays (implicit rejects read-only buffers). Categoricals are recoded with a
    bincount over their codes, not a sort of every row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        cats = np.asarray(col.cat.categories, dtype=object)
        used = np.flatnonzero(np.bincount(codes, minlength=len(cats)) > 0)
        order = np.argsort(cats[used].astype(str), kind="stable")
        remap = np.full(len(cats), -1, dtype=np.int64)
        remap[used[order]] = np.arange(len(used))
        return cats[used[order]].astype(str).astype(object), remap[codes]
    cat = pd.Categorical(col.astype(str))
    return np.asarray(cat.categories, dtype=object), np.array(cat.codes, dtype=np.int64)


# ---------------------------------------------------------------- engines

def implicit_gpu():
    """``implicit.gpu``, imported after torch. implicit's CUDA module needs cuBLAS from the
    ``nvidia-*`` wheels but has no path to them; torch loads them process-wide when it is
    imported. Imported first, implicit silently disables its GPU support for the life of
    the process ("libcublas.so.13: cannot open shared object file")."""
    import importlib

    import torch  # noqa: F401  (for its CUDA libraries; see above)

    return importlib.import_module("implicit.gpu")  # after torch, whatever the import sorter says


def nvidia_device_visible() -> bool:
    """Whether an NVIDIA GPU may be visible (its driver's device node or proc entry, and
    ``CUDA_VISIBLE_DEVICES`` not empty): a cheap look before importing torch and
    implicit's CUDA module, which costs about 2 s of every CPU-only fit."""
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def use_gpu(setting: str) -> bool:
    """Whether implicit should fit on CUDA: ``auto`` when available, ``on`` requires it
    (the ``gpu`` extra installs implicit's CUDA dependencies: docs/ranking.md)."""
    if setting == "off" or (setting == "auto" and not nvidia_device_visible()):
        return False
    gpu = implicit_gpu()
    if setting == "on" and not gpu.HAS_CUDA:
        raise RuntimeError("cf.gpu is 'on' but implicit's CUDA support is missing (pip install "
                           "-e '.[gpu]') or no GPU is visible; set cf.gpu to 'auto' or 'off'")
    return setting == "on" or (setting == "auto" and gpu.HAS_CUDA)


_ONE_FIT = threading.Lock()


def fit_implicit(mat: sp.csr_matrix, cf: CFSettings) -> tuple[np.ndarray, np.ndarray, str]:
    """Fit implicit ALS on a users x items confidence CSR; (user_f, item_f, device). One
    fit at a time in a process (each runs on ``cf.num_threads``, every core by default):
    train_cf fits the night's model beside the blend tuning, which may fit too."""
    from threadpoolctl import threadpool_limits

    gpu = use_gpu(cf.gpu)  # before implicit.als, which imports implicit.gpu
    from implicit.als import AlternatingLeastSquares

    # implicit checks the BLAS pool when constructed
    with _ONE_FIT, threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=cf.factors, regularization=cf.regularization, alpha=1.0,
            iterations=cf.iterations, random_state=cf.random_state, use_gpu=gpu,
            use_cg=cf.conjugate_gradient, num_threads=cf.num_threads,
            calculate_training_loss=False)
        model.fit(mat, show_progress=False)
    if gpu:
        model = model.to_cpu()
    return (np.asarray(model.user_factors, dtype=np.float32),
            np.asarray(model.item_factors, dtype=np.float32), "cuda" if gpu else "cpu")


# ---------------------------------------------------------------- image prior (VBPR-style)

class HeldFit:
    """One fit held for reuse: the pairs frame it was of (the frame itself, not an equal
    copy), a key of its settings, and any other inputs that must be the very same objects
    (the image features). Fits are deterministic (``cf.random_state``), so a held one is
    the one a new fit would give. vrec.stages.common.WindowFit holds the tunings'
    window model this way, and :func:`sharing_plain_fits` the plain ALS fit that the
    tuning's image-prior points share."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Let the held fit go."""
        self.pairs: object = None
        self.key: str | None = None
        self.value: object = None
        self.same: tuple = ()

    def offer(self, pairs: object, key: str, value: object, *same: object) -> None:
        """Hold ``value``, of ``pairs`` with settings ``key`` and inputs ``same`` (in
        place of the one held)."""
        self.pairs, self.key, self.value, self.same = pairs, key, value, same

    def get(self, pairs: object, key: str, *same: object):
        """The held value when it was of these very pairs and inputs with this key, else
        None."""
        if self.value is not None and pairs is self.pairs and key == self.key \
                and len(same) == len(self.same) \
                and all(a is b for a, b in zip(same, self.same, strict=True)):
            return self.value
        return None


def plain_fit_key(cf: CFSettings) -> str:
    """What a plain ALS fit depends on among the settings: all but the image prior's
    strength, which only the refinement after it uses (:func:`refine_with_images`)."""
    return cf.model_dump_json(exclude={"visual_prior"})


_PLAIN_FITS: ContextVar[HeldFit | None] = ContextVar("vrec_plain_fits", default=None)
_PAIR_CODES: ContextVar[HeldFit | None] = ContextVar("vrec_pair_codes", default=None)


@contextmanager
def sharing_plain_fits() -> Iterator[HeldFit]:
    """Within: fits of one pairs frame that differ only in the image prior's strength
    share their plain ALS fit (a :class:`HeldFit` keyed by :func:`plain_fit_key`;
    vrec.spark.cf.fit_cf asks :func:`plain_fits`): the prior refines a fitted model, so
    the CF tuning's prior points refine the fit of the point without a prior instead of
    fitting it again. Every fit of one pairs frame also shares the ids' codes that
    :func:`build_matrix` finds (any alpha). What is held is let go on leaving."""
    token = _PLAIN_FITS.set(HeldFit())
    codes = _PAIR_CODES.set(HeldFit())
    try:
        yield _PLAIN_FITS.get()
    finally:
        _PAIR_CODES.reset(codes)
        _PLAIN_FITS.reset(token)


def plain_fits() -> HeldFit | None:
    """The :class:`HeldFit` of the enclosing :func:`sharing_plain_fits`, else None."""
    return _PLAIN_FITS.get()


def half_step(fixed: np.ndarray, conf: sp.csr_matrix, regularization: float,
              prior_mean: np.ndarray | None = None,
              prior_weight: np.ndarray | None = None,
              gram: np.ndarray | None = None, woodbury: bool = False,
              threads: int = 1) -> np.ndarray:
    """One implicit-ALS half-step: for each row r of ``conf`` (confidences of the row's
    positive pairs), ``argmin_v Σ_j c_rj (p_rj - v·f_j)² + λ|v|² + π_r |v - μ_r|²`` over
    all columns j (p = 1 on the row's pairs, 0 elsewhere, c = 1 where no pair), i.e.
    ``(FᵀF + F_rᵀ(C_r - I)F_r + (λ + π_r) I) v = F_rᵀ c_r + π_r μ_r`` (``gram``: FᵀF
    when already known). Also the visual preference fit (vrec.core.visual).

    ``woodbury``: rows without a prior whose pairs number at most half the dimensions
    are solved through Woodbury's identity, ``(A + FᵣᵀDFᵣ)⁻¹ = A⁻¹ - A⁻¹Fᵣᵀ(D⁻¹ +
    FᵣA⁻¹Fᵣᵀ)⁻¹FᵣA⁻¹`` with ``A = FᵀF + λI`` inverted once: an h × h solve in place of a
    d × d one. The same solution up to float64 rounding (benchmarks/README.md measures
    how many float32 vectors differ).

    Rows are taken in order of their number of pairs, in blocks (:func:`_row_blocks`)
    solved by :func:`_solve_rows` in batched LAPACK calls and products, which free the
    interpreter: ``threads`` > 1 (0: every core) solves blocks side by side. The blocks
    do not depend on ``threads``, so neither does the result."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    src = np.asarray(fixed)  # a plain view (np.memmap indexes slowly); float64 per block below
    k = src.shape[1]
    if gram is None:
        f64 = np.asarray(src, dtype=np.float64)
        gram = f64.T @ f64
    # (FᵀF + λI)⁻¹, for the rows solved through Woodbury's identity
    base_inv = np.linalg.inv(gram + regularization * np.eye(k)) if woodbury else None
    out = np.zeros((conf.shape[0], k), dtype=np.float32)
    blocks = _row_blocks(conf, k, prior_weight)
    threads = threads or os.cpu_count() or 1

    def solve(rows: np.ndarray) -> None:
        _solve_rows(src, conf, regularization, prior_mean, prior_weight, gram, base_inv,
                    out, rows)

    with threadpool_limits(1, "blas"):  # many small products: BLAS threads only add overhead
        if threads <= 1 or len(blocks) <= 1:
            for block in blocks:
                solve(block)
        else:
            with ThreadPoolExecutor(min(threads, len(blocks))) as pool:
                list(pool.map(solve, blocks))
    return out


SOLVE_ROWS = 128  # the most rows half_step solves in one batched LAPACK call
BLOCK_VALUES = 1 << 21  # the most float64 values in one block's systems


def _row_blocks(conf: sp.csr_matrix, k: int, prior_weight: np.ndarray | None
                ) -> list[np.ndarray]:
    """:func:`half_step`'s blocks: the rows to solve (a pair or a prior; the rest stay
    zero) in order of their number of pairs, at most :data:`SOLVE_ROWS` a block and at
    most :data:`BLOCK_VALUES` float64 values in its ``k`` × ``k`` systems."""
    lens = np.diff(conf.indptr)
    live = lens > 0 if prior_weight is None else (lens > 0) | (np.asarray(prior_weight) != 0)
    rows = np.flatnonzero(live)
    rows = rows[np.argsort(lens[rows], kind="stable")]
    cap = max(1, min(SOLVE_ROWS, BLOCK_VALUES // (k * k)))
    return [rows[i:i + cap] for i in range(0, len(rows), cap)]


def _solve_rows(src, conf, regularization, prior_mean, prior_weight, gram, base_inv, out,
                rows: np.ndarray) -> None:
    """:func:`half_step` for one block of rows of ``conf`` (:func:`_row_blocks`), into
    ``out``. Short histories (Woodbury's identity) are padded to the longest of them with
    zero rows, which add nothing to either side, and solved by stacked products; the
    others' systems are built row by row (one product each, faster than stacked ones for
    long histories) and solved in one batched call."""
    k = src.shape[1]
    starts, ends = conf.indptr[rows], conf.indptr[rows + 1]
    lens = ends - starts
    pw = (np.zeros(len(rows)) if prior_weight is None
          else np.asarray(prior_weight, dtype=np.float64)[rows])
    short = np.zeros(len(rows), dtype=bool)
    if base_inv is not None:  # Woodbury's identity: short histories without a prior
        short = (pw == 0.0) & (2 * lens <= k)  # an empty row is solved only for a prior
    if short.any():
        h = int(lens[short].max())
        valid = np.arange(h)[None, :] < lens[short, None]
        at = np.where(valid, starts[short, None] + np.arange(h)[None, :], 0)
        c = np.where(valid, conf.data[at], 2.0).astype(np.float64)  # padding: 1 / (c - 1) = 1
        ok = (c > 1.0).all(axis=1)  # D⁻¹ = 1 / (c - 1) needs every confidence above 1
        short[np.flatnonzero(short)[~ok]] = False
        valid, at, c = valid[ok], at[ok], c[ok]
    if short.any():
        f = src[conf.indices[at]].astype(np.float64)  # rows × h × k, padded with zeros
        f[~valid] = 0.0
        ft = f.transpose(0, 2, 1)
        b = (ft @ c[:, :, None])[:, :, 0]  # F_rᵀ c_r
        mf = base_inv @ ft  # A⁻¹F_rᵀ
        mb = b @ base_inv.T  # A⁻¹b
        small = f @ mf  # F_r A⁻¹ F_rᵀ + D⁻¹; a padding pair: a 1 alone on its diagonal
        d = np.arange(small.shape[1])
        small[:, d, d] += 1.0 / (c - 1.0)
        fix = np.linalg.solve(small, f @ mb[:, :, None])
        out[rows[short]] = mb - (mf @ fix)[:, :, 0]
    direct = np.flatnonzero(~short)
    if len(direct) == 0:
        return
    eye = np.eye(k)
    systems = np.empty((len(direct), k, k))
    rhs = np.empty((len(direct), k, 1))
    for m, i in enumerate(direct):
        idx = conf.indices[starts[i]:ends[i]]
        c = np.asarray(conf.data[starts[i]:ends[i]], dtype=np.float64)
        fr = src[idx].astype(np.float64)
        systems[m] = gram + (fr.T * (c - 1.0)) @ fr + (regularization + pw[i]) * eye
        rhs[m, :, 0] = fr.T @ c + pw[i] * prior_mean[rows[i]] if pw[i] else fr.T @ c
    out[rows[direct]] = np.linalg.solve(systems, rhs)[:, :, 0]


def refine_with_images(user_factors: np.ndarray, item_factors: np.ndarray,
                       conf: sp.csr_matrix, features: np.ndarray, has_image: np.ndarray, *,
                       regularization: float, prior: float, map_regularization: float = 10.0,
                       min_users: int = 2, threads: int = 1
                       ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image-regularised ALS (VBPR-style joint factors): each item's factor is pulled
    towards a learned linear projection of its image features, ``y_i ≈ W·z_i + b``, with
    strength ``prior``; sparse items borrow from the items that look like them.

    Starting from a fitted model (``conf``: users × items confidences, as it was fit),
    ``W`` is fit by ridge regression from the features of items with an image and at
    least ``min_users`` users to their factors; then items are re-solved with the prior,
    users re-solved, ``W`` refit, and items re-solved once more. Items without an image
    get no prior. ``threads``: :func:`half_step`'s (0: every core). Returns (user
    factors, item factors, facts)."""
    from vrec.core.coldstart import fit_ridge

    has = np.asarray(has_image, dtype=bool)
    z = np.asarray(features, dtype=np.float64)
    users_per_item = np.diff(conf.tocsc().indptr)
    fit = has & (users_per_item >= min_users)
    if fit.sum() < 20 or prior <= 0:
        return user_factors, item_factors, {"applied": False,
                                            "why": f"{int(fit.sum())} items to fit the projection"
                                            if prior > 0 else "cf.visual_prior is 0"}
    conf_items = sp.csr_matrix(conf.T)
    weight = np.where(has, prior, 0.0)
    x, y = np.asarray(user_factors, dtype=np.float32), np.asarray(item_factors, dtype=np.float32)
    for _ in range(2):
        w, b = fit_ridge(z[fit], y[fit], map_regularization)
        y = half_step(x, conf_items, regularization, z @ w + b, weight, threads=threads)
        if _ == 0:  # no prior on users: short histories through Woodbury's identity
            x = half_step(y, sp.csr_matrix(conf), regularization, woodbury=True,
                          threads=threads)
    return x, y, {"applied": True, "projection_items": int(fit.sum()), "prior": prior}

"""train_cf: collaborative filtering factors from the run's weighted interactions.

Two engines produce the same :class:`CFModel` (user and item factors, id mappings,
parameters, version), which score_users consumes:

* ``implicit`` (default): Spark filters and reweights the pairs, the driver assembles a
  users x items CSR of confidences and fits ``implicit``'s ALS (CPU, or CUDA when present
  and ``cf.gpu`` allows). BLAS threads are limited to one around the fit only (implicit
  runs its own thread pool; DESIGN trap 4).
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

import hashlib
import json
import time
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

def training_pairs(interactions, cf: CFSettings):
    """Spark DataFrame (user_id, item_id, weight) that the engines train on.

    Keeps pairs with weight > 0; drops items with fewer than ``min_item_events`` events,
    then users with fewer than ``min_user_events`` (one pass each, in that order); then
    applies ``cf.reweight``. Pairs whose reweighted value is not positive are dropped.
    """
    from pyspark.sql import functions as F

    cols = [C.USER_ID, C.ITEM_ID, "weight"] + (["n_events"] if "n_events" in interactions.columns else [])
    pos = interactions.where(F.col("weight") > 0).select(*cols)
    if "n_events" not in pos.columns:
        pos = pos.withColumn("n_events", F.lit(1).cast("long"))
    for key, floor in ((C.ITEM_ID, cf.min_item_events), (C.USER_ID, cf.min_user_events)):
        if floor > 1:
            keep = pos.groupBy(key).agg(F.sum("n_events").alias("_n")).where(F.col("_n") >= floor)
            pos = pos.join(keep.select(key), key, "left_semi")
    pos = pos.select(C.USER_ID, C.ITEM_ID, F.col("weight").cast("double").alias("weight"))
    if cf.reweight == "none":
        return pos
    return _reweight(pos, cf.reweight, cf.bm25_k1, cf.bm25_b).where(F.col("weight") > 0)


def _reweight(pairs, mode: str, k1: float, b: float):
    """BM25 / TF-IDF as ``implicit.nearest_neighbours.bm25_weight`` / ``tfidf_weight``
    compute them on the items x users matrix (idf per user, length norm per item)."""
    from pyspark.sql import functions as F

    n_items = pairs.select(C.ITEM_ID).distinct().count()
    idf = pairs.groupBy(C.USER_ID).agg(
        (F.log(F.lit(float(n_items))) - F.log1p(F.count("*"))).alias("_idf"))
    out = pairs.join(idf, C.USER_ID)
    if mode == "tfidf":
        return out.select(C.USER_ID, C.ITEM_ID, (F.sqrt("weight") * F.col("_idf")).alias("weight"))
    rows = pairs.groupBy(C.ITEM_ID).agg(F.sum("weight").alias("_row"))
    avg = rows.agg(F.avg("_row")).first()[0]
    norm = rows.select(C.ITEM_ID, ((1.0 - b) + b * F.col("_row") / F.lit(avg)).alias("_norm"))
    out = out.join(norm, C.ITEM_ID)
    w = F.col("weight")
    return out.select(C.USER_ID, C.ITEM_ID,
                      (w * (k1 + 1.0) / (F.lit(k1) * F.col("_norm") + w) * F.col("_idf")).alias("weight"))


def needs_spark_prep(cf: CFSettings) -> bool:
    """Whether the training pairs need Spark (filters or reweighting) before the fit."""
    return cf.reweight != "none" or cf.min_user_events > 1 or cf.min_item_events > 1


def read_pairs_local(path: str | Path) -> pd.DataFrame:
    """(user_id, item_id, weight) with weight > 0 from an interactions Parquet folder, read
    on the driver with pyarrow (ids as categoricals: no per-row Python strings)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(
        columns=[C.USER_ID, C.ITEM_ID, "weight"], filter=pc.field("weight") > 0)
    cols = {}
    for c in (C.USER_ID, C.ITEM_ID):
        enc = pc.dictionary_encode(table.column(c).combine_chunks())
        cols[c] = pd.Categorical.from_codes(enc.indices.to_numpy(zero_copy_only=False),
                                            categories=enc.dictionary.to_pandas())
    cols["weight"] = table.column("weight").to_numpy()
    return pd.DataFrame(cols)


def build_matrix(interactions: pd.DataFrame, alpha: float
                 ) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """CSR users x items of confidences ``1 + alpha * weight`` (pairs with weight > 0).

    Users and items are indexed in sorted id order (the model's id mappings).
    """
    w = interactions["weight"].to_numpy(dtype=np.float64)
    pos = interactions if (w > 0).all() else interactions[w > 0]
    (user_ids, u), (item_ids, i) = (_sorted_codes(pos[c]) for c in (C.USER_ID, C.ITEM_ID))
    conf = (1.0 + alpha * pos["weight"].to_numpy(dtype=np.float64)).astype(np.float32)
    shape = (len(user_ids), len(item_ids))
    i = i.astype(np.int32)
    pair = u * shape[1] + i
    if len(pair) and (np.diff(pair) > 0).all():
        # rows sorted by (user, item) and unique, as build_interactions writes them: no sort
        indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=shape[0]))])
        mat = sp.csr_matrix((conf, i, indptr), shape=shape)
    else:
        mat = sp.csr_matrix((conf, (u, i)), shape=shape)
        mat.sum_duplicates()
    return user_ids, item_ids, mat


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

def use_gpu(setting: str) -> bool:
    """Whether implicit should fit on CUDA: ``auto`` when available, ``on`` requires it."""
    import implicit.gpu

    if setting == "on" and not implicit.gpu.HAS_CUDA:
        raise RuntimeError("cf.gpu is 'on' but implicit was built without CUDA or no GPU is "
                           "visible; set cf.gpu to 'auto' or 'off'")
    return setting == "on" or (setting == "auto" and implicit.gpu.HAS_CUDA)


def fit_implicit(mat: sp.csr_matrix, cf: CFSettings) -> tuple[np.ndarray, np.ndarray, str]:
    """Fit implicit ALS on a users x items confidence CSR; (user_f, item_f, device)."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    gpu = use_gpu(cf.gpu)
    with threadpool_limits(1, "blas"):  # implicit checks the BLAS pool when constructed
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


def fit_mllib(pairs, cf: CFSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spark MLlib implicit ALS on (user_id, item_id, weight); (user_ids, item_ids,
    user_factors, item_factors), ids in sorted order like :func:`build_matrix`."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS

    idx = {c: StringIndexer(inputCol=c, outputCol=f"_{c}", stringOrderType="alphabetAsc").fit(pairs)
           for c in (C.USER_ID, C.ITEM_ID)}
    data = idx[C.ITEM_ID].transform(idx[C.USER_ID].transform(pairs))
    als = ALS(rank=cf.factors, maxIter=cf.iterations, regParam=cf.regularization,
              alpha=cf.alpha, implicitPrefs=True, seed=cf.random_state,
              userCol=f"_{C.USER_ID}", itemCol=f"_{C.ITEM_ID}", ratingCol="weight",
              coldStartStrategy="drop")
    model = als.fit(data)

    def _factors(df, n: int) -> np.ndarray:
        pdf = df.toPandas()
        out = np.zeros((n, cf.factors), dtype=np.float32)
        out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
        return out

    users = np.asarray(idx[C.USER_ID].labels, dtype=object)
    items = np.asarray(idx[C.ITEM_ID].labels, dtype=object)
    return users, items, _factors(model.userFactors, len(users)), _factors(model.itemFactors, len(items))


def train_cf_model(spark, interactions_path: str | Path, cf: CFSettings, *, ds: str,
                   extra_params: dict | None = None) -> CFModel:
    """Train the configured engine on a run's interactions Parquet folder.

    With the ``implicit`` engine and no filters or reweighting, the driver reads the
    pairs with pyarrow (they are already aggregated by Spark in build_interactions);
    otherwise Spark prepares them (:func:`training_pairs`). ``params`` in the model hold the
    CF settings, the device, ``extra_params`` (e.g. the event weights that produced the
    input) and the fit's seconds.
    """
    if cf.engine == "spark_mllib":
        pairs = training_pairs(spark.read.parquet(str(interactions_path)), cf).cache()
        if pairs.limit(1).count() == 0:
            raise ValueError(f"no positive interactions to train on for ds={ds}")
        t0 = time.perf_counter()
        users, items, uf, itf = fit_mllib(pairs, cf)
        device = "spark"
        pairs.unpersist()
    else:
        if needs_spark_prep(cf):
            pdf = training_pairs(spark.read.parquet(str(interactions_path)), cf).toPandas()
        else:
            pdf = read_pairs_local(interactions_path)
        users, items, mat = build_matrix(pdf, cf.alpha)
        if mat.nnz == 0:
            raise ValueError(f"no positive interactions to train on for ds={ds}")
        t0 = time.perf_counter()
        uf, itf, device = fit_implicit(mat, cf)
    params = {**cf.model_dump(mode="json"), **(extra_params or {})}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    params.update(device=device, fit_seconds=round(time.perf_counter() - t0, 3))
    return CFModel(users, items, uf, itf, params, version=f"{cf.engine}-als-{ds}-{digest}")

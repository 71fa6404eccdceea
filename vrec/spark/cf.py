"""The CF engine factory and its Spark parts: the one way a CF model is fit, for the
nightly train_cf stage, the blend tuning and the offline evaluation alike.

:func:`fit_cf` takes the training pairs (a pandas frame, a Spark DataFrame or an
interactions Parquet folder) and the ``cf`` settings: it applies the same filters and
reweighting (:func:`training_pairs`, in Spark) and fits the same engine (implicit on the
driver, or Spark MLlib's ALS) whoever calls it. Without filters or reweighting, the
implicit engine needs no Spark session (the pairs are read with pyarrow).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings
from vrec.core.cf import (
    CFModel,
    build_matrix,
    fit_implicit,
    plain_fit_key,
    plain_fits,
    refine_with_images,
)
from vrec.core.visual import ImageFeatures


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


def fit_cf(pairs, cf: CFSettings, *, spark=None, ds: str = "offline",
           extra_params: dict | None = None, images: ImageFeatures | None = None) -> CFModel:
    """Fit the configured engine on training pairs; see the module doc.

    ``pairs``: pandas (user_id, item_id, weight[, n_events]), a Spark DataFrame, or a
    Parquet folder of interactions. With ``cf.visual_prior`` > 0 and ``images`` (the
    items' PCA image features), the implicit model is then image-regularised
    (vrec.core.cf.refine_with_images). ``params`` of the model hold the CF settings, the
    device, ``extra_params``, whether the image prior applied and the fit's seconds; its
    version is ``<engine>-als-<ds>-<digest of the parameters>``.
    """
    spark_needed = cf.engine == "spark_mllib" or needs_spark_prep(cf)
    if spark_needed and spark is None:
        raise ValueError(f"cf.engine {cf.engine!r} with filters or reweighting needs a Spark "
                         "session; pass spark=")
    if spark_needed:
        if isinstance(pairs, (str, Path)):
            df = spark.read.parquet(str(pairs))
        elif isinstance(pairs, pd.DataFrame):
            cols = [c for c in (C.USER_ID, C.ITEM_ID, "weight", "n_events") if c in pairs]
            df = spark.createDataFrame(pairs[cols].astype({C.USER_ID: str, C.ITEM_ID: str}))
        else:
            df = pairs
        prepared = training_pairs(df, cf)
    if cf.engine == "spark_mllib":
        prepared = prepared.cache()
        if prepared.limit(1).count() == 0:
            raise ValueError(f"no positive interactions to train on for ds={ds}")
        t0 = time.perf_counter()
        users, items, uf, itf = fit_mllib(prepared, cf)
        prepared.unpersist()
        device = "spark"
    else:
        # the tuning's prior points share one plain fit of the same frame (vrec.core.cf
        # .sharing_plain_fits): nothing is read or fit again for them
        shared = plain_fits() if isinstance(pairs, pd.DataFrame) else None
        held = shared.get(pairs, plain_fit_key(cf)) if shared is not None else None
        if held is None:
            if spark_needed:
                pdf = prepared.toPandas()
            elif isinstance(pairs, (str, Path)):
                pdf = read_pairs_local(pairs)
            elif isinstance(pairs, pd.DataFrame):
                pdf = pairs
            else:
                pdf = pairs.select(C.USER_ID, C.ITEM_ID, "weight").toPandas()
            users, items, mat = build_matrix(pdf, cf.alpha)
            if mat.nnz == 0:
                raise ValueError(f"no positive interactions to train on for ds={ds}")
        t0 = time.perf_counter()
        if held is not None:
            users, items, mat, uf, itf, device = held
        else:
            uf, itf, device = fit_implicit(mat, cf)
            if shared is not None:
                shared.offer(pairs, plain_fit_key(cf), (users, items, mat, uf, itf, device))
        if cf.visual_prior > 0 and images is not None:
            z, has = images.lookup(items)
            uf, itf, prior = refine_with_images(uf, itf, mat, z, has,
                                                regularization=cf.regularization,
                                                prior=cf.visual_prior,
                                                threads=cf.num_threads)
        else:
            prior = {"applied": False, "why": "cf.visual_prior is 0" if cf.visual_prior <= 0
                     else "no image features"}
    if cf.engine == "spark_mllib":
        prior = {"applied": False, "why": "the image prior needs the implicit engine"}
    params = {**cf.model_dump(mode="json"), **(extra_params or {}), "image_prior": prior}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    params.update(device=device, fit_seconds=round(time.perf_counter() - t0, 3))
    return CFModel(users, items, uf, itf, params, version=f"{cf.engine}-als-{ds}-{digest}")

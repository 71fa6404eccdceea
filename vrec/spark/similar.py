"""item_similar in Spark: each embedded item's top-k visually similar items.

``exact``: a blocked matrix product per partition (embeddings broadcast, vrec.core.topk);
``faiss``: an HNSW index on the driver, for catalogs where the exact product is too slow,
with its recall@k measured against exact on a sample and held to a floor.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.core.similar import exact_topk, faiss_topk, neighbour_rows, recall_at_k

SCHEMA = S.ITEM_SIMILAR.ddl()


class RecallTooLow(RuntimeError):
    """FAISS's recall on the sample is below the configured floor."""


def similar_partition(frames: Iterator[pd.DataFrame], *, emb: np.ndarray, ids: np.ndarray,
                      k: int, allowed: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (item_id, vidx) -> top-k visually similar items (cosine) among
    the ``allowed`` ones."""
    for df in frames:
        if df.empty:
            continue
        rows = df["vidx"].to_numpy()
        idx, sc = exact_topk(emb, rows, k, allowed)
        yield neighbour_rows(ids, rows, idx, sc, k)


def item_similar(spark, vectors_pd: pd.DataFrame, k: int, *, min_similarity: float = -1.0,
                 engine: str = "exact", recall_floor: float = 0.0, recall_sample: int = 500,
                 seed: int = 0, blocked: set[str] | None = None):
    """(Spark DataFrame of item_similar rows, FAISS recall@k or None for ``exact``); the
    ``blocked`` item ids are never a neighbour (they keep their own rows).
    Raises :class:`RecallTooLow` when FAISS's measured recall is below ``recall_floor``."""
    from pyspark.sql import functions as F

    ids = vectors_pd[C.ITEM_ID].astype(str).to_numpy()
    allowed = ~np.isin(ids, np.asarray(sorted(blocked or ()), dtype=str)) if blocked else None
    emb = np.stack(vectors_pd["embedding"].to_numpy()).astype(np.float32) if len(ids) else \
        np.zeros((0, 1), dtype=np.float32)
    kk = min(k, max(0, len(ids) - 1))
    recall = None
    if engine == "faiss" and kk > 0:
        idx, sc = faiss_topk(emb, kk, allowed=allowed)
        rows = np.random.default_rng(seed).choice(len(ids), size=min(recall_sample, len(ids)),
                                                  replace=False)
        recall = recall_at_k(exact_topk(emb, rows, kk, allowed)[0], idx[rows])
        if recall < recall_floor:
            raise RecallTooLow(f"FAISS item_similar recall@{kk} {recall:.3f} is below "
                               f"recs.faiss_recall_floor {recall_floor}")
        out = spark.createDataFrame(neighbour_rows(ids, np.arange(len(ids)), idx, sc, kk),
                                    schema=SCHEMA)
    else:
        b = spark.sparkContext.broadcast(emb)
        keys = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: ids, "vidx": np.arange(len(ids))}),
                                     schema="item_id string, vidx long")
        out = keys.repartition(max(1, spark.sparkContext.defaultParallelism)).mapInPandas(
            lambda it: similar_partition(it, emb=b.value, ids=ids, k=kk, allowed=allowed),
            SCHEMA)
    return out.where(F.col("similarity") >= min_similarity), recall

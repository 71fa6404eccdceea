"""build_recs: collaborative candidates joined with visual similarity.

For each user (see README "How a list is built"):

* visual profile ``p`` = L2-normalised, interaction-weighted mean of the embeddings of
  the items in the user's history;
* for each CF candidate: ``visual_score = cos(p, e_item)``;
* both scores are z-normalised over the user's candidates (a missing visual score
  counts as the mean, 0) and blended: ``score = cf_weight * z_cf + visual_weight * z_vis``;
* ``reason`` is ``similar_to_history`` (with ``reason_item_id`` = the history item most
  similar to the recommendation) when the visual term dominates, else ``collaborative``;
* lists shorter than K (users unknown to the model, or with little left to recommend)
  are filled with trending items they have not interacted with (reason ``trending``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.scoring import topk_blocked

RECS_SCHEMA = ("user_id string, rank int, item_id string, score double, cf_score double, "
               "visual_score double, reason string, reason_item_id string, model_version string")


def _z(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    out = np.zeros_like(x, dtype=np.float64)
    if ok.sum() == 0:
        return out
    mu, sd = x[ok].mean(), x[ok].std()
    out[ok] = (x[ok] - mu) / sd if sd > 1e-12 else 0.0
    return out


def blend_user(cand_items: np.ndarray, cf_scores: np.ndarray, hist_items: np.ndarray,
               hist_weights: np.ndarray, *, emb: np.ndarray, has_vec: np.ndarray,
               trending: np.ndarray, k: int, cf_weight: float, visual_weight: float
               ) -> pd.DataFrame:
    """One user's final list from catalog-indexed candidates and history.

    All item arguments are integer indices into ``emb``/``has_vec`` (the run's catalog).
    Returns columns rank, item, score, cf_score, visual_score, reason, reason_item
    (item indices; reason_item -1 when none).
    """
    cand_items = np.asarray(cand_items, dtype=np.int64)
    cf = np.asarray(cf_scores, dtype=np.float64)
    hist = np.asarray(hist_items, dtype=np.int64)
    hw = np.asarray(hist_weights, dtype=np.float64)
    hv = hist[has_vec[hist]] if len(hist) else hist
    hvw = hw[has_vec[hist]] if len(hist) else hw
    vis = np.full(len(cand_items), np.nan)
    reason_item = np.full(len(cand_items), -1, dtype=np.int64)
    if len(hv) and len(cand_items) and hvw.sum() > 0:
        prof = (emb[hv] * hvw[:, None]).sum(axis=0)
        norm = np.linalg.norm(prof)
        if norm > 0:
            prof = prof / norm
            ok = has_vec[cand_items]
            vis[ok] = emb[cand_items[ok]] @ prof
            sims = emb[cand_items[ok]] @ emb[hv].T  # candidates x history
            reason_item[ok] = hv[np.argmax(sims, axis=1)]
    zc, zv = cf_weight * _z(cf), visual_weight * _z(vis)
    score = zc + zv
    order = np.argsort(-score, kind="stable")[:k]
    visual_wins = (zv[order] > zc[order]) & ~np.isnan(vis[order])
    out = pd.DataFrame({
        "item": cand_items[order], "score": score[order], "cf_score": cf[order],
        "visual_score": vis[order],
        "reason": np.where(visual_wins, C.REASON_SIMILAR, C.REASON_COLLABORATIVE),
        "reason_item": np.where(visual_wins, reason_item[order], -1),
    })
    if len(out) < k:
        taken = set(out["item"].tolist()) | set(hist.tolist())
        fill = [t for t in trending if t not in taken][: k - len(out)]
        base = float(out["score"].min()) if len(out) else 0.0
        out = pd.concat([out, pd.DataFrame({
            "item": np.asarray(fill, dtype=np.int64),
            "score": base - 0.01 * np.arange(1, len(fill) + 1),
            "cf_score": np.nan, "visual_score": np.nan, "reason": C.REASON_TRENDING,
            "reason_item": -1})], ignore_index=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1, dtype=np.int32))
    return out


def blend_partition(frames: Iterator[pd.DataFrame], *, item_ids: np.ndarray, emb: np.ndarray,
                    has_vec: np.ndarray, trending: np.ndarray, k: int, cf_weight: float,
                    visual_weight: float, model_version: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: per-user rows of candidate and history arrays -> user_recs rows."""
    index = {str(i): j for j, i in enumerate(item_ids)}

    def idx(values) -> np.ndarray:
        if values is None:
            return np.zeros(0, dtype=np.int64)
        return np.asarray([index.get(v, -1) for v in values], dtype=np.int64)

    for df in frames:
        outs = []
        for row in df.itertuples(index=False):
            ci = idx(row.cand_items)
            cs = np.asarray(row.cand_scores if row.cand_scores is not None else [], dtype=float)
            keep = ci >= 0
            hi = idx(row.hist_items)
            hw = np.asarray(row.hist_weights if row.hist_weights is not None else [], dtype=float)
            hkeep = hi >= 0
            o = blend_user(ci[keep], cs[keep], hi[hkeep], hw[hkeep], emb=emb, has_vec=has_vec,
                           trending=trending, k=k, cf_weight=cf_weight,
                           visual_weight=visual_weight)
            o.insert(0, C.USER_ID, row.user_id)
            outs.append(o)
        if not outs:
            continue
        o = pd.concat(outs, ignore_index=True)
        yield pd.DataFrame({
            C.USER_ID: o[C.USER_ID], "rank": o["rank"].astype(np.int32),
            C.ITEM_ID: item_ids[o["item"].to_numpy()].astype(str),
            "score": o["score"].astype(float), "cf_score": o["cf_score"].astype(float),
            "visual_score": o["visual_score"].astype(float), "reason": o["reason"],
            "reason_item_id": [str(item_ids[i]) if i >= 0 else None for i in o["reason_item"]],
            "model_version": model_version,
        })


def catalog_embedding_matrix(item_ids: np.ndarray, vectors: pd.DataFrame
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(emb, has_vec) aligned with ``item_ids``; rows without a vector are zeros."""
    index = {str(i): j for j, i in enumerate(item_ids)}
    dim = len(vectors["embedding"].iloc[0]) if len(vectors) else 1
    emb = np.zeros((len(item_ids), dim), dtype=np.float32)
    has = np.zeros(len(item_ids), dtype=bool)
    for iid, vec in zip(vectors[C.ITEM_ID], vectors["embedding"]):
        j = index.get(str(iid))
        if j is not None:
            emb[j] = np.asarray(vec, dtype=np.float32)
            has[j] = True
    return emb, has


def similar_partition(frames: Iterator[pd.DataFrame], *, emb: np.ndarray, ids: np.ndarray,
                      k: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (item_id, vidx) -> top-k visually similar items (cosine)."""
    for df in frames:
        if df.empty:
            continue
        rows = df["vidx"].to_numpy()
        idx, sc = topk_blocked(emb[rows], emb, k, exclude=[np.array([r]) for r in rows])
        keep = idx.ravel() >= 0
        yield pd.DataFrame({
            C.ITEM_ID: np.repeat(df[C.ITEM_ID].to_numpy(), k)[keep],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(df))[keep],
            "similar_item_id": ids[idx.ravel()[keep]],
            "similarity": np.clip(sc.ravel()[keep].astype(float), -1.0, 1.0)})


def faiss_topk(emb: np.ndarray, k: int, *, m: int = 32, ef_search: int = 128
               ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k neighbours (self excluded) by inner product with a FAISS HNSW
    index; for L2-normalised rows that is cosine similarity."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = max(ef_search, k + 1)
    index.add(x)
    sc, idx = index.search(x, k + 1)
    out_i = np.full((len(x), k), -1, dtype=np.int64)
    out_s = np.full((len(x), k), -np.inf, dtype=np.float32)
    for r in range(len(x)):
        keep = (idx[r] != r) & (idx[r] >= 0)
        ii, ss = idx[r][keep][:k], sc[r][keep][:k]
        out_i[r, :len(ii)], out_s[r, :len(ss)] = ii, ss
    return out_i, out_s


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean share of each row's exact top-k found in its approximate top-k."""
    hits = [len(set(e[e >= 0]) & set(a[a >= 0])) / max(1, (e >= 0).sum())
            for e, a in zip(exact, approx)]
    return float(np.mean(hits)) if hits else 1.0


def neighbour_contrast(emb: np.ndarray, *, n_pairs: int = 20000, seed: int = 0
                       ) -> tuple[float, float]:
    """(mean cosine of each row's top-1 neighbour, mean cosine of random pairs) for
    L2-normalised rows: how much closer visual neighbours are than chance."""
    _, sc = topk_blocked(emb, emb, 1, exclude=[np.array([i]) for i in range(len(emb))])
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(emb), n_pairs), rng.integers(0, len(emb), n_pairs)
    keep = i != j
    return float(sc[:, 0].mean()), float((emb[i[keep]] * emb[j[keep]]).sum(1).mean())


def item_similar(spark, vectors_pd: pd.DataFrame, k: int, *, min_similarity: float = -1.0,
                 engine: str = "exact", recall_sample: int = 500, seed: int = 0):
    """Each embedded item's top-k visually similar items, as a Spark DataFrame, and
    (engine ``faiss`` only) the measured recall@k of FAISS against exact on a sample.

    ``exact`` is a blocked matrix product in Spark (embeddings broadcast); ``faiss`` builds
    an HNSW index on the driver, for catalogs where the exact product is too slow.
    """
    from pyspark.sql import functions as F

    schema = "item_id string, rank int, similar_item_id string, similarity double"
    ids = vectors_pd[C.ITEM_ID].astype(str).to_numpy()
    emb = np.stack(vectors_pd["embedding"].to_numpy()).astype(np.float32) if len(ids) else \
        np.zeros((0, 1), dtype=np.float32)
    kk = min(k, max(0, len(ids) - 1))
    recall = None
    if engine == "faiss" and kk > 0:
        idx, sc = faiss_topk(emb, kk)
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(ids), size=min(recall_sample, len(ids)), replace=False)
        exact, _ = topk_blocked(emb[rows], emb, kk, exclude=[np.array([r]) for r in rows])
        recall = recall_at_k(exact, idx[rows])
        keep = idx.ravel() >= 0
        pdf = pd.DataFrame({
            C.ITEM_ID: np.repeat(ids, kk)[keep],
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(ids))[keep],
            "similar_item_id": ids[idx.ravel()[keep]],
            "similarity": np.clip(sc.ravel()[keep].astype(float), -1.0, 1.0)})
        out = spark.createDataFrame(pdf, schema=schema)
    else:
        b = spark.sparkContext.broadcast(emb)
        keys = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: ids, "vidx": np.arange(len(ids))}),
                                     schema="item_id string, vidx long")
        out = keys.repartition(max(1, spark.sparkContext.defaultParallelism)).mapInPandas(
            lambda it: similar_partition(it, emb=b.value, ids=ids, k=kk), schema)
    return out.where(F.col("similarity") >= min_similarity), recall


def build_user_recs(spark, *, candidates, interactions, catalog_ids: np.ndarray,
                    vectors_pd: pd.DataFrame, trending_ids: list[str], k: int,
                    cf_weight: float, visual_weight: float, model_version: str):
    """user_recs for every user with interactions in the run (Spark DataFrame)."""
    from pyspark.sql import functions as F

    emb, has = catalog_embedding_matrix(catalog_ids, vectors_pd)
    index = {str(i): j for j, i in enumerate(catalog_ids)}
    trending = np.asarray([index[t] for t in trending_ids if t in index], dtype=np.int64)
    cands = (candidates.groupBy(C.USER_ID).agg(
        F.array_sort(F.collect_list(F.struct("rank", C.ITEM_ID, "cf_score"))).alias("c"))
        .select(C.USER_ID, F.col("c." + C.ITEM_ID).alias("cand_items"),
                F.col("c.cf_score").alias("cand_scores")))
    hist = interactions.groupBy(C.USER_ID).agg(
        F.collect_list(C.ITEM_ID).alias("hist_items"),
        F.collect_list(F.col("weight").cast("double")).alias("hist_weights"))
    users = hist.join(cands, C.USER_ID, "left").repartition(
        max(1, spark.sparkContext.defaultParallelism))
    sc = spark.sparkContext
    b_emb, b_has, b_tr = sc.broadcast(emb), sc.broadcast(has), sc.broadcast(trending)
    ids = np.asarray(catalog_ids).astype(str)
    return users.mapInPandas(
        lambda it: blend_partition(it, item_ids=ids, emb=b_emb.value, has_vec=b_has.value,
                                   trending=b_tr.value, k=k, cf_weight=cf_weight,
                                   visual_weight=visual_weight, model_version=model_version),
        RECS_SCHEMA)

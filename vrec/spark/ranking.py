"""build_recs in Spark: the item space on the driver, the hybrid ranker in tasks.

The ranking itself (profile, candidates, blend, diversity, reserved new-arrival slots,
reasons) is :mod:`vrec.core.ranking`; this module prepares its inputs from the run's tables,
runs it over all users with ``mapInPandas`` and builds item_similar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.core.ranking import ItemSpace, ListPolicy, UserBatch, fit_ridge_map, l2_normalise, rank_batch
from vrec.spark.candidates import topk_blocked

if TYPE_CHECKING:
    from vrec.core.cf import CFModel

RECS_SCHEMA = ("user_id string, rank int, item_id string, score double, cf_score double, "
               "visual_score double, reason string, reason_item_id string, model_version string")


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




# ---------------------------------------------------------------- the item space

SPACE_ARRAYS = ("item_ids", "emb", "has_vec", "factors", "warm", "new", "category", "trending")


def save_space(space: ItemSpace, folder: str | Path) -> Path:
    """Write the item space as .npy files (tasks memory-map them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPACE_ARRAYS:
        arr = getattr(space, name)
        np.save(folder / f"{name}.npy", arr.astype(str) if name == "item_ids" else arr)
    return folder


def load_space(folder: str | Path, *, mmap: bool = True) -> ItemSpace:
    """Read an item space written by :func:`save_space`."""
    mode = "r" if mmap else None
    return ItemSpace(**{n: np.load(Path(folder) / f"{n}.npy", mmap_mode=mode)
                        for n in SPACE_ARRAYS})


def index_of(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Position of each value in ``universe`` (-1 when absent)."""
    lookup = {str(v): i for i, v in enumerate(universe)}
    return np.asarray([lookup.get(str(v), -1) for v in values], dtype=np.int64)


def build_item_space(model: CFModel, catalog: pd.DataFrame, vectors: pd.DataFrame,
                     pairs: pd.DataFrame, trending_ids: list[str], *,
                     cold_item_max_users: int = 0, map_min_users: int = 2, seed: int = 0
                     ) -> tuple[ItemSpace, list[str], dict | None]:
    """The catalog-indexed arrays of the ranker, the category names, and the ridge map's
    quality (``skipped`` with the reason when too few warm items have an image).

    New arrivals are items with an embedding and at most ``cold_item_max_users``
    distinct users (pairs with weight > 0); their factors come from the ridge map fit on
    warm items with an image and at least ``map_min_users`` users.
    """
    item_ids = np.asarray(sorted(catalog[C.ITEM_ID].astype(str)), dtype=object)
    cats = catalog.set_index(catalog[C.ITEM_ID].astype(str))[C.CATEGORY].reindex(item_ids)
    names = sorted(str(c) for c in cats.dropna().unique())
    code = {c: j for j, c in enumerate(names)}
    category = np.asarray([code.get(str(c), -1) if pd.notna(c) else -1 for c in cats],
                          dtype=np.int64)
    emb, has = catalog_embedding_matrix(item_ids, vectors)
    emb = l2_normalise(emb)
    pos = pairs[pairs["weight"] > 0]
    ci = index_of(pos[C.ITEM_ID].to_numpy(), item_ids)
    users = np.bincount(ci[ci >= 0], minlength=len(item_ids))
    mpos = index_of(item_ids, model.item_ids)
    in_model = mpos >= 0
    new = has & (users <= cold_item_max_users)
    warm = in_model & ~new
    f = np.asarray(model.item_factors).shape[1]
    factors = np.zeros((len(item_ids), f), dtype=np.float32)
    factors[warm] = np.asarray(model.item_factors)[mpos[warm]]
    fit = warm & has & (users >= map_min_users)
    uidx = index_of(pos[C.USER_ID].to_numpy(), model.user_ids)
    ok = (ci >= 0) & (uidx >= 0)
    liked = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (uidx[ok], ci[ok])),
                          shape=(len(model.user_ids), len(item_ids)))
    fit_idx = np.flatnonzero(fit)
    rmap = fit_ridge_map(emb[fit_idx], factors[fit_idx], np.asarray(model.user_factors),
                         liked[:, fit_idx], seed=seed)
    if rmap is not None:
        factors[new] = rmap.predict(emb[new])
    else:
        new[:] = False  # no map: new arrivals are reached through the visual path only
    t = index_of(np.asarray(trending_ids), item_ids)
    t = t[t >= 0]
    rest = np.setdiff1d(np.arange(len(item_ids)), t)
    space = ItemSpace(item_ids=item_ids.astype(str), emb=emb, has_vec=has, factors=factors,
                      warm=warm, new=new, category=category,
                      trending=np.concatenate([t, rest]).astype(np.int64))
    quality = ({"skipped": f"{len(fit_idx)} warm items with an image and >= {map_min_users} "
                           "users; the map needs 20", "new_arrivals": 0} if rmap is None
               else {**rmap.quality, "new_arrivals": int(new.sum())})
    return space, names, quality


# ---------------------------------------------------------------- users

def _csr(lists: list, values: list | None, index: dict, n_cols: int) -> sp.csr_matrix:
    indptr, cols, vals = [0], [], []
    for r, items in enumerate(lists):
        items = [] if items is None else items
        w = values[r] if values is not None and values[r] is not None else [1.0] * len(items)
        for it, v in zip(items, w):
            j = index.get(it, -1)
            if j >= 0:
                cols.append(j)
                vals.append(v)
        indptr.append(len(cols))
    m = sp.csr_matrix((np.asarray(vals, dtype=np.float32), np.asarray(cols, dtype=np.int64),
                       np.asarray(indptr, dtype=np.int64)), shape=(len(lists), n_cols))
    m.sum_duplicates()
    return m


def user_batch(df: pd.DataFrame, *, space: ItemSpace, item_index: dict, user_index: dict,
               user_factors: np.ndarray, category_index: dict) -> UserBatch:
    """A :class:`UserBatch` from rows of (user_id, hist_items, hist_w, seen_items,
    touched) as :func:`user_inputs` produces them."""
    uidx = np.asarray([user_index.get(u, -1) for u in df[C.USER_ID]], dtype=np.int64)
    in_model = uidx >= 0
    uf = np.zeros((len(df), user_factors.shape[1]), dtype=np.float32)
    if in_model.any():
        uf[in_model] = user_factors[uidx[in_model]]
    hist = _csr(list(df["hist_items"]), list(df["hist_w"]), item_index, space.n)
    seen = _csr(list(df["seen_items"]), None, item_index, space.n)
    touched = [np.asarray([category_index[c] for c in (t if t is not None else [])
                           if c in category_index], dtype=np.int64) for t in df["touched"]]
    return UserBatch(df[C.USER_ID].to_numpy(), uf, in_model, hist, seen, touched)


def hybrid_partition(frames: Iterator[pd.DataFrame], *, space_dir: str, model_dir: str,
                     categories: list[str], policy: ListPolicy, model_version: str,
                     batch_users: int = 256) -> Iterator[pd.DataFrame]:
    """mapInPandas body: user input rows -> user_recs rows (one BLAS thread per task)."""
    from threadpoolctl import threadpool_limits

    from vrec.core.cf import CFModel

    space = load_space(space_dir)
    model = CFModel.load(model_dir, mmap=True)
    item_index = {str(v): i for i, v in enumerate(space.item_ids)}
    user_index = {str(v): i for i, v in enumerate(model.user_ids)}
    category_index = {c: i for i, c in enumerate(categories)}
    with threadpool_limits(1, "blas"):
        for df in frames:
            for s in range(0, len(df), batch_users):
                part = df.iloc[s:s + batch_users]
                batch = user_batch(part, space=space, item_index=item_index,
                                   user_index=user_index, user_factors=model.user_factors,
                                   category_index=category_index)
                o = rank_batch(batch, space, policy)
                if o.empty:
                    continue
                ri = o["reason_item"].to_numpy()
                yield pd.DataFrame({
                    C.USER_ID: o["user_id"].astype(str), "rank": o["rank"].astype(np.int32),
                    C.ITEM_ID: space.item_ids[o["item"].to_numpy()].astype(str),
                    "score": o["score"].astype(float), "cf_score": o["cf_score"].astype(float),
                    "visual_score": o["visual_score"].astype(float), "reason": o["reason"],
                    "reason_item_id": [str(space.item_ids[i]) if i >= 0 else None for i in ri],
                    "model_version": model_version})


def user_inputs(interactions, user_profile, *, seen_event_types, half_life_days: float | None,
                ds: str):
    """Per user: history items with profile weights (weight × recency), seen items, and
    the categories they touched (Spark DataFrame)."""
    from pyspark.sql import functions as F

    from vrec.spark.interactions import end_of_ds

    pw = F.col("weight")
    if half_life_days:
        age = (F.lit(end_of_ds(ds)).cast("double") - F.col("last_ts").cast("double")) / 86400.0
        pw = pw * F.pow(F.lit(0.5), F.greatest(age, F.lit(0.0)) / half_life_days)
    seen = F.arrays_overlap(F.col("event_types"),
                            F.array(*[F.lit(t) for t in seen_event_types]))
    agg = interactions.groupBy(C.USER_ID).agg(
        F.collect_list(F.when(F.col("weight") > 0, F.col(C.ITEM_ID))).alias("hist_items"),
        F.collect_list(F.when(F.col("weight") > 0, pw.cast("double"))).alias("hist_w"),
        F.collect_list(F.when(seen, F.col(C.ITEM_ID))).alias("seen_items"))
    return user_profile.select(C.USER_ID, F.col("top_categories").alias("touched")).join(
        agg, C.USER_ID, "left")


def build_user_recs(spark, users, *, space_dir: str | Path, model_dir: str | Path,
                    categories: list[str], policy: ListPolicy, model_version: str):
    """user_recs for every row of ``users`` (see :func:`user_inputs`), as a Spark DataFrame."""
    sd, md = str(Path(space_dir).resolve()), str(Path(model_dir).resolve())
    parts = max(1, 2 * spark.sparkContext.defaultParallelism)
    return users.repartition(parts).mapInPandas(
        lambda it: hybrid_partition(it, space_dir=sd, model_dir=md, categories=categories,
                                    policy=policy, model_version=model_version),
        RECS_SCHEMA)

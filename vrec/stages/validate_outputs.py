"""validate_outputs: Great Expectations on the staged user_recs, per-user lists,
item_similar (Spark) and the run's item vectors (pandas) before publish; a critical
failure fails the stage and nothing is published."""

from __future__ import annotations


def run(ctx) -> dict:
    import pandas as pd

    from vrec import columns as C
    from vrec.io.validation import (
        docs_index,
        embeddings_frame,
        raise_on_failure,
        recs_frames,
        similar_frame,
        summarize,
        validate_all,
    )

    spark, r = ctx.spark, ctx.settings.recs
    catalog_ids = spark.read.parquet(str(ctx.input("catalog"))).select(C.ITEM_ID)
    recs, lists = recs_frames(spark.read.parquet(str(ctx.input("user_recs"))),
                              spark.read.parquet(str(ctx.input("user_profile"))),
                              catalog_ids, r.k)
    recs, lists = recs.cache(), lists.cache()
    sim = similar_frame(spark.read.parquet(str(ctx.input("item_similar")))).cache()
    vectors = pd.read_parquet(ctx.input("item_vectors"))
    ids = set(pd.read_parquet(ctx.input("catalog"), columns=[C.ITEM_ID])[C.ITEM_ID].astype(str))
    emb = embeddings_frame(vectors, ids)
    try:
        frames = {"user_recs": (recs, recs.count()), "user_lists": (lists, lists.count()),
                  "item_similar": (sim, sim.count()), "item_embeddings": (emb, len(emb))}
        dim = int(emb["dim"].mode().iloc[0]) if len(emb) else 0
        results = validate_all(ctx.warehouse, ctx.ds, frames,
                               {"k": r.k, "similar_k": r.similar_k, "dim": dim})
    finally:  # a cached plan would serve stale rows to a rerun after the files changed
        for df in (recs, lists, sim):
            df.unpersist()
    rows = sum(n for _, n in frames.values())
    ctx.record(rows, rows, 0, warnings=sum(len(x.warnings) for x in results),
               validation=summarize(results), data_docs=str(docs_index(ctx.warehouse)))
    raise_on_failure(results)
    return {name: n for name, (_, n) in frames.items()}

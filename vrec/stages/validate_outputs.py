"""validate_outputs: Great Expectations on the staged user_recs, per-user lists,
item_similar (Spark) and the run's item vectors (pandas) before publish; a critical
failure fails the stage and nothing is published. No list and no neighbour may name an
item the catalog's availability or the rules file blocks (critical)."""

from __future__ import annotations


def run(ctx) -> dict:
    import pandas as pd

    from vrec import columns as C
    from vrec.io.validation import (
        docs_index,
        embeddings_frame,
        engines,
        raise_on_failure,
        summarize,
        validate_all,
    )
    from vrec.io.warehouse import parquet_rows
    from vrec.spark.validation_frames import recs_frames, similar_frame

    spark, r, v = ctx.spark, ctx.settings.recs, ctx.settings.validation
    catalog = spark.read.parquet(str(ctx.input("catalog"))).select(C.ITEM_ID, "blocked")
    recs, lists = recs_frames(spark.read.parquet(str(ctx.input("user_recs"))),
                              spark.read.parquet(str(ctx.input("user_profile"))),
                              catalog, r.k)
    sim = similar_frame(spark.read.parquet(str(ctx.input("item_similar"))), catalog)
    vectors = pd.read_parquet(ctx.input("item_vectors"))
    ids = set(pd.read_parquet(ctx.input("catalog"), columns=[C.ITEM_ID])[C.ITEM_ID].astype(str))
    emb = embeddings_frame(vectors, ids)
    # row counts from the staged files' footers decide each table's engine (no Spark job);
    # a user has one list row (users of user_profile, and any user only user_recs names)
    frames = {"user_recs": (recs, parquet_rows(ctx.input("user_recs"))),
              "user_lists": (lists, parquet_rows(ctx.input("user_profile"))),
              "item_similar": (sim, parquet_rows(ctx.input("item_similar"))),
              "item_embeddings": (emb, len(emb))}
    dim = int(emb["dim"].mode().iloc[0]) if len(emb) else 0
    results = validate_all(ctx.warehouse, ctx.ds, frames,
                           {"k": r.k, "similar_k": r.similar_k, "dim": dim},
                           pandas_max_rows=v.pandas_max_rows)
    counts = {x.suite: x.rows for x in results}
    rows = sum(counts.values())
    ctx.record(rows, rows, 0, warnings=sum(len(x.warnings) for x in results),
               validation=summarize(results), validation_engines=engines(results),
               data_docs=str(docs_index(ctx.warehouse)))
    raise_on_failure(results)
    return counts

"""build_interactions: the events as of the end of ds, cleaned (bad rows quarantined with a
reason) and weighted into (user, item) pairs; the catalog snapshot; item_popularity and
user_profile."""

from __future__ import annotations


def run(ctx) -> dict:
    from vrec import columns as C
    from vrec.io import warehouse as W
    from vrec.spark.interactions import item_popularity, run_build_interactions, user_profile
    from vrec.stages.common import write

    spark, ds, s = ctx.spark, ctx.ds, ctx.settings
    out = run_build_interactions(spark, s.paths.raw_root, ds, s.weights)
    write(out["catalog"], ctx.output("catalog"))
    write(out["events"].select(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.TS),
          ctx.output("events"), sort=[C.TS])
    write(out["interactions"], ctx.output("interactions"), sort=[C.USER_ID, C.ITEM_ID])
    inter = spark.read.parquet(str(ctx.output("interactions")))
    write(item_popularity(out["events"], out["catalog"], ds, s.recs.trending_half_life_days),
          ctx.output("item_popularity"), sort=["trending_rank"])
    write(user_profile(out["events"], inter, out["catalog"]), ctx.output("user_profile"),
          sort=[C.USER_ID])
    qe = out["events_quarantine"].toPandas()
    qc = out["catalog_quarantine"].toPandas()
    nq = W.write_quarantine(ctx.warehouse, ds, "events", qe) + \
        W.write_quarantine(ctx.warehouse, ds, "catalog", qc)
    n_in = out["events_today"].count()
    n_pairs = inter.count()
    n_users = inter.select(C.USER_ID).distinct().count()
    ctx.record(n_in, n_pairs, nq, users=n_users, events_used=int(out["events"].count()),
               reasons=qe["reason"].value_counts().to_dict() if len(qe) else {})
    return {"pairs": n_pairs, "users": n_users, "quarantined": nq}

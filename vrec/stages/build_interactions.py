"""build_interactions: the events as of the end of ds, cleaned (bad rows quarantined with a
reason) and weighted into (user, item) pairs (engagements only); the impressions and
dismisses apart (``feedback``); the catalog snapshot with why an item is blocked (its
``available`` flag and the rules file); item_popularity and user_profile. Every row dropped from the run's input (the adapters' rejects included) is
quarantined once, and the stage fails if rows landed != rows used + rows quarantined."""

from __future__ import annotations


def run(ctx) -> dict:
    from vrec import columns as C
    from vrec import schemas as S
    from vrec.config import load_rules
    from vrec.io import warehouse as W
    from vrec.spark.interactions import item_popularity, run_build_interactions, user_profile
    from vrec.stages.common import write

    spark, ds, s = ctx.spark, ctx.ds, ctx.settings
    f = s.feedback
    with ctx.phase("read and clean"):
        out = run_build_interactions(spark, s.paths.raw_root, ds, s.weights,
                                     rules=load_rules(s.paths.rules),
                                     feedback_days=max(f.horizon_days, f.rest_days,
                                                       f.dismiss_days))
    with ctx.phase("catalog and events"):
        write(out["catalog"], ctx.output("catalog"))
        write(out["events"].select(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.TS),
              ctx.output("events"), sort=[C.TS])
    with ctx.phase("interactions"):
        # row groups of 8 MB: the candidates stage's tasks read it in shares of them
        write(out["interactions"], ctx.output("interactions"), sort=[C.USER_ID, C.ITEM_ID],
              row_group_mb=8)
    with ctx.phase("feedback"):
        write(out["feedback"].select(*S.FEEDBACK.names()), ctx.output("feedback"),
              sort=[C.TS])
    inter = spark.read.parquet(str(ctx.output("interactions")))
    with ctx.phase("item_popularity"):
        write(item_popularity(out["events"], out["catalog"], ds,
                              s.recs.trending_half_life_days),
              ctx.output("item_popularity"), sort=["trending_rank"])
    with ctx.phase("user_profile"):
        write(user_profile(out["events"], inter, out["catalog"]), ctx.output("user_profile"),
              sort=[C.USER_ID])
    with ctx.phase("quarantine and counts"):
        qe, qc, recon = out["events_quarantine"], out["catalog_quarantine"], out["reconciliation"]
        nq = W.write_quarantine(ctx.warehouse, ds, "events", qe) + \
            W.write_quarantine(ctx.warehouse, ds, "catalog", qc)
        from pyspark.sql import functions as F

        blocked = {str(r["blocked"]): int(r["count"]) for r in spark.read.parquet(
            str(ctx.output("catalog"))).where("blocked is not null").groupBy("blocked").count()
            .collect()}
        sizes = inter.agg(F.count("*").alias("pairs"),
                          F.countDistinct(C.USER_ID).alias("users")).first()
        n_pairs, n_users = int(sizes["pairs"]), int(sizes["users"])
    ctx.record(recon["events"]["landed"], n_pairs, nq, users=n_users,
               events_used=int(out["events_used"]),
               events_landed_today=out["events_landed_today"],
               reasons={str(k): int(v) for k, v in qe["reason"].value_counts().items()},
               catalog_reasons={str(k): int(v) for k, v in qc["reason"].value_counts().items()},
               reconciliation=recon, blocked=blocked)
    unbalanced = [s for s, r in recon.items() if not r["balanced"]]
    if unbalanced:
        raise RuntimeError(f"row accounting does not balance for {', '.join(unbalanced)}: "
                           f"{recon} (a bug: rows were lost between landing and the run)")
    return {"pairs": n_pairs, "users": n_users, "quarantined": nq}

"""candidates: the run's item space (CF factors, image embeddings, the content features of
images and text, categories, trending order, item stats, the cold-start map and its gate)
and, for every user, the CF, visual-profile, content-preference, text-preference and
new-arrival top-N, with the learned ranker on also the trending and last-items top-N,
with raw scores (Spark, the exact top-k kernel). build_recs ranks them."""

from __future__ import annotations


def run(ctx) -> dict:
    import gc
    import json

    import pandas as pd

    from vrec.core.cf import CFModel
    from vrec.core.itemspace import build_item_space, gate_new_arrivals, ranking_policy
    from vrec.dates import end_of_ds
    from vrec.spark.candidates import retrieve_all
    from vrec.spark.users import user_rows
    from vrec.stages.common import driver_inputs, run_content

    spark, ds, r = ctx.spark, ctx.ds, ctx.settings.recs
    model = CFModel.load(ctx.input("model"))
    inp = driver_inputs(ctx)
    space, map_quality = build_item_space(model, inp.catalog, inp.vectors, inp.pairs,
                                          inp.trending, r, visual=ctx.settings.visual,
                                          content=run_content(ctx, inp),
                                          end=pd.Timestamp(end_of_ds(ds)))
    # the pandas inputs (all interaction pairs: GBs at 10M) are not needed past this point;
    # drop them before the Spark job so the driver does not hold them beside the workers
    del inp, model
    gc.collect()
    blend = json.loads(ctx.input("blend").read_text())
    space, slots_off = gate_new_arrivals(space, map_quality, r.new_arrival_min_auc, blend)
    space.save(ctx.output("item_space"), meta={"map_quality": map_quality,
                                               "slots_off": slots_off})
    # the mean profile's own top-N is retrieved only when the blend gives it a share
    policy = ranking_policy(r, blend, slots_off)
    profile = policy.pref_mix < 1.0
    rows = user_rows(spark.read.parquet(str(ctx.input("interactions"))))
    out = retrieve_all(spark, rows, space_dir=ctx.output("item_space"),
                       model_dir=ctx.input("model"), recs=r, visual=ctx.settings.visual,
                       end=pd.Timestamp(end_of_ds(ds)), profile=profile,
                       extra=ctx.settings.ranker.enabled)
    out.write.mode("overwrite").parquet(str(ctx.output("candidates")))
    written = spark.read.parquet(str(ctx.output("candidates")))
    n_users = written.count()
    n_cands = written.selectExpr("sum(size(items))").first()[0] or 0
    ctx.record(n_users, int(n_cands), 0, items=int(space.n), new_arrivals=int(space.new.sum()),
               cold_start_map=map_quality, new_arrival_slots_off=slots_off,
               candidates_per_source=r.candidates, profile_source=profile)
    return {"users": n_users, "candidates": int(n_cands), "new_arrivals": int(space.new.sum())}

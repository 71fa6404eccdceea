"""train_cf: fit the configured CF engine on the run's interactions and save the model;
tune the blend on a validation window (or record the configured one)."""

from __future__ import annotations


def run(ctx) -> dict:
    import pandas as pd

    from vrec.core.tuning import tune_blend
    from vrec.io import warehouse as W
    from vrec.spark.cf import fit_cf
    from vrec.spark.interactions import end_of_ds
    from vrec.stages.common import cf_fitter, driver_inputs

    spark, ds, s = ctx.spark, ctx.ds, ctx.settings
    inter = ctx.input("interactions")
    model = fit_cf(inter, s.cf, spark=spark, ds=ds,
                   extra_params={"weights": s.weights.model_dump(mode="json")})
    model.save(ctx.output("model"))
    n_pairs = spark.read.parquet(str(inter)).count()
    if s.recs.tune_blend:
        inp = driver_inputs(ctx)
        blend = tune_blend(inp.pairs, inp.catalog, inp.vectors, inp.trending, recs=s.recs,
                           end=pd.Timestamp(end_of_ds(ds)), fit=cf_fitter(ctx))
        print(f"[vrec] {ds} blend tuning: {blend.get('skipped') or blend['chosen']} "
              f"grid {blend['grid']}", flush=True)
    else:
        blend = {"chosen": None, "skipped": "recs.tune_blend is false: the configured blend"}
    W.write_json(ctx.output("blend"), blend)
    ctx.record(n_pairs, len(model.user_ids), 0, items=len(model.item_ids),
               model_version=model.version, engine=s.cf.engine,
               device=model.params["device"], fit_seconds=model.params["fit_seconds"],
               blend=blend)
    return {"users": len(model.user_ids), "items": len(model.item_ids), "version": model.version,
            "engine": s.cf.engine, "blend": blend.get("chosen")}

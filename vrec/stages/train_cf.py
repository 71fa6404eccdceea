"""train_cf: tune the CF model's factors, regularization and alpha on a validation window
(or reuse a recent tuning), fit the configured engine with them on the run's
interactions and save the model; tune the blend on the same window (or reuse a recent
blend tuning, or record the configured one). Tunings are kept per day in
``<warehouse>/_state/tuning/`` (vrec.io.tunings)."""

from __future__ import annotations


def tuned_cf(ctx, pairs, window, images) -> tuple:
    """(the CF settings to fit with, the tuning record): a reusable earlier tuning, a new
    one, or the configured settings when tuning is off or the window is too small.
    ``window()`` builds the validation window (only when a tuning runs)."""
    from vrec.core.tuning import data_size, settings_key, tune_cf
    from vrec.io import tunings
    from vrec.stages.common import cf_fitter

    cf, ds, wh = ctx.settings.cf, ctx.ds, ctx.warehouse
    if not cf.tune:
        return cf, {"skipped": "cf.tune is false: the configured settings"}
    record = tunings.take(
        wh, "cf", ds=ds, use="cf", as_of=ds, max_age_days=cf.tune_every_days,
        key=settings_key(cf), size=data_size(pairs), retune=bool(ctx.params.get("retune")),
        tune=lambda: tune_cf(window(), cf, ctx.settings.recs,
                             lambda c: cf_fitter(ctx, c, images),
                             label=f"{ds} train_cf: CF tuning"))
    if record.get("chosen") is None:
        return cf, record
    return cf.model_copy(update=record["chosen"]), record


def run(ctx) -> dict:
    import functools

    import pandas as pd

    from vrec.core.tuning import tune_blend, validation_window
    from vrec.dates import end_of_ds
    from vrec.io import warehouse as W
    from vrec.spark.cf import fit_cf
    from vrec.stages.common import TUNED_CF, cf_fitter, driver_inputs, run_images, tuned_blend

    spark, ds, s = ctx.spark, ctx.ds, ctx.settings
    inter = ctx.input("interactions")
    inp = driver_inputs(ctx)
    end = pd.Timestamp(end_of_ds(ds))
    window = functools.cache(lambda: validation_window(inp.pairs, s.recs, end))
    images = run_images(ctx, inp.vectors)
    cf, cf_tuning = tuned_cf(ctx, inp.pairs, window, images)
    print(f"[vrec] {ds} CF tuning: {cf_tuning.get('skipped') or cf_tuning.get('chosen')}"
          + (f" (reused from {cf_tuning['reused_from']})" if cf_tuning.get("reused_from") else ""),
          flush=True)
    model = fit_cf(inter, cf, spark=spark, ds=ds, images=images,
                   extra_params={"weights": s.weights.model_dump(mode="json")})
    model.save(ctx.output("model"))
    n_pairs = len(inp.pairs)  # every staged pair (no Spark job to count them again)
    if s.recs.tune_blend:
        blend = tuned_blend(ctx, cf, inp.pairs, as_of=ds, use="blend", tune=lambda: tune_blend(
            inp.pairs, inp.catalog, inp.vectors, inp.trending, recs=s.recs, visual=s.visual,
            end=end, fit=cf_fitter(ctx, cf, images), window=window(),
            label=f"{ds} train_cf: blend tuning"))
        print(f"[vrec] {ds} blend tuning: {blend.get('skipped') or blend['chosen']} "
              f"(CF only {blend.get('cf_only_ndcg')}, chosen {blend.get('chosen_ndcg')})"
              + (f" (reused from {blend['reused_from']})" if blend.get("reused_from") else ""),
              flush=True)
    else:
        blend = {"chosen": None, "skipped": "recs.tune_blend is false: the configured blend"}
    W.write_json(ctx.output("blend"), blend)
    ctx.record(n_pairs, len(model.user_ids), 0, items=len(model.item_ids),
               model_version=model.version, engine=cf.engine,
               device=model.params["device"], fit_seconds=model.params["fit_seconds"],
               cf_tuning=cf_tuning, blend=blend)
    return {"users": len(model.user_ids), "items": len(model.item_ids), "version": model.version,
            "engine": cf.engine, "cf": {k: getattr(cf, k) for k in TUNED_CF},
            "blend": blend.get("chosen")}

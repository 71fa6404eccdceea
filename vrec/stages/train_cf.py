"""train_cf: tune the CF model's factors, regularization and alpha on the forward window
of the tunings' day T (vrec.stages.common.tunings_day: the evaluation's cutoff, or ds;
features as of T - recs.window_days, labels in the days after it through T; or reuse a
recent tuning), fit the configured engine with them on the run's interactions and save the
model; meanwhile tune the blend on the same window (or reuse a recent blend tuning, or
record the configured one); train the learned ranker on the window before it, validate it
against the blend on this one and refit it here (vrec.core.ranker; or reuse a recent one).
Tunings are kept per day in ``<warehouse>/_state/tuning/`` (vrec.io.tunings)."""

from __future__ import annotations


def run(ctx) -> dict:
    import functools
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from vrec import columns as C
    from vrec.core.tuning import data_size, tune_blend
    from vrec.io import warehouse as W
    from vrec.spark.cf import fit_cf
    from vrec.stages.common import (
        TUNED_CF,
        WindowFit,
        driver_inputs,
        estimate_days,
        run_content,
        tuned_blend,
        tuned_cf,
        tuned_ranker,
        tuning_window,
        tunings_day,
        window_cands,
    )

    spark, ds, s = ctx.spark, ctx.ds, ctx.settings
    inter = ctx.input("interactions")
    with ctx.phase("read inputs"):
        # the pairs only for their size (what a stored tuning is reused by), not held and
        # as Arrow strings: at 10M, as Python strings, their ids were a GB on the driver
        inp = driver_inputs(ctx, pairs=None)
        size = data_size(W.read_folder(inter, [C.USER_ID, C.ITEM_ID], arrow=True))
        content = run_content(ctx)
    as_of = tunings_day(s, ds)  # the evaluation's cutoff: it scores these tunings
    window = functools.cache(lambda: tuning_window(ctx, as_of))
    shared = WindowFit()  # the window's model with the tuned settings, fit once
    with ctx.phase("CF tuning"):
        cf, cf_tuning = tuned_cf(ctx, size, window, content, as_of=as_of, use="cf",
                                 shared=shared)
    print(f"[vrec] {ds} CF tuning: {cf_tuning.get('skipped') or cf_tuning.get('chosen')}"
          + (f" (reused from {cf_tuning['reused_from']})" if cf_tuning.get("reused_from") else ""),
          flush=True)

    def fit_night():
        with ctx.phase("fit"):
            model = fit_cf(inter, cf, spark=spark, ds=ds, images=content,
                           extra_params={"weights": s.weights.model_dump(mode="json")})
            model.save(ctx.output("model"))
        return model

    n_pairs = size["pairs"]  # every staged pair (no Spark job to count them again)
    # the night's fit (implicit's own threads, outside the interpreter) runs beside the
    # blend tuning (mostly one core of Python); BLAS keeps one thread in both meanwhile
    # (each limits it itself, so the limit is set once around them: see docs/operations.md)
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(1) as pool:
        fitting = pool.submit(fit_night)
        if s.recs.tune_blend:
            with ctx.phase("blend tuning"):
                blend = tuned_blend(ctx, cf, size, as_of=as_of, use="blend", tune=lambda: tune_blend(
                    window(), inp.catalog, inp.vectors, recs=s.recs, visual=s.visual,
                    label=f"{ds} train_cf: blend tuning", estimate_days=estimate_days(s),
                    extra=s.ranker.enabled,
                    cands=lambda: window_cands(ctx, window(), inp, cf, content, shared)))
            print(f"[vrec] {ds} blend tuning: {blend.get('skipped') or blend['chosen']} "
                  f"(CF only {blend.get('cf_only_ndcg')}, chosen {blend.get('chosen_ndcg')})"
                  + (f" (reused from {blend['reused_from']})" if blend.get("reused_from") else ""),
                  flush=True)
        else:
            blend = {"chosen": None, "skipped": "recs.tune_blend is false: the configured blend"}
        model = fitting.result()
    W.write_json(ctx.output("blend"), blend)
    with ctx.phase("ranker"):
        ranker = tuned_ranker(ctx, cf, inp, size, content, blend, as_of=as_of,
                              use="ranker", window=window, shared=shared)
    shared.clear()
    print(f"[vrec] {ds} ranker: " + (ranker.get("skipped") or (
        f"validation {ranker['validation']} -> "
        + ("publishes" if ranker["chosen"]["use"] else f"the blend publishes ({ranker['reason']})")))
        + (f" (reused from {ranker['reused_from']})" if ranker.get("reused_from") else ""),
        flush=True)
    W.write_json(ctx.output("ranker"), ranker)
    ctx.record(n_pairs, len(model.user_ids), 0, items=len(model.item_ids),
               model_version=model.version, engine=cf.engine,
               device=model.params["device"], fit_seconds=model.params["fit_seconds"],
               tunings_as_of=as_of, cf_tuning=cf_tuning, blend=blend,
               ranker={k: v for k, v in ranker.items() if k != "model"})
    return {"users": len(model.user_ids), "items": len(model.item_ids), "version": model.version,
            "engine": cf.engine, "cf": {k: getattr(cf, k) for k in TUNED_CF},
            "blend": blend.get("chosen"), "ranker": ranker.get("chosen")}

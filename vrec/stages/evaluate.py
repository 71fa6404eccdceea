"""evaluate: a holdout as of ds, and the metrics of popularity, ALS-only, visual-profile,
visual-preference and hybrid lists built by the production retrieval and ranker on it,
refitting CF with the run's tuned settings (docs/evaluation.md). With the time split the
hybrid's blend tuning is one for data that ended at the cutoff: a stored one when one
may be reused (an earlier night's train_cf or evaluate), else tuned on the training part
and stored."""

from __future__ import annotations

import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.dates import end_of_ds, shift_ds


def holdout_for(ctx, pairs: pd.DataFrame):
    """The run's holdout: ``time`` aggregates the staged events before the end of ds minus
    ``eval.test_days`` with the run's weights (decay measured from the cutoff) and tests
    on the events after it; ``user`` splits the run's interaction ``pairs`` per user."""
    from pyspark.sql import functions as F

    from vrec.core.evaluation import time_holdout, user_holdout
    from vrec.spark.interactions import aggregate_interactions, event_weight_expr
    from vrec.stages.common import PAIR_COLUMNS

    s, ds = ctx.settings, ctx.ds
    e = s.eval
    end = pd.Timestamp(end_of_ds(ds))
    if e.split == "user":
        return user_holdout(pairs, end, fraction=e.test_fraction, min_pairs=e.min_user_pairs)
    cut_ds = shift_ds(ds, -e.test_days)
    cut = end_of_ds(cut_ds)
    ev = ctx.spark.read.parquet(str(ctx.input("events")))
    train = (aggregate_interactions(ev.where(F.col(C.TS) < F.lit(cut)), s.weights, cut_ds)
             .select(*PAIR_COLUMNS).toPandas())
    test = (ev.where(F.col(C.TS) >= F.lit(cut))
            .withColumn("weight", event_weight_expr(s.weights))
            .groupBy(C.USER_ID, C.ITEM_ID).agg(F.max("weight").alias("weight")).toPandas())
    return time_holdout(train, test, pd.Timestamp(cut))


def headline(frame: pd.DataFrame, k: int) -> dict:
    """NDCG@k over all users per model."""
    m = frame[(frame["slice"] == "all") & (frame["k"] == k) & (frame["metric"] == "ndcg")]
    return {str(r.model): round(float(r.value), 5) for r in m.itertuples()}


def run(ctx) -> dict:
    from vrec.core.evaluation import evaluate_models, tune_on_holdout
    from vrec.io import warehouse as W
    from vrec.stages.common import (
        cf_fitter,
        driver_inputs,
        run_cf_settings,
        run_images,
        tuned_blend,
    )

    e, ds, s = ctx.settings.eval, ctx.ds, ctx.settings
    if e.enabled:
        inp = driver_inputs(ctx)
        holdout = holdout_for(ctx, inp.pairs)
        cf = run_cf_settings(ctx)
        fit = cf_fitter(ctx, cf, run_images(ctx, inp.vectors))
        blend = None
        if e.tune and e.split == "time":
            # the tuning a night at the cutoff would have used (no data after the cutoff)
            cut_ds = shift_ds(ds, -e.test_days)
            blend = tuned_blend(
                ctx, cf, holdout.train, as_of=cut_ds, use="eval_blend",
                tune=lambda: tune_on_holdout(holdout, inp.catalog, inp.vectors, recs=s.recs,
                                             visual=s.visual, fit=fit, label=f"{ds} evaluate"))
        frame, info = evaluate_models(holdout, inp.catalog, inp.vectors, recs=s.recs,
                                      visual=s.visual, fit=fit, ks=e.ks,
                                      max_users=e.max_users, tune=e.tune,
                                      label=f"{ds} evaluate", blend=blend)
    else:
        frame, info = S.EVAL_METRICS.empty(), {"skipped": "eval.enabled is false"}
    frame = frame[S.EVAL_METRICS.names()].astype(S.EVAL_METRICS.dtypes())
    W.write_table_folder(frame, ctx.output("eval_metrics"))
    head = headline(frame, e.gate_k)
    print(f"[vrec] {ds} evaluate ({info.get('split', '-')} split, "
          f"{info.get('evaluated_users', 0)} test users): "
          + (", ".join(f"{m} NDCG@{e.gate_k} {v:.4f}" for m, v in head.items())
             or info.get("skipped", "nothing measured")), flush=True)
    ctx.record(info.get("test_pairs", 0), len(frame), 0, evaluation=info, headline=head)
    return {"rows": len(frame), "users": info.get("evaluated_users", 0), "headline": head}

"""evaluate: a holdout as of ds, and the metrics of every model (vrec.core.models) built
by the production retrieval and ranker on it (docs/evaluation.md).

With the time split the holdout is the forward window whose features end at the cutoff
(ds - eval.test_days) and whose labels are the days after it. Nothing tuned or trained
on those days reaches it: the CF settings and the blend are the tunings for data that
ended at the cutoff (a stored one when one may be reused, an earlier night's train_cf or
evaluate, else tuned here on the forward window before the cutoff and stored). The
features and the CF model are the night of the cutoff's own when its run is still staged
(``eval.replay``: its interactions, trending order and model, the model only when fit
with these settings), else the events before the cutoff are aggregated and the model
refit on them. The learned ranker (model ``ranker``) is the one for
data that ended at the cutoff too (stored by that night's train_cf, else trained here on
the windows before the cutoff), whether or not it published; with the user split, the
night's own (train_cf's ``ranker``). The tuning's own estimates
of every model, from its window, are stored beside the holdout's values (slice
``tuning_window``).

The realised metrics (:func:`realised`) measure what was published, not a holdout: each
list of the last ``feedback.horizon_days`` published nights against the engagements after
it (and its impressions), whether or not ``eval.enabled``."""

from __future__ import annotations

import pandas as pd

from vrec import schemas as S
from vrec.dates import end_of_ds, shift_ds


def holdout_for(ctx, pairs: pd.DataFrame):
    """(the run's holdout, the CF model folder of the night it replays or None): ``time``:
    the forward window of the cutoff ds - ``eval.test_days``, as that night staged its
    features when ``eval.replay`` and its run is still staged (vrec.spark.windows
    .replayed_window), else aggregated from the run's events; ``user``: each user's
    latest pairs of the run's interaction ``pairs``."""
    from vrec.core.window import user_window
    from vrec.spark.windows import forward_window_at, replayed_window

    s, ds = ctx.settings, ctx.ds
    e = s.eval
    if e.split == "user":
        return user_window(pairs, pd.Timestamp(end_of_ds(ds)), fraction=e.test_fraction,
                           min_pairs=e.min_user_pairs), None
    cut = shift_ds(ds, -e.test_days)
    staged = {a: ctx.earlier(a, cut) for a in ("interactions", "item_popularity", "model")} \
        if e.replay else {}
    if staged and all(staged.values()):
        return replayed_window(ctx.spark, ctx.input("events"), staged["interactions"],
                               staged["item_popularity"], s, cut, ds), staged["model"]
    return forward_window_at(ctx.spark, ctx.input("events"), s, cut, ds), None


def replay_fit(ctx, folder, cf, content, fit):
    """(the CF model for the holdout, what it is): the model the night of the cutoff
    staged (``folder``) when it was fit with the settings ``cf``, the run's event weights
    and the image prior as the evaluation would apply it, else ``fit`` (a refit on the
    holdout's training pairs)."""
    import json

    if folder is None:
        return fit, "refit on the holdout's training pairs"
    from vrec.core.cf import CFModel

    params = json.loads((folder / "model.json").read_text())["params"]
    s = ctx.settings
    prior = cf.engine == "implicit" and cf.visual_prior > 0 and content is not None
    same = (all(params.get(k) == v for k, v in cf.model_dump(mode="json").items())
            and params.get("weights") == s.weights.model_dump(mode="json")
            and bool((params.get("image_prior") or {}).get("applied")) == prior)
    if not same:
        return fit, (f"refit: the model staged for {folder.parent.name} has other settings")
    model = CFModel.load(folder, mmap=True)
    return (lambda pairs: model), f"the model train_cf staged for {folder.parent.name}"


def headline(frame: pd.DataFrame, k: int) -> dict:
    """NDCG@k over all users per model."""
    m = frame[(frame["slice"] == "all") & (frame["k"] == k) & (frame["metric"] == "ndcg")]
    return {str(r.model): round(float(r.value), 5) for r in m.itertuples()}


def estimate_rows(blend: dict | None, k: int, days: int | None) -> pd.DataFrame:
    """The blend tuning's estimates of every model on its window (NDCG@k, its standard
    error and the users scored) as eval_metrics rows of the slice ``tuning_window``;
    none when they were scored on another number of label days than ``days`` (the
    holdout's: they would not compare)."""
    rows = []
    blend = blend or {}
    same = blend.get("estimate_days") == days
    for model, est in ((blend.get("estimates") if same else None) or {}).items():
        base = {"model": model, "slice": "tuning_window", "k": int(k)}
        rows += [{**base, "metric": "users", "value": float(blend.get("estimate_users") or 0)},
                 {**base, "metric": "ndcg", "value": float(est["ndcg"])},
                 {**base, "metric": "ndcg_se", "value": float(est["se"])}]
    return pd.DataFrame(rows, columns=S.EVAL_METRICS.names())


def published_lists(warehouse, days: list[str]) -> pd.DataFrame:
    """The published user_recs of ``days`` (those published) with the list's ds and the
    user's segment of that night (published user_profile)."""
    from pathlib import Path

    from vrec import columns as C
    from vrec.io import warehouse as W

    wh, frames = Path(warehouse), []
    for d in sorted(set(days) & set(W.published_ds(warehouse))):
        recs = pd.read_parquet(wh / "user_recs" / f"ds={d}",
                               columns=[C.USER_ID, "rank", C.ITEM_ID, "reason", "model_version"])
        prof = pd.read_parquet(wh / "user_profile" / f"ds={d}", columns=[C.USER_ID, "segment"])
        frames.append(recs.merge(prof, on=C.USER_ID, how="left").assign(list_ds=d))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[C.USER_ID, "rank", C.ITEM_ID, "reason", "model_version", "segment", C.LIST_DS])


def realised(ctx, salt: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The night's realised metrics (vrec.core.feedback) of the lists published on the
    last ``feedback.horizon_days`` nights, and the record's summary (with the drop
    warning, if any). Events carry clear user ids: with pseudonymisation on (``salt``)
    they are hashed to meet the published lists."""
    from vrec import columns as C
    from vrec.core.feedback import drop_warning, realised_metrics
    from vrec.io import warehouse as W
    from vrec.privacy import pseudonym

    f, ds = ctx.settings.feedback, ctx.ds
    empty = S.REALISED_METRICS.empty()
    if not f.horizon_days:
        return empty, {"skipped": "feedback.horizon_days is 0"}
    lists = published_lists(ctx.warehouse, [shift_ds(ds, -h) for h in range(1, f.horizon_days + 1)])
    if lists.empty:
        return empty, {"lists": []}
    first = str(lists[C.LIST_DS].min())
    engaged = W.read_folder(ctx.input("events"), [C.USER_ID, C.ITEM_ID, C.TS],
                            since=end_of_ds(first))
    fb = W.read_folder(ctx.input("feedback"), [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS,
                                               C.LIST_DS, C.POSITION])
    imp = fb[(fb[C.EVENT_TYPE] == C.IMPRESSION) & fb[C.LIST_DS].isin(set(lists[C.LIST_DS]))]
    if salt:
        hashed = {u: pseudonym(u, salt) for u in set(engaged[C.USER_ID]) | set(imp[C.USER_ID])}
        engaged = engaged.assign(**{C.USER_ID: engaged[C.USER_ID].map(hashed)})
        imp = imp.assign(**{C.USER_ID: imp[C.USER_ID].map(hashed)})
    frame = realised_metrics(lists, engaged, ds, impressions=imp)
    history = pd.concat([W.read_recent(ctx.warehouse, "realised_metrics", ds, 8),
                         frame.assign(ds=ds)],
                        ignore_index=True)
    warning = drop_warning(history, drop=f.drop_warning, min_users=f.drop_min_users)
    head = frame[(frame["slice"] == "all")].pivot_table(
        index=[C.LIST_DS, "horizon_days"], columns="metric", values="value", aggfunc="mean")
    summary = [{"list_ds": d, "horizon_days": int(h),
                **{m: round(float(v), 5) for m, v in row.items() if pd.notna(v)}}
               for (d, h), row in head.iterrows()]
    return frame, {"lists": summary, "warning": warning, "impressions": int(len(imp))}


def run(ctx) -> dict:
    import functools
    import json

    from vrec.core.evaluation import evaluate_models
    from vrec.core.ranker import Ranker
    from vrec.core.tuning import data_size, tune_blend
    from vrec.core.window import PAIR_COLUMNS
    from vrec.io import warehouse as W
    from vrec.privacy import resolve_salt
    from vrec.stages.common import (
        WindowFit,
        cf_fitter,
        driver_inputs,
        estimate_days,
        run_cf_settings,
        run_content,
        tuned_blend,
        tuned_cf,
        tuned_ranker,
        tuning_window,
        tunings_day,
        window_cands,
    )

    e, ds, s = ctx.settings.eval, ctx.ds, ctx.settings
    salt = resolve_salt(s.privacy)  # fail before any work when misconfigured
    if e.enabled:
        with ctx.phase("read inputs"):
            # the time split's holdout is built from the events; only the user split
            # holds out the run's pairs
            inp = driver_inputs(ctx, pairs=None if e.split == "time" else PAIR_COLUMNS)
            content = run_content(ctx)
        with ctx.phase("holdout"):
            holdout, replayed = holdout_for(ctx, inp.pairs)
            size = data_size(holdout.train)  # what a stored tuning is reused by; once
        # the tunings for data that ended where the holdout's features end (the night's
        # own: train_cf tunes as of this day); the user split holds out pairs of every
        # day, so it can only use the run's own
        as_of = tunings_day(s, ds)
        window = functools.cache(lambda: tuning_window(ctx, as_of))
        shared = WindowFit()  # the window's model with the tuned settings, fit once
        if e.split == "time":
            with ctx.phase("CF tuning"):
                cf, cf_tuning = tuned_cf(ctx, size, window, content, as_of=as_of,
                                         use="eval_cf", shared=shared)
        else:
            cf, cf_tuning = run_cf_settings(ctx), {"skipped": "user split: the run's tuning"}
        fit = cf_fitter(ctx, cf, content)
        model_fit, model_source = replay_fit(ctx, replayed, cf, content, fit)
        with ctx.phase("blend tuning"):
            blend = tuned_blend(
                ctx, cf, size, as_of=as_of, use="eval_blend",
                tune=lambda: tune_blend(window(), inp.catalog, inp.vectors, recs=s.recs,
                                        visual=s.visual,
                                        label=f"{ds} evaluate: blend tuning as of {as_of}",
                                        estimate_days=estimate_days(s),
                                        extra=s.ranker.enabled,
                                        cands=lambda: window_cands(ctx, window(), inp, cf,
                                                                   content, shared))
            ) if e.tune and s.recs.tune_blend else None
        # the ranker as of the cutoff; the user split can only use the night's own
        with ctx.phase("ranker"):
            ranker = tuned_ranker(ctx, cf, inp, size, content, blend, as_of=as_of,
                                  use="eval_ranker", window=window, shared=shared) \
                if e.split == "time" else json.loads(ctx.input("ranker").read_text())
        shared.clear()
        with ctx.phase("models"):
            frame, info = evaluate_models(holdout, inp.catalog, inp.vectors, recs=s.recs,
                                          visual=s.visual, fit=model_fit,
                                          # the tuning estimates at recs.k need the holdout's
                                          ks=tuple(sorted(set(e.ks) | {s.recs.k})),
                                          max_users=e.max_users, label=f"{ds} evaluate",
                                          blend=blend, content=content,
                                          ranker=Ranker.from_record(ranker) if ranker.get("model")
                                          else None, extra=s.ranker.enabled,
                                          workers=e.workers)
        if len(frame):
            frame = pd.concat([frame, estimate_rows(blend, s.recs.k, estimate_days(s))],
                              ignore_index=True)
        info["cf_tuning"] = {k: cf_tuning.get(k) for k in ("chosen", "as_of", "reused_from",
                                                             "skipped", "chosen_ndcg")}
        info["tunings_as_of"] = as_of
        info["cf_model"] = model_source
        info["ranker"] = {k: ranker.get(k) for k in ("chosen", "as_of", "reused_from", "skipped",
                                                     "reason", "validation")}
        info["ranker"]["source"] = (
            f"the ranker for data that ended on {as_of}" if e.split == "time" else
            "the night's own (user split: its windows overlap the held-out pairs)")
    else:
        frame, info = S.EVAL_METRICS.empty(), {"skipped": "eval.enabled is false"}
    frame = frame[S.EVAL_METRICS.names()].astype(S.EVAL_METRICS.dtypes())
    W.write_table_folder(frame, ctx.output("eval_metrics"), S.EVAL_METRICS)
    with ctx.phase("realised"):
        real, real_info = realised(ctx, salt)
    W.write_table_folder(real, ctx.output("realised_metrics"), S.REALISED_METRICS)
    for line in real_info.get("lists", [])[:3]:
        print(f"[vrec] {ds} realised: lists of {line['list_ds']} over {line['horizon_days']} "
              f"day(s): {int(line.get('users', 0))} active users, hit rate "
              f"{line.get('hit_rate', 0):.3f}, NDCG {line.get('ndcg', 0):.4f}", flush=True)
    if real_info.get("warning"):
        print(f"[vrec] WARNING {ds}: {real_info['warning']['message']}", flush=True)
    head = headline(frame, e.gate_k)
    print(f"[vrec] {ds} evaluate ({info.get('split', '-')} split, "
          f"{info.get('evaluated_users', 0)} test users): "
          + (", ".join(f"{m} NDCG@{e.gate_k} {v:.4f}" for m, v in head.items())
             or info.get("skipped", "nothing measured")), flush=True)
    ctx.record(info.get("test_pairs", 0), len(frame), 0, evaluation=info, headline=head,
               realised=real_info)
    return {"rows": len(frame), "users": info.get("evaluated_users", 0), "headline": head}

"""What several stages share: writing a Spark table into staging, reading a run's staged
tables on the driver (train_cf's tuning, candidates and evaluate read the same inputs
the same way), the run's content features, the run's CF engine as a function, the
forward window a tuning validates on, and the CF and blend tunings train_cf and
evaluate reuse or run."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vrec import columns as C
from vrec.core.window import PAIR_COLUMNS
from vrec.io import warehouse as W

CATALOG_COLUMNS = [C.ITEM_ID, C.TITLE, C.CATEGORY, C.DESCRIPTION, C.PRICE]


@dataclass
class DriverInputs:
    """Catalog (item_id, title, category, description, price), item vectors, the interaction
    pairs (with event types and counts: the user builder needs them) and item ids in
    trending order."""

    catalog: pd.DataFrame
    vectors: pd.DataFrame
    pairs: pd.DataFrame
    trending: list[str]


def write(df, path, *, files: int = 1, sort: list[str] | None = None,
          row_group_mb: int | None = None) -> None:
    """Write a Spark DataFrame as ``files`` Parquet files, optionally sorted within them;
    ``row_group_mb``: row groups of about that many MB (Parquet's ``parquet.block.size``;
    default 128), for tables that Spark tasks read in shares of row groups
    (vrec.io.warehouse.row_group_shares)."""
    out = df.repartition(files)
    if sort:
        out = out.sortWithinPartitions(*sort)
    w = out.write.mode("overwrite")
    if row_group_mb:
        w = w.option("parquet.block.size", row_group_mb << 20)
    w.parquet(str(path))


def driver_inputs(ctx, pairs: list[str] | None = PAIR_COLUMNS) -> DriverInputs:
    """The run's catalog, vectors, pairs and trending order (declared inputs of ctx).
    ``pairs``: the interaction columns the stage uses (at 10M every column is a GB or
    more on the driver); None reads none (an empty frame)."""
    pop = W.read_folder(ctx.input("item_popularity"), [C.ITEM_ID, "trending_rank"])
    return DriverInputs(
        catalog=W.read_folder(ctx.input("catalog"), CATALOG_COLUMNS),
        vectors=W.read_folder(ctx.input("item_vectors"), [C.ITEM_ID, "embedding"]),
        pairs=W.read_folder(ctx.input("interactions"), pairs) if pairs else
        pd.DataFrame(columns=PAIR_COLUMNS),
        trending=pop.sort_values("trending_rank")[C.ITEM_ID].astype(str).tolist())


class WindowFit:
    """One CF model a stage fit, with the training pairs (the frame itself), settings
    and image features it was fit with (a vrec.core.cf.HeldFit). The CF tuning's chosen
    point, the blend tuning and the learned ranker's validation window all fit the
    tunings' forward window with the tuned settings: the first fit serves the others (at
    10M each is one to two minutes of a night that tunes). The fit is deterministic
    (``cf.random_state``), so the model is the one a new fit would give. ``spaces``
    holds the item space built on that model (vrec.core.tuning.window_candidates): the
    blend tuning and the ranker's validation score other users of the one window."""

    def __init__(self) -> None:
        from vrec.core.cf import HeldFit

        self._held = HeldFit()
        self.spaces = HeldFit()

    def offer(self, pairs, cf, images, model) -> None:
        """Hold ``model``, fit on ``pairs`` with ``cf`` and ``images`` (in place of the
        one held)."""
        self._held.offer(pairs, cf.model_dump_json(), model, images)

    def clear(self) -> None:
        """Let the held model and item space go."""
        self._held.clear()
        self.spaces.clear()

    def get(self, pairs, cf, images):
        """The held model when it was fit on these very pairs with these settings and
        image features, else None."""
        return self._held.get(pairs, cf.model_dump_json(), images)


def cf_fitter(ctx, cf=None, images=None, shared: WindowFit | None = None):
    """The run's CF engine as a function of training pairs (tuning and evaluation refit
    with it: the same engine, settings, pair preparation and image features as train_cf);
    ``cf``: other settings (the tuned ones). ``shared``: take its model when it was fit
    on the same pairs with the same settings, and hold each new fit there."""
    from vrec.spark.cf import fit_cf

    settings = cf or ctx.settings.cf

    def fit(pairs):
        held = shared.get(pairs, settings, images) if shared is not None else None
        if held is not None:
            print(f"[vrec] {ctx.ds} {ctx.stage.name}: the window's CF model, already fit "
                  "with these settings, is reused", flush=True)
            return held
        model = fit_cf(pairs, settings, spark=ctx.spark, ds=ctx.ds, images=images)
        if shared is not None:
            shared.offer(pairs, settings, images, model)
        return model

    return fit


def write_content(ctx) -> None:
    """embed_items: the run's content features (``content.features``: the images' PCA,
    the text's LSA, or both; vrec.core.visual.content_features) from its item vectors
    and catalog, read as :func:`driver_inputs` reads them, staged once for the stages
    that use them (:func:`run_content`)."""
    from vrec.core.visual import content_features, save_features

    vectors = W.read_folder(ctx.output("item_vectors"), [C.ITEM_ID, "embedding"])
    catalog = W.read_folder(ctx.input("catalog"), CATALOG_COLUMNS)
    save_features(content_features(vectors, catalog, ctx.settings.visual, ctx.settings.content),
                  ctx.output("content"))


def run_content(ctx):
    """The run's content features, as embed_items staged them (:func:`write_content`):
    the CF model's image prior, the cold-start map and the preference models use them.
    At 10M they took 5-17 s in each of the three; now once a night."""
    from vrec.core.visual import load_features

    return load_features(ctx.input("content"))


def tuning_window(ctx, as_of: str):
    """The forward window a tuning for data that ends on ``as_of`` validates on: features
    as of ``as_of - recs.window_days``, labels in the days after it through ``as_of``
    (vrec.spark.windows), sampled to ``recs.tune_max_users``."""
    from vrec.dates import shift_ds
    from vrec.spark.windows import forward_window_at

    r = ctx.settings.recs
    w = forward_window_at(ctx.spark, ctx.input("events"), ctx.settings,
                          shift_ds(as_of, -r.window_days), as_of)
    print(f"[vrec] {ctx.ds} tuning window as of {shift_ds(as_of, -r.window_days)}: "
          f"{len(w.train)} pairs, labels of {len(w.relevant)} users through {as_of}",
          flush=True)
    return w.sampled(r.tune_max_users)


TUNED_CF = ("factors", "regularization", "alpha", "visual_prior")


def tunings_day(settings, ds: str) -> str:
    """The day a night's tunings are for (T: they use data that ended on it): the
    evaluation's cutoff, ds - ``eval.test_days``, when the evaluation runs with the time
    split, so that one tuning serves both stages: train_cf tunes (or reuses) as of the
    cutoff and the evaluation scores on its holdout the very tunings the night published
    with (a tuning as of ds would have seen the holdout's days, so the evaluation had to
    tune again). Else ds itself."""
    from vrec.dates import shift_ds

    e = settings.eval
    return shift_ds(ds, -e.test_days) if e.enabled and e.split == "time" else ds


def estimate_days(settings) -> int | None:
    """How many days of a tuning window's labels its estimates are scored on: the
    evaluation's holdout length with the time split (so that estimate and holdout
    compare), all of them with the user split."""
    return settings.eval.test_days if settings.eval.split == "time" else None


def tuned_cf(ctx, size: dict, window, content, *, as_of: str, use: str,
             shared: WindowFit | None = None) -> tuple:
    """(the CF settings to fit with, the tuning record) for data that ends on ``as_of``:
    the record this day took before for ``use`` (a rerun), else a reusable stored one,
    else a new tuning on ``window()`` (the forward window, built only when a tuning
    runs), or the configured settings when tuning is off or the window is too small.
    train_cf (``cf``) and evaluate (``eval_cf``) ask here, both as of :func:`tunings_day`
    with the time split. ``size``: the data's size (vrec.core.tuning.data_size; a
    stored tuning is reused for data within 20% of its own). ``shared``: receives the
    chosen point's model when a tuning runs (:class:`WindowFit`)."""
    from vrec.core.tuning import settings_key, tune_cf
    from vrec.io import tunings

    s, ds = ctx.settings, ctx.ds
    cf = s.cf
    if not cf.tune:
        return cf, {"skipped": "cf.tune is false: the configured settings"}
    record = tunings.take(
        ctx.warehouse, "cf", ds=ds, use=use, as_of=as_of, max_age_days=cf.tune_every_days,
        key=settings_key(cf, s.content), size=size,
        retune=bool(ctx.params.get("retune")),
        tune=lambda: tune_cf(window(), cf, s.recs, lambda c: cf_fitter(ctx, c, content),
                             label=f"{ds} {ctx.stage.name}: CF tuning as of {as_of}",
                             keep=None if shared is None else
                             lambda c, model: shared.offer(window().train, c, content, model)))
    if record.get("chosen") is None:
        return cf, record
    return cf.model_copy(update=record["chosen"]), record


def window_cands(ctx, window, inp: DriverInputs, cf, content,
                 shared: WindowFit | None = None):
    """The forward ``window``'s candidates as the night builds them (vrec.core.tuning
    .window_candidates): the CF model refit with ``cf`` on its training part (or
    ``shared``'s, :func:`cf_fitter`, with the item space built on it), with the learned
    ranker's sources when the ranker is on. The blend tuning and the ranker ask here."""
    from vrec.core.tuning import window_candidates

    s = ctx.settings
    return window_candidates(window, inp.catalog, inp.vectors, recs=s.recs, visual=s.visual,
                             fit=cf_fitter(ctx, cf, content, shared), content=content,
                             extra=s.ranker.enabled,
                             spaces=shared.spaces if shared is not None else None)


def tuned_ranker(ctx, cf, inp: DriverInputs, size: dict, content, blend: dict | None, *,
                 as_of: str, use: str, window, shared: WindowFit | None = None) -> dict:
    """The learned ranker for data that ends on ``as_of`` (vrec.core.ranker.train_ranker):
    the one this day took before for ``use``, else a reusable stored one (as the blend's:
    ``recs.tune_every_days``, the same settings, data within 20% of ``size``), else
    trained on the window as of ``as_of - 2h``, validated against the blend on
    ``window()`` (the window as of ``as_of - h``, the tunings') and refit on it, each
    window with up to ``ranker.max_users`` labelled users. The first window's candidates
    are freed before the second's are built (at 10M the two at once took train_cf over
    8 GB). train_cf (``ranker``) and evaluate (``eval_ranker``) ask here. ``shared``:
    the model of ``window()`` when the stage fit it already (:class:`WindowFit`); the
    first window's is fit apart and never held there."""
    from vrec.core.itemspace import ranking_policy
    from vrec.core.ranker import fit_window, train_ranker
    from vrec.core.tuning import blend_settings_key, window_skipped
    from vrec.dates import shift_ds
    from vrec.io import tunings

    s = ctx.settings
    if not s.ranker.enabled:
        return {"chosen": None, "skipped": "ranker.enabled is false: the blend ranks"}

    def train() -> dict:
        n = s.ranker.max_users
        before = tuning_window(ctx, shift_ds(as_of, -s.recs.window_days)).sampled(n, seed=1)
        skipped = window_skipped(before, s.recs)
        if skipped:
            return {"chosen": None, "skipped": f"training window as of "
                                               f"{before.end.date()}: {skipped}"}
        valid = window().sampled(n)
        skipped = window_skipped(valid, s.recs)
        if skipped:
            return {"chosen": None, "skipped": f"validation window: {skipped}"}
        print(f"[vrec] {ctx.ds} {ctx.stage.name}: training the ranker as of {as_of}", flush=True)
        # the first window's candidates are freed when fit_window returns, the window
        # itself here: the second window's are built without them
        first = fit_window(window_cands(ctx, before, inp, cf, content), s.ranker, k=s.recs.k)
        del before
        va = window_cands(ctx, valid, inp, cf, content, shared)
        return train_ranker(first, va, ranking_policy(s.recs, blend, va.slots_off), s.ranker,
                            slots=s.recs.new_arrival_slots)

    key = {"ranker": s.ranker.model_dump(mode="json"),
           "blend": blend_settings_key(s.recs, s.visual, cf, s.content)}
    return tunings.take(ctx.warehouse, "ranker", ds=ctx.ds, use=use, as_of=as_of,
                        max_age_days=s.recs.tune_every_days, key=key, size=size,
                        retune=bool(ctx.params.get("retune")), tune=train)


def published_by(ranker: dict | None, enabled: bool = True) -> str:
    """The model that ranks the night's lists: ``ranker`` when the ranker is ``enabled``
    and its record says it won its validation, else ``hybrid`` (the blend)."""
    rec = ranker or {}
    won = (rec.get("chosen") or {}).get("use") and rec.get("model")
    return "ranker" if enabled and won else "hybrid"


def run_cf_settings(ctx):
    """The CF settings the run's model was fit with (train_cf's tuned values)."""
    import json

    params = json.loads((ctx.input("model") / "model.json").read_text())["params"]
    return ctx.settings.cf.model_copy(update={k: params[k] for k in TUNED_CF})


def tuned_blend(ctx, cf, size: dict, *, as_of: str, use: str, tune) -> dict:
    """The blend tuning for data that ends on ``as_of``: the one this day took before for
    ``use`` (a rerun), else a reusable stored one (an earlier night's train_cf or evaluate,
    at most ``recs.tune_every_days`` old, the same settings and CF model, data within
    20%), else ``tune()``'s record, stored when it chose a blend; ``retune`` in the
    stage's params skips the stored ones. The record taken is pinned for the day
    (vrec.io.tunings). train_cf (``blend``) and evaluate (``eval_blend``) both ask here."""
    from vrec.core.tuning import blend_settings_key
    from vrec.io import tunings

    s = ctx.settings
    return tunings.take(ctx.warehouse, "blend", ds=ctx.ds, use=use, as_of=as_of,
                        max_age_days=s.recs.tune_every_days,
                        key=blend_settings_key(s.recs, s.visual, cf, s.content),
                        size=size,
                        retune=bool(ctx.params.get("retune")), tune=tune)

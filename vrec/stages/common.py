"""What several stages share: writing a Spark table into staging, reading a run's staged
tables on the driver (train_cf's tuning, candidates and evaluate read the same inputs
the same way), the run's CF engine as a function, and the blend tuning train_cf and
evaluate reuse or run."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vrec import columns as C
from vrec.io import warehouse as W

PAIR_COLUMNS = [C.USER_ID, C.ITEM_ID, "weight", "last_ts", "event_types", "n_events"]


@dataclass
class DriverInputs:
    """Catalog (item_id, category), item vectors, the interaction pairs (with event types
    and counts: the user builder needs them) and item ids in trending order."""

    catalog: pd.DataFrame
    vectors: pd.DataFrame
    pairs: pd.DataFrame
    trending: list[str]


def write(df, path, *, files: int = 1, sort: list[str] | None = None) -> None:
    """Write a Spark DataFrame as ``files`` Parquet files, optionally sorted within them."""
    out = df.repartition(files)
    if sort:
        out = out.sortWithinPartitions(*sort)
    out.write.mode("overwrite").parquet(str(path))


def driver_inputs(ctx) -> DriverInputs:
    """The run's catalog, vectors, pairs and trending order (declared inputs of ctx)."""
    pop = W.read_folder(ctx.input("item_popularity"), [C.ITEM_ID, "trending_rank"])
    return DriverInputs(
        catalog=W.read_folder(ctx.input("catalog"), [C.ITEM_ID, C.CATEGORY]),
        vectors=W.read_folder(ctx.input("item_vectors"), [C.ITEM_ID, "embedding"]),
        pairs=W.read_folder(ctx.input("interactions"), PAIR_COLUMNS),
        trending=pop.sort_values("trending_rank")[C.ITEM_ID].astype(str).tolist())


def cf_fitter(ctx, cf=None, images=None):
    """The run's CF engine as a function of training pairs (tuning and evaluation refit
    with it: the same engine, settings, pair preparation and image features as train_cf);
    ``cf``: other settings (the tuned ones)."""
    from vrec.spark.cf import fit_cf

    settings = cf or ctx.settings.cf
    return lambda pairs: fit_cf(pairs, settings, spark=ctx.spark, ds=ctx.ds, images=images)


def run_images(ctx, vectors):
    """The image features the CF model's image prior uses (the PCA of the run's vectors)."""
    from vrec.core.visual import image_features

    v = ctx.settings.visual
    return image_features(vectors, v.dim, whiten=v.whiten)


TUNED_CF = ("factors", "regularization", "alpha", "visual_prior")


def run_cf_settings(ctx):
    """The CF settings the run's model was fit with (train_cf's tuned values)."""
    import json

    params = json.loads((ctx.input("model") / "model.json").read_text())["params"]
    return ctx.settings.cf.model_copy(update={k: params[k] for k in TUNED_CF})


def tuned_blend(ctx, cf, pairs, *, as_of: str, use: str, tune) -> dict:
    """The blend tuning for data that ends on ``as_of``: the one this day took before for
    ``use`` (a rerun), else a reusable stored one (an earlier night's train_cf or evaluate,
    at most ``recs.tune_every_days`` old, the same settings and CF model, data within
    20%), else ``tune()``'s record, stored when it chose a blend; ``retune`` in the
    stage's params skips the stored ones. The record taken is pinned for the day
    (vrec.io.tunings). train_cf (``blend``) and evaluate (``eval_blend``) both ask here."""
    from vrec.core.tuning import blend_settings_key, data_size
    from vrec.io import tunings

    s = ctx.settings
    return tunings.take(ctx.warehouse, "blend", ds=ctx.ds, use=use, as_of=as_of,
                        max_age_days=s.recs.tune_every_days,
                        key=blend_settings_key(s.recs, s.visual, cf), size=data_size(pairs),
                        retune=bool(ctx.params.get("retune")), tune=tune)

"""What several stages share: writing a Spark table into staging, reading a run's staged
tables on the driver (train_cf's tuning, candidates and evaluate read the same inputs
the same way) and the run's CF engine as a function."""

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


def cf_fitter(ctx):
    """The run's CF engine as a function of training pairs (tuning and evaluation refit
    with it: the same engine, settings and pair preparation as train_cf)."""
    from vrec.spark.cf import fit_cf

    return lambda pairs: fit_cf(pairs, ctx.settings.cf, spark=ctx.spark, ds=ctx.ds)

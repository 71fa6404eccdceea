"""Forward windows from the staged events (vrec.core.window builds the window itself).

:func:`forward_window_at` aggregates the clean events before a cutoff (the end of
``cut_ds``) into pairs with the run's weights, their decay measured from the cutoff,
exactly as build_interactions aggregates a night; finds item_popularity's trending
order as of the cutoff from those pairs (vrec.spark.interactions.trending_order: the
same scores); and takes the events after the cutoff,
up to the end of ``label_ds``, as labels. :func:`replayed_window` takes the features as
the night of the cutoff staged them instead (the evaluation's holdout, docs/evaluation.md).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from vrec import columns as C
from vrec.config import Settings
from vrec.core.window import PAIR_COLUMNS, Window, forward_window
from vrec.dates import end_of_ds


def forward_window_at(spark, events_path, settings: Settings, cut_ds: str,
                      label_ds: str) -> Window:
    """The window whose features end with ``cut_ds`` and whose labels are the events of
    the days after it, through ``label_ds`` (vrec.core.window)."""
    from pyspark.sql import functions as F

    from vrec.spark.interactions import aggregate_interactions, trending_order

    cut = end_of_ds(cut_ds)
    ev = spark.read.parquet(str(events_path))
    train = aggregate_interactions(ev.where(F.col(C.TS) < F.lit(cut)), settings.weights,
                                   cut_ds).select(*PAIR_COLUMNS)
    with written(train, Path(events_path).parent) as folder:
        pairs = read_written(folder)
        # the trending order from the pairs just written (item_popularity's order, not a
        # second aggregation of the events: 8-17 s of each window at 10M)
        trending = (trending_order(spark.read.parquet(folder), cut_ds,
                                   settings.recs.trending_half_life_days)
                    .orderBy("trending_rank").select(C.ITEM_ID).toPandas())
    return _window(ev, pairs, trending[C.ITEM_ID], settings, cut_ds, label_ds)


def replayed_window(spark, events_path, interactions_path, popularity_path,
                    settings: Settings, cut_ds: str, label_ds: str) -> Window:
    """The window of ``cut_ds`` as that night had it: its staged interactions are the
    features and its item_popularity the trending order; the labels are the staged
    ``events`` after the cutoff through ``label_ds``, as in :func:`forward_window_at`.
    Events that landed after that night with earlier timestamps are in neither."""
    from vrec.io import warehouse as W

    train = naive_utc(W.read_folder(interactions_path, PAIR_COLUMNS))
    pop = W.read_folder(popularity_path, [C.ITEM_ID, "users_all", "trending_rank"])
    pop = pop[pop["users_all"] > 0].sort_values("trending_rank", kind="stable")
    return _window(spark.read.parquet(str(events_path)), train, pop[C.ITEM_ID], settings,
                   cut_ds, label_ds)


def _window(ev, train: pd.DataFrame, trending: pd.Series, settings: Settings, cut_ds: str,
            label_ds: str) -> Window:
    """The forward window of training pairs, a trending order and the events ``ev``
    after the cutoff through ``label_ds`` as labels."""
    from pyspark.sql import functions as F

    from vrec.spark.interactions import event_weight_expr

    cut, end = end_of_ds(cut_ds), end_of_ds(label_ds)
    labels = (ev.where((F.col(C.TS) >= F.lit(cut)) & (F.col(C.TS) < F.lit(end)))
              .withColumn("weight", event_weight_expr(settings.weights))
              .groupBy(C.USER_ID, C.ITEM_ID).agg(F.max("weight").alias("weight"),
                                                 F.min(C.TS).alias("first_ts")))
    return forward_window(train, labels.toPandas(), pd.Timestamp(cut),
                          trending=trending.astype(str).tolist(), label_end=pd.Timestamp(end))


@contextmanager
def written(df, near: Path) -> Iterator[str]:
    """``df`` written as Parquet to a hidden temporary folder in ``near`` (the run's
    staging area: executors see it on a cluster too), removed on leaving. A window's
    training pairs are GBs at 10M: collected through the driver JVM (``toPandas``) they
    set its heap's high-water mark, so they are written and read back
    (:func:`read_written`)."""
    tmp = tempfile.mkdtemp(prefix=".collect-", dir=near)
    try:
        df.write.mode("overwrite").parquet(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_written(folder: str) -> pd.DataFrame:
    """A folder :func:`written` wrote, read with pyarrow: the frame ``toPandas`` would
    give (vrec.io.warehouse.to_frame: each distinct event-type list one shared array),
    timestamps as naive UTC, rows in the same order."""
    import pyarrow.parquet as pq

    from vrec.io import warehouse as W

    return naive_utc(W.to_frame(pq.read_table(folder)))


def naive_utc(out: pd.DataFrame) -> pd.DataFrame:
    """The frame with its zoned timestamp columns as naive UTC ``datetime64[ns]``."""
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    return out

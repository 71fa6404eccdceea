"""The Spark frames the validation suites run on: landed events, the recommendations and
item_similar with the derived columns the expectations check (``known_item``,
``ts_not_future``, ``contiguous``, ...). The suites and the engines that run them:
:mod:`vrec.io.validation`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vrec import columns as C
from vrec.dates import end_of_ds
from vrec.spark.rawread import read_raw


def events_frame(spark, events_dir: Path, catalog_ids, ds: str,
                 max_event_age_days: float | None):
    """The day's landed events read into the contract's types (:func:`vrec.spark.rawread.read_raw`: a type
    that cannot be cast raises RawTypeError naming the file, column and types; a missing
    column is left to the suite) plus known_item, ts_not_future, ts_in_window and
    is_duplicate (each False where it cannot be computed)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from vrec.io.rawio import data_files

    df = read_raw(spark, "events", data_files(events_dir))
    cols = set(df.columns)
    end = end_of_ds(ds)
    false = F.lit(False)
    if C.ITEM_ID in cols:
        known = catalog_ids.select(F.col(C.ITEM_ID).alias("_k")).distinct()
        df = df.join(F.broadcast(known), df[C.ITEM_ID].cast("string") == known["_k"], "left")
        df = df.withColumn("known_item", F.col("_k").isNotNull()).drop("_k")
    else:
        df = df.withColumn("known_item", false)
    ts = F.col(C.TS).cast("timestamp") if C.TS in cols else None
    df = df.withColumn("ts_not_future", F.coalesce(ts < F.lit(end), false) if ts is not None
                       else false)
    if ts is not None and max_event_age_days:
        start = end - dt.timedelta(days=max_event_age_days)
        df = df.withColumn("ts_in_window", F.coalesce(ts >= F.lit(start), false))
    else:
        df = df.withColumn("ts_in_window", F.lit(ts is not None))
    key = [c for c in (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS) if c in cols]
    if key:
        w = Window.partitionBy(*key).orderBy(F.lit(1))
        df = df.withColumn("is_duplicate", F.row_number().over(w) > 1)
    else:
        df = df.withColumn("is_duplicate", false)
    return df


def _with_catalog(df, catalog, column: str, known: str, recommendable: str):
    """``df`` plus ``known`` (``column`` names a catalog item) and ``recommendable`` (that
    item is not blocked: the catalog's ``blocked`` is null; true without that column)."""
    from pyspark.sql import functions as F

    blocked = F.col("blocked") if "blocked" in catalog.columns else F.lit(None).cast("string")
    cat = catalog.select(F.col(C.ITEM_ID).alias("_k"), blocked.alias("_b")) \
        .dropDuplicates(["_k"])
    return (df.join(F.broadcast(cat), df[column] == cat["_k"], "left")
            .withColumn(known, F.col("_k").isNotNull())
            .withColumn(recommendable, F.col("_b").isNull()).drop("_k", "_b"))


def recs_frames(recs, profile, catalog, k: int):
    """(user_recs plus known_item and recommendable (not blocked by availability or the
    rules: ``catalog``'s ``blocked``), user_lists): one row per user of user_profile with
    n, contiguous (ranks 1..n), non_increasing (scores), full (n = k)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = _with_catalog(recs, catalog, C.ITEM_ID, "known_item", "recommendable")
    w = Window.partitionBy(C.USER_ID).orderBy("rank")
    step = recs.withColumn("_rise", F.col("score") > F.lag("score").over(w) + F.lit(1e-9))
    per = step.groupBy(C.USER_ID).agg(
        F.count("*").alias("n"), F.min("rank").alias("_lo"), F.max("rank").alias("_hi"),
        F.countDistinct("rank").alias("_d"),
        F.max(F.coalesce(F.col("_rise"), F.lit(False))).alias("_rises"))
    lists = (profile.select(C.USER_ID).join(per, C.USER_ID, "full_outer")
             .fillna(0, subset=["n"])
             .select(C.USER_ID, "n",
                     ((F.col("n") == 0) | ((F.col("_lo") == 1) & (F.col("_hi") == F.col("n"))
                                           & (F.col("_d") == F.col("n")))).alias("contiguous"),
                     (~F.coalesce(F.col("_rises"), F.lit(False))).alias("non_increasing"),
                     (F.col("n") == k).alias("full")))
    return rows, lists


def similar_frame(sim, catalog=None):
    """item_similar plus self_pair and, with ``catalog``, similar_recommendable (the
    neighbour is not blocked)."""
    from pyspark.sql import functions as F

    sim = sim.withColumn("self_pair", F.col(C.ITEM_ID) == F.col("similar_item_id"))
    if catalog is None:
        return sim.withColumn("similar_recommendable", F.lit(True))
    return _with_catalog(sim, catalog, "similar_item_id", "_known_similar",
                         "similar_recommendable").drop("_known_similar")

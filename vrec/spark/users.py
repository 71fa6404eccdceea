"""Regroup a run's interaction pairs into one row per user for vrec.core.users.

Spark only regroups here (no rule is applied): each user's pairs become parallel lists
sorted by item id, the same rows :func:`vrec.core.users.pairs_by_user` builds in pandas.
"""

from __future__ import annotations

from vrec import columns as C


def user_rows(interactions):
    """(user_id, items, weights, last_s, event_types, n_events) per user from the run's
    interactions (Spark DataFrame with user_id, item_id, weight, last_ts, event_types,
    n_events)."""
    from pyspark.sql import functions as F

    pair = F.struct(
        F.col(C.ITEM_ID).cast("string").alias("item"), F.col("weight").cast("double").alias("w"),
        (F.unix_micros(F.col("last_ts")) / 1e6).alias("t"), F.col("event_types").alias("e"),
        F.col("n_events").cast("long").alias("n"))
    g = interactions.groupBy(C.USER_ID).agg(F.sort_array(F.collect_list(pair)).alias("p"))
    return g.select(F.col(C.USER_ID).cast("string").alias(C.USER_ID),
                    F.col("p.item").alias("items"), F.col("p.w").alias("weights"),
                    F.col("p.t").alias("last_s"), F.col("p.e").alias("event_types"),
                    F.col("p.n").alias("n_events"))


def with_exclusions(rows, spark, pairs):
    """``rows`` with ``exclude``: each user's item ids of ``pairs`` (pandas: user_id,
    item_id; the feedback rules' leave-outs), null for users without any."""
    from pyspark.sql import functions as F

    if pairs is None or pairs.empty:
        return rows.withColumn("exclude", F.lit(None).cast("array<string>"))
    ex = spark.createDataFrame(pairs[[C.USER_ID, C.ITEM_ID]].astype(str),
                               f"{C.USER_ID} string, {C.ITEM_ID} string")
    ex = ex.groupBy(C.USER_ID).agg(F.collect_set(C.ITEM_ID).alias("exclude"))
    return rows.join(ex, C.USER_ID, "left")

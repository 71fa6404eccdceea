"""build_interactions: raw events as of ds -> cleaned, weighted (user, item) interactions.

A run for ``ds`` reads event partitions landed on or before ``ds`` and keeps only events
with ``ts < end of ds`` (the day after ``ds`` at 00:00 UTC). Row-level problems become
quarantine rows with a reason. The run's quarantine holds every row dropped from its
input, once: the rows of every partition it read (those landed before the first run
too) and the rows the adapters rejected for those partitions, each with its
``landed_ds``; :func:`reconcile` checks that rows landed = rows used + rows quarantined.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vrec import columns as C
from vrec import schemas as S
from vrec.config import BusinessRules, EventWeights
from vrec.dates import end_of_ds
from vrec.io.rawio import (
    MissingInput,
    catalog_snapshot_ds,
    data_files,
    event_partitions_until,
    partition_dir,
)


def _require_columns(df, required, what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks required columns {missing}; has {df.columns}")


def load_events(spark, raw_root: str | Path, ds: str):
    """Events landed on or before ``ds`` with a ``landed_ds`` column (string)."""
    from pyspark.sql import functions as F

    parts = event_partitions_until(raw_root, ds)
    if not parts:
        raise MissingInput(f"no event partitions on or before {ds} under {raw_root}/events")
    from vrec.spark.rawread import read_raw

    files = [f for p in parts for f in data_files(partition_dir(raw_root, "events", p))]
    df = read_raw(spark, "events", files, base=Path(raw_root) / "events")
    _require_columns(df, S.RAW["events"].required(), f"events partitions up to ds={ds}")
    return df.select(
        F.col(C.USER_ID).cast("string").alias(C.USER_ID),
        F.col(C.ITEM_ID).cast("string").alias(C.ITEM_ID),
        F.col(C.EVENT_TYPE).cast("string").alias(C.EVENT_TYPE), F.col(C.VALUE).cast("double").alias(C.VALUE),
        F.col(C.TS).cast("timestamp").alias(C.TS),
        F.col(C.LIST_DS).cast("string").alias(C.LIST_DS),
        F.col(C.POSITION).cast("int").alias(C.POSITION),
        F.col(C.SURFACE).cast("string").alias(C.SURFACE),
        F.date_format(F.col("ds"), "yyyy-MM-dd").alias("landed_ds"))


def load_catalog(spark, raw_root: str | Path, ds: str, *, required: bool = True):
    """The catalog snapshot a run for ``ds`` uses (that day's or the latest before), in
    the contract's types. ``required``: a missing contract column is an error (else the
    columns present are returned, for the validation suite to name what is missing)."""
    from vrec.spark.rawread import read_raw

    snap = catalog_snapshot_ds(raw_root, ds)
    files = data_files(partition_dir(raw_root, "catalog", snap))
    if not files:
        raise MissingInput(f"catalog snapshot ds={snap} under {raw_root}/catalog has no "
                                "Parquet data files")
    df = read_raw(spark, "catalog", files)
    if not required:
        return df
    _require_columns(df, S.RAW["catalog"].required(), f"catalog snapshot ds={snap}")
    return df.select(*S.RAW["catalog"].names())


def mark_blocked(catalog, rules: BusinessRules):
    """The catalog with ``blocked``: why the item is never recommended this night
    (``unavailable`` when ``available`` is false, then ``excluded_item`` and
    ``excluded_category`` from the rules file), null when it may be."""
    from pyspark.sql import functions as F

    reason = F.when(F.col(C.AVAILABLE) == F.lit(False), F.lit("unavailable"))
    if rules.excluded_items:
        reason = reason.when(F.col(C.ITEM_ID).isin(*sorted(rules.excluded_items)),
                             F.lit("excluded_item"))
    if rules.excluded_categories:
        reason = reason.when(F.col(C.CATEGORY).isin(*sorted(rules.excluded_categories)),
                             F.lit("excluded_category"))
    return catalog.withColumn("blocked", reason.cast("string"))


def dedupe_catalog(catalog):
    """Keep one row per item_id (latest updated_at); return (catalog, quarantine rows)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(C.ITEM_ID).orderBy(F.col(C.UPDATED_AT).desc_nulls_last(), F.col(C.TITLE))
    ranked = catalog.where(F.col(C.ITEM_ID).isNotNull()).withColumn("_rn", F.row_number().over(w))
    good = ranked.where("_rn = 1").drop("_rn")
    bad = ranked.where("_rn > 1").select(F.col(C.ITEM_ID).alias("key"),
                                          F.lit(S.reason("catalog", "duplicate_item_id")).alias("reason"))
    nulls = catalog.where(F.col(C.ITEM_ID).isNull()).select(
        F.coalesce(F.col(C.TITLE), F.lit("")).alias("key"), F.lit(S.reason("catalog", "null_item_id")).alias("reason"))
    return good, bad.unionByName(nulls)


def clean_events(events, catalog, ds: str, weights: EventWeights | None = None):
    """Split events into (good, bad). ``bad`` has key, reason, landed_ds.

    A rating outside ``weights``' rating scale (min, max, step) is
    ``rating_out_of_range``.

    Only partitions landed on or before ``ds`` count. Each rejected row gets the first
    failing reason in ``vrec.schemas.QUARANTINE_REASONS['events']`` order; an event stamped at or after the end
    of its landing day is ``future_timestamp`` (so a run never uses its own future).
    """
    return split_events(classify_events(events, catalog, ds, weights))


def split_events(classified):
    """(good, bad) of :func:`classify_events`' rows: good events in the input's columns,
    and the bad ones as quarantine rows (key, reason, landed_ds)."""
    from pyspark.sql import functions as F

    good = classified.where(F.col("_reason").isNull()).drop("_reason")
    key = F.concat_ws("|", *[F.coalesce(F.col(c).cast("string"), F.lit("null"))
                             for c in (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS)])
    bad = classified.where(F.col("_reason").isNotNull()).select(
        key.alias("key"), F.col("_reason").alias("reason"), "landed_ds")
    return good, bad


def classify_events(events, catalog, ds: str, weights: EventWeights | None = None):
    """The events landed on or before ``ds`` with ``_reason``: null for a good event,
    else its quarantine reason (:func:`clean_events`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    landed_end = F.to_timestamp(F.date_add(F.to_date(F.col("landed_ds")), 1))
    # partitions landed after ds are not the run's; every event with ts at or after the
    # end of its landing day is quarantined (future_timestamp), so nothing in the run's
    # future can be used: ts >= end of ds implies ts >= end of its landing day
    ev = events.where(F.col("landed_ds") <= F.lit(ds))
    known = catalog.select(F.col(C.ITEM_ID).alias("_known")).distinct()
    ev = ev.join(known, ev[C.ITEM_ID] == known["_known"], "left")
    # a duplicate is a later-landed copy of the same (user, item, type, ts). The rows are
    # hash-partitioned by user first, which the window's grouping accepts, so the cached
    # rows stay partitioned by user and every later aggregation by user, (user, item) or
    # (item, user) reads them without a shuffle.
    ev = ev.repartition(C.USER_ID)
    w = Window.partitionBy(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS).orderBy(F.col("landed_ds"))
    weights = weights or EventWeights()
    value = F.col(C.VALUE)
    off_scale = (value < F.lit(weights.rating_min)) | (value > F.lit(weights.rating_max))
    if weights.rating_step:
        steps = (value - F.lit(weights.rating_min)) / F.lit(weights.rating_step)
        off_scale = off_scale | (F.abs(steps - F.round(steps)) > F.lit(weights.STEP_TOLERANCE))
    ev = ev.withColumn("_dup", F.row_number().over(w))
    failing = {
        "null_user_id": F.col(C.USER_ID).isNull(),
        "null_item_id": F.col(C.ITEM_ID).isNull(),
        "null_ts": F.col(C.TS).isNull(),
        "unknown_event_type": ~F.col(C.EVENT_TYPE).isin(*C.EVENT_TYPES)
        | F.col(C.EVENT_TYPE).isNull(),
        "future_timestamp": F.col(C.TS) >= landed_end,
        "rating_without_value": (F.col(C.EVENT_TYPE) == "rating") & F.col(C.VALUE).isNull(),
        "rating_out_of_range": (F.col(C.EVENT_TYPE) == "rating") & off_scale,
        "unknown_item_id": F.col("_known").isNull(),
        "duplicate_event": F.col("_dup") > 1,
    }
    reason = None  # the first failing reason, in the vocabulary's order
    for name in S.QUARANTINE_REASONS["events"]:
        reason = (F if reason is None else reason).when(failing.pop(name), name)
    if failing:  # a test assigned here must be in the vocabulary (vrec/schemas.py)
        raise AssertionError(f"event reasons missing from vrec.schemas: {sorted(failing)}")
    return ev.withColumn("_reason", reason).drop("_known", "_dup")


def event_weight_expr(weights: EventWeights, ds: str | None = None):
    """Spark column: the weight of one event (docs/ranking.md, "Interaction weighting").

    ``type_weight`` by event type; ``rating`` events weigh ``rating * value / 5`` at or
    above ``min_rating`` and ``low_rating_weight`` times that below it. With
    ``half_life_days`` and ``ds``, multiplied by ``0.5 ** (age_days / half_life_days)``
    where age is measured from the end of ds (events in the future of ds never reach here).
    """
    from pyspark.sql import functions as F

    et = F.col(C.EVENT_TYPE)
    base = F.lit(weights.rating) * F.col(C.VALUE) / 5.0
    rating_w = F.when(F.col(C.VALUE) >= weights.min_rating, base).otherwise(
        base * F.lit(weights.low_rating_weight))
    w = (F.when(et == "view", weights.view).when(et == "click", weights.click)
         .when(et == "add_to_cart", weights.add_to_cart)
         .when(et == "purchase", weights.purchase)
         .when(et == "rating", rating_w).otherwise(0.0))
    if ds is not None and (weights.half_life_days or weights.history_days):
        end = end_of_ds(ds)
        age_days = (F.lit(end).cast("double") - F.col(C.TS).cast("double")) / 86400.0
        if weights.half_life_days:
            w = w * F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / weights.half_life_days)
        if weights.history_days:
            w = F.when(age_days <= weights.history_days, w).otherwise(F.lit(0.0))
    return w


def item_popularity(good_events, catalog, ds: str, half_life_days: float):
    """item_popularity for ds: per item with events, distinct users in the last 1, 7 and
    30 days, events in the last 7 and 30 days, ``trend_7d`` = daily users of the last 7
    days over daily users of the last 30 (1 = steady, > 1 rising; null without users in
    30 days), ``trending_score`` = sum over users of ``0.5 ** (age_days / half_life)``
    of their latest event on the item, and ``trending_rank`` (1 = most trending)."""
    from pyspark.sql import functions as F

    ev = good_events.withColumn("age", _age_days(C.TS, ds))
    pairs = ev.groupBy(C.ITEM_ID, C.USER_ID).agg(
        F.min("age").alias("age"),
        F.sum(F.when(F.col("age") < 7, 1).otherwise(0)).alias("e7"),
        F.sum(F.when(F.col("age") < 30, 1).otherwise(0)).alias("e30"))

    def users_within(days: int):
        return F.sum(F.when(F.col("age") < days, 1).otherwise(0)).cast("long")

    pop = pairs.groupBy(C.ITEM_ID).agg(
        users_within(1).alias("users_1d"), users_within(7).alias("users_7d"),
        users_within(30).alias("users_30d"), F.count("*").alias("users_all"),
        F.sum("e7").cast("long").alias("events_7d"), F.sum("e30").cast("long").alias("events_30d"),
        _trending_score(half_life_days))
    pop = pop.withColumn("trend_7d", F.when(
        F.col("users_30d") > 0, (F.col("users_7d") / 7.0) / (F.col("users_30d") / 30.0)))
    return (_with_trending_rank(pop.join(catalog.select(C.ITEM_ID, C.CATEGORY), C.ITEM_ID, "left"))
            .select(C.ITEM_ID, C.CATEGORY, "users_1d", "users_7d", "users_30d", "users_all",
                    "events_7d", "events_30d", "trend_7d", "trending_score", "trending_rank"))


def trending_order(pairs, ds: str, half_life_days: float):
    """item_popularity's trending order as of the end of ds from the pairs that
    :func:`aggregate_interactions` gives for the events before it (a pair's
    ``last_ts`` is its user's latest event on the item, whose age the score decays):
    (item_id, trending_rank) of every item with a pair, the same scores and ranks that
    :func:`item_popularity` gives for those events, found from the pairs rather than
    by aggregating the events again (a forward window's trending order)."""
    from pyspark.sql import functions as F

    pop = (pairs.select(C.ITEM_ID, _age_days("last_ts", ds).alias("age"))
           .groupBy(C.ITEM_ID).agg(F.count("*").alias("users_all"),
                                   _trending_score(half_life_days)))
    return _with_trending_rank(pop).select(C.ITEM_ID, "trending_rank")


def _age_days(ts: str, ds: str):
    """Days from the timestamp column ``ts`` to the end of ds."""
    from pyspark.sql import functions as F

    return (F.lit(end_of_ds(ds)).cast("double") - F.col(ts).cast("double")) / 86400.0


def _trending_score(half_life_days: float):
    """The trending score over (item, user) rows with their latest event's ``age``."""
    from pyspark.sql import functions as F

    return F.sum(F.pow(F.lit(0.5), F.greatest(F.col("age"), F.lit(0.0)) / half_life_days)
                 ).alias("trending_score")


def _with_trending_rank(pop):
    """``pop`` (per item: trending_score, users_all) with ``trending_rank``: by score,
    then users, then item id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.orderBy(F.col("trending_score").desc(), F.col("users_all").desc(), F.col(C.ITEM_ID))
    return pop.withColumn("trending_rank", F.row_number().over(w))


def user_profile(good_events, interactions, catalog, top_n: int = 3):
    """user_profile: per user seen up to ds, events, distinct items, first and last
    activity, the ``top_n`` categories by events, ``history_items`` (pairs with weight
    > 0, what the model and the visual profile use) and ``segment`` (``cold`` when
    ``history_items`` is 0: such users get trending lists)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    base = good_events.groupBy(C.USER_ID).agg(
        F.count("*").alias("events"), F.countDistinct(C.ITEM_ID).alias("items"),
        F.min(C.TS).alias("first_active"), F.max(C.TS).alias("last_active"))
    cats = (good_events.join(catalog.select(C.ITEM_ID, C.CATEGORY), C.ITEM_ID)
            .where(F.col(C.CATEGORY).isNotNull())
            .groupBy(C.USER_ID, C.CATEGORY).agg(F.count("*").alias("n")))
    w = Window.partitionBy(C.USER_ID).orderBy(F.col("n").desc(), F.col(C.CATEGORY))
    top = (cats.withColumn("r", F.row_number().over(w)).where(F.col("r") <= top_n)
           .groupBy(C.USER_ID).agg(F.array_sort(F.collect_list(F.struct("r", C.CATEGORY)))
                                   .alias("s"))
           .select(C.USER_ID, F.col("s." + C.CATEGORY).alias("top_categories")))
    hist = interactions.groupBy(C.USER_ID).agg(
        F.sum(F.when(F.col("weight") > 0, 1).otherwise(0)).cast("long").alias("history_items"))
    out = base.join(top, C.USER_ID, "left").join(hist, C.USER_ID, "left").fillna(
        0, subset=["history_items"])
    return out.select(
        C.USER_ID, "events", "items", "first_active", "last_active",
        F.coalesce(F.col("top_categories"), F.array().cast("array<string>")).alias("top_categories"),
        "history_items",
        F.when(F.col("history_items") > 0, "warm").otherwise("cold").alias("segment"))


def aggregate_interactions(good_events, weights: EventWeights, ds: str | None = None):
    """(user_id, item_id, weight, n_events, last_ts, purchased, event_types) per pair.

    Events reach here already de-duplicated (``clean_events``) and of the engagement
    types only (``C.ENGAGEMENT_TYPES``: build_interactions splits the feedback types
    off, and the staged events hold no others). Pairs whose weight is 0 (e.g. only low
    ratings) are kept so scoring can still exclude them as seen; training uses weight >
    0 only. ``event_types`` (sorted distinct types) lets scoring decide which event types
    make an item "seen": each type is one bit, OR-ed per pair and spelled out after, so
    that every aggregate is a fixed-width one (a set of strings per pair made Spark fall
    back to its slower object aggregation: 2.5x the time at 10M events).
    """
    from pyspark.sql import functions as F

    types = sorted(C.ENGAGEMENT_TYPES)
    bit = F.lit(0)
    for i, name in enumerate(types):
        bit = F.when(F.col(C.EVENT_TYPE) == name, F.lit(1 << i)).otherwise(bit)
    spelled = F.array(*[F.when(F.col("types").bitwiseAND(1 << i) != 0, F.lit(name))
                        for i, name in enumerate(types)])
    return (good_events.withColumn("w", event_weight_expr(weights, ds))
            .withColumn("type_bit", bit)
            .groupBy(C.USER_ID, C.ITEM_ID)
            .agg(F.sum("w").alias("weight"), F.count("*").alias("n_events"),
                 F.max(C.TS).alias("last_ts"),
                 F.max(F.when(F.col(C.EVENT_TYPE) == "purchase", True).otherwise(False))
                 .alias("purchased"),
                 F.bit_or("type_bit").alias("types"))
            .withColumn("event_types", F.filter(spelled, lambda t: t.isNotNull()))
            .drop("types"))


def reconcile(landed: int, rejected: int, used: int, quarantined: int) -> dict:
    """One source's row accounting for a run: ``landed`` data rows plus ``rejected`` rows
    the adapter set aside must equal ``used`` plus ``quarantined`` (which includes the
    rejects)."""
    return {"landed": landed + rejected, "rejected_at_landing": rejected, "used": used,
            "quarantined": quarantined, "balanced": landed + rejected == used + quarantined}


def run_build_interactions(spark, raw_root: str | Path, ds: str, weights: EventWeights,
                           rules: BusinessRules | None = None,
                           feedback_days: int = 0) -> dict:
    """Compute the run's interactions, catalog and quarantine frames (not yet written).

    Clean events split by type: engagements (``events``: the only signal) and the
    impressions and dismisses of the last ``feedback_days`` days (``feedback``); the
    catalog carries ``blocked`` (:func:`mark_blocked` with ``rules``).

    ``events_quarantine`` and ``catalog_quarantine`` are pandas frames (key, reason,
    landed_ds, detail) of every row dropped from the run's input, the adapters' rejects
    included; ``reconciliation`` is :func:`reconcile` per source; ``events_landed_today``
    counts the rows landed in ds's own partition."""
    import pandas as pd
    from pyspark.sql import functions as F

    from vrec.io.rawio import read_rejects

    raw_catalog = load_catalog(spark, raw_root, ds).cache()
    catalog, cat_bad = dedupe_catalog(raw_catalog)
    catalog = mark_blocked(catalog, rules or BusinessRules()).cache()
    events = load_events(spark, raw_root, ds)  # classify_events keeps landed_ds <= ds
    # every event read once: its reason (null: good) cached, then split and counted
    classified = classify_events(events, catalog, ds, weights).cache()
    good, bad = split_events(classified)
    since = end_of_ds(ds) - dt.timedelta(days=feedback_days)
    feedback = good.where(F.col(C.EVENT_TYPE).isin(*C.FEEDBACK_TYPES) & (F.col(C.TS) >= F.lit(since)))
    good = good.where(F.col(C.EVENT_TYPE).isin(*C.ENGAGEMENT_TYPES))
    inter = aggregate_interactions(good, weights, ds)
    snap = catalog_snapshot_ds(raw_root, ds)
    ev_rej = _rejects_frame(read_rejects(raw_root, "events", event_partitions_until(raw_root, ds)))
    cat_rej = _rejects_frame(read_rejects(raw_root, "catalog", [snap]))
    ev_q = pd.concat([bad.toPandas().assign(detail=None), ev_rej], ignore_index=True)
    cat_q = pd.concat([cat_bad.toPandas().assign(landed_ds=snap, detail=None), cat_rej],
                      ignore_index=True)
    # rows landed (in all partitions read, and in ds's own) and rows used, in one job
    counts = (classified.groupBy((F.col("landed_ds") == ds).alias("today"),
                                 F.col("_reason").isNull().alias("used")).count().collect())
    landed = {today: sum(r["count"] for r in counts if r["today"] == today)
              for today in (True, False)}
    n_used = sum(r["count"] for r in counts if r["used"])
    n_cat = catalog.count()
    recon = {
        "events": reconcile(sum(landed.values()), len(ev_rej), n_used, len(ev_q)),
        "catalog": reconcile(raw_catalog.count(), len(cat_rej), n_cat, len(cat_q)),
    }
    return {"catalog": catalog, "events": good, "interactions": inter, "feedback": feedback,
            "events_quarantine": ev_q, "catalog_quarantine": cat_q, "reconciliation": recon,
            "events_used": n_used, "events_landed_today": int(landed.get(True, 0))}


def _rejects_frame(rejects):
    """Adapter rejects as quarantine rows: key = file:line, detail = why and the text."""
    return rejects.assign(key=rejects["file"].astype(str) + ":" + rejects["line"].astype(str),
                          detail=rejects["detail"].astype(str) + " | " + rejects["raw"].astype(str),
                          found_by="landing")[["key", "reason", "found_by", "landed_ds", "detail"]]

"""Each Spark stage on tiny data with the shared session, then validation and publish."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EventWeights
from vrec.executor import RunLayout, run_stage
from vrec.io import warehouse as W
from vrec.io.validation import ValidationFailed
from vrec.spark.interactions import aggregate_interactions, clean_events
from vrec.stages import NAMES

from .conftest import TINY, settings_for

DS = TINY.end_date.isoformat()
PREV = (TINY.end_date - dt.timedelta(days=1)).isoformat()


def _ts(s):
    return pd.Timestamp(s, tz="UTC").to_pydatetime()


def test_clean_events_quarantines_each_bad_row_with_its_reason(spark):
    rows = [
        ("u1", "i1", "view", None, _ts("2026-11-20 10:00"), "2026-11-20"),   # good
        ("u1", "i1", "view", None, _ts("2026-11-20 10:00"), "2026-11-20"),   # duplicate
        (None, "i1", "click", None, _ts("2026-11-20 11:00"), "2026-11-20"),  # null user
        ("u2", "i1", "teleport", None, _ts("2026-11-20 11:00"), "2026-11-20"),
        ("u2", "nope", "view", None, _ts("2026-11-20 12:00"), "2026-11-20"),
        ("u2", "i1", "rating", None, _ts("2026-11-20 12:00"), "2026-11-20"),
        ("u3", "i1", "view", None, _ts("2026-11-20 12:00"), "2026-11-19"),   # landed a day early: future
        ("u3", "i1", "view", None, _ts("2026-11-21 01:00"), "2026-11-21"),   # landed after ds: not read
        ("u4", "i1", "view", None, _ts("2026-11-22 01:00"), "2026-11-20"),   # stamped after ds: future
        ("u5", "i1", "rating", 7.5, _ts("2026-11-20 13:00"), "2026-11-20"),  # above the scale
        ("u5", "i1", "rating", -1.0, _ts("2026-11-20 14:00"), "2026-11-20"),  # below it
        ("u5", "i1", "rating", 3.5, _ts("2026-11-20 15:00"), "2026-11-20"),  # good
    ]
    ev = spark.createDataFrame(rows, "user_id string, item_id string, event_type string, "
                                     "value double, ts timestamp, landed_ds string")
    cat = spark.createDataFrame([("i1",)], "item_id string")
    good, bad = clean_events(ev, cat, "2026-11-20")
    assert good.count() == 2
    reasons = sorted(r.reason for r in bad.collect())
    assert reasons == sorted(["duplicate_event", "null_user_id", "unknown_event_type",
                              "unknown_item_id", "rating_without_value", "future_timestamp",
                              "future_timestamp", "rating_out_of_range",
                              "rating_out_of_range"])
    # a scale with a step: 3.5 is off a whole-star scale
    stars = EventWeights(rating_min=1.0, rating_max=5.0, rating_step=1.0)
    _, bad = clean_events(ev, cat, "2026-11-20", stars)
    assert sorted(r.reason for r in bad.collect()).count("rating_out_of_range") == 3


def test_a_late_copy_of_an_event_is_the_duplicate_and_the_pairs_need_no_shuffle(spark, tmp_path):
    """The copy landed first is kept, though the later one comes first; the classified
    events are partitioned by user, so the pairs and the popularity's per-pair counts are
    aggregated where they lie (no Exchange between the cached rows and the aggregate)."""
    from vrec.spark.interactions import classify_events, item_popularity, split_events

    rows = [("u1", "i1", "view", None, _ts("2026-11-18 10:00"), "2026-11-19"),   # late copy
            ("u1", "i1", "view", None, _ts("2026-11-18 10:00"), "2026-11-18"),   # kept
            ("u1", "i1", "click", None, _ts("2026-11-18 10:00"), "2026-11-18"),  # other type
            ("u1", "i2", "view", None, _ts("2026-11-18 10:00"), "2026-11-18"),   # other item
            ("u2", "i1", "view", None, _ts("2026-11-18 10:00"), "2026-11-19"),   # other user
            ("u2", "i1", "view", None, _ts("2026-11-18 10:01"), "2026-11-18")]   # other ts
    # read from Parquet, as the stage reads them (sizes known: the catalog's ids broadcast)
    spark.createDataFrame(rows, "user_id string, item_id string, event_type string, "
                                "value double, ts timestamp, landed_ds string") \
        .write.parquet(str(tmp_path / "events"))
    spark.createDataFrame([("i1", "c"), ("i2", "c")], "item_id string, category string") \
        .write.parquet(str(tmp_path / "catalog"))
    ev, cat = (spark.read.parquet(str(tmp_path / t)) for t in ("events", "catalog"))
    # as in the stage, the cache is filled first and the aggregates planned after; one
    # coalesced partition would satisfy any partitioning, so AQE keeps the two here
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    try:
        classified = classify_events(ev, cat, "2026-11-20").cache()
        good, bad = split_events(classified)
        assert [(r.reason, r.landed_ds) for r in bad.collect()] == \
            [("duplicate_event", "2026-11-19")]
        assert good.count() == 5

        def above_cache(df) -> str:
            plan = df._jdf.queryExecution().executedPlan().toString()
            return plan[:plan.index("InMemoryRelation")]

        assert "Exchange" not in above_cache(aggregate_interactions(good, EventWeights()))
        # the per-pair counts read the cache in place; only the per-item sums move
        popularity = above_cache(item_popularity(good, cat, "2026-11-20", 7.0))
        assert "Exchange hashpartitioning(item_id" in popularity
        assert "Exchange hashpartitioning(user_id" not in popularity
        classified.unpersist()
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")


def test_weights_hand_example(spark):
    rows = [("u", "a", "view", None), ("u", "a", "click", None), ("u", "a", "purchase", None),
            ("u", "b", "rating", 5.0), ("u", "c", "rating", 2.0)]
    ev = spark.createDataFrame([(*r, _ts("2026-11-20")) for r in rows],
                               "user_id string, item_id string, event_type string, value double, ts timestamp")
    got = {r.item_id: (r.weight, r.n_events, r.purchased)
           for r in aggregate_interactions(ev, EventWeights()).collect()}
    assert got["a"] == (1 + 2 + 8, 3, True)
    assert got["b"] == (2.0 * 5 / 5, 1, False)
    assert got["c"] == (0.0, 1, False)  # below min_rating: kept as seen, weight 0


@pytest.fixture(scope="module")
def staged(spark, tiny_raw, tmp_path_factory):
    """The whole stage chain for two days on (a copy of) the tiny sample, shared by the
    tests below. Between the days the simulated front end lands the next day's
    impressions, clicks and dismisses of the first day's lists, and the day's catalog
    makes the first day's five most-recommended items unavailable; rotation rests an item
    after one unengaged show."""
    import shutil

    from vrec.data.frontend import simulate_front_end
    from vrec.io.rawio import partition_dir, write_catalog_snapshot

    tmp = tmp_path_factory.mktemp("stages")
    raw = tmp / "raw"
    shutil.copytree(tiny_raw, raw, symlinks=True)
    s = settings_for(raw, tmp / "wh", tmp)
    # a history window of 1.5 days leaves some sample users without history: cold users
    # and the cold-start map may fit on items with one user (few items here)
    s = s.model_copy(update={"weights": EventWeights(history_days=1.5),
                             "recs": s.recs.model_copy(update={"map_min_users": 1}),
                             "eval": s.eval.model_copy(update={"gate_min_users": 5}),
                             "feedback": s.feedback.model_copy(update={"max_unengaged_shows": 1})})
    results = {}
    # the two tiny days are too noisy to compare (a few test users each): the gate's own
    # tests are below
    params = {"override_gate": True, "override_reason": "tiny sample"}
    for ds in (PREV, DS):
        results[ds] = {name: run_stage(s, name, ds, spark=spark, params=params) for name in NAMES}
        if ds == PREV:
            results["front_end"] = simulate_front_end(raw, s.paths.warehouse_root, PREV, seed=3,
                                                      dismiss_share=0.3)
            top = W.read_table(s.paths.warehouse_root, "user_recs", PREV)[C.ITEM_ID] \
                .value_counts().index[:5].tolist()
            cat = pd.read_parquet(partition_dir(raw, "catalog", DS))
            cat[C.AVAILABLE] = cat[C.AVAILABLE] & ~cat[C.ITEM_ID].isin(top)
            write_catalog_snapshot(raw, DS, cat)
            results["made_unavailable"] = top
    return s, results


def test_as_of_interactions_never_read_the_future(staged, tiny_raw):
    s, _ = staged
    inter = pd.read_parquet(W.run_dir(s.paths.warehouse_root, PREV) / "interactions")
    end = pd.Timestamp(DS, tz="UTC")
    assert (pd.to_datetime(inter["last_ts"], utc=True) < end).all()
    today = pd.read_parquet(tiny_raw / "events" / f"ds={DS}")
    only_today = set(zip(today[C.USER_ID], today[C.ITEM_ID])) - set(
        zip(inter[C.USER_ID], inter[C.ITEM_ID]))
    assert only_today, "the later day must add pairs the earlier run did not see"


def test_embedding_is_incremental(staged):
    s, res = staged
    first, second = res[PREV]["embed_items"], res[DS]["embed_items"]
    assert first["embedded_new"] > 30 and first["reused"] == 0
    assert second["embedded_new"] < first["embedded_new"] / 4
    assert second["reused"] >= first["embedded_new"] - 1
    vec = pd.read_parquet(W.run_dir(s.paths.warehouse_root, DS) / "item_vectors")
    norms = np.linalg.norm(np.stack(vec["embedding"]), axis=1)
    assert np.allclose(norms, 1, atol=1e-4) and len(vec["embedding"].iloc[0]) == 1280


def test_bad_images_are_quarantined_not_fatal(staged):
    s, _ = staged
    q = W.read_table(s.paths.warehouse_root, "quarantine", DS)
    img = q[q["source"] == "images"]
    assert {"no_image_uri", "undecodable_image"} <= set(img["reason"])
    assert (q[q["source"] == "events"]["reason"].isin(
        ["unknown_item_id", "null_user_id", "duplicate_event"])).all()


def test_recs_cover_every_user_with_k_unseen_catalog_items(staged):
    s, _ = staged
    wh, k = s.paths.warehouse_root, s.recs.k
    recs = W.read_table(wh, "user_recs", DS)
    inter = pd.read_parquet(W.run_dir(wh, DS) / "interactions")
    assert set(recs[C.USER_ID]) == set(inter[C.USER_ID])
    assert (recs.groupby(C.USER_ID)["rank"].apply(lambda r: sorted(r) == list(range(1, k + 1)))).all()
    seen = set(zip(inter[C.USER_ID], inter[C.ITEM_ID]))
    assert not seen & set(zip(recs[C.USER_ID], recs[C.ITEM_ID]))
    items = W.read_table(wh, "items", DS)
    assert set(recs[C.ITEM_ID]) <= set(items[C.ITEM_ID])
    sims = W.read_table(wh, "item_similar", DS)
    assert sims["similarity"].between(-1, 1).all() and (sims[C.ITEM_ID] != sims["similar_item_id"]).all()


def test_item_similar_finds_same_category_lookalikes(staged):
    """The synthetic photos encode category by shape: visual neighbours share it."""
    s, _ = staged
    wh = s.paths.warehouse_root
    sims = W.read_table(wh, "item_similar", DS)
    cat = W.read_table(wh, "items", DS).set_index(C.ITEM_ID)[C.CATEGORY]
    top1 = sims[sims["rank"] == 1]
    same = (top1[C.ITEM_ID].map(cat) == top1["similar_item_id"].map(cat)).mean()
    chance = (cat.value_counts(normalize=True) ** 2).sum()
    assert same > 2 * chance


def test_run_stats_record_every_stage(staged):
    s, _ = staged
    stats = W.read_table(s.paths.warehouse_root, "run_stats", DS)
    assert set(stats["stage"]) == set(NAMES[:NAMES.index("publish")])  # no pseudo-stage rows
    assert (stats["seconds"] >= 0).all()


def _validate_broken_recs(s, spark, ids: list, match: str) -> None:
    """validate_outputs on the staged user_recs with its first rows' items replaced by
    ``ids`` must fail matching ``match``; the staging is restored and validated again."""
    folder = RunLayout(s.paths.warehouse_root, DS).path("user_recs")
    original = {p: p.read_bytes() for p in folder.glob("*.parquet")}
    try:
        df = pd.read_parquet(folder)
        df.loc[df.index[:len(ids)], C.ITEM_ID] = ids
        for p in original:
            p.unlink()
        df.to_parquet(folder / "part-broken.parquet", index=False)
        with pytest.raises(ValidationFailed, match=match):
            run_stage(s, "validate_outputs", DS, spark=spark)
        assert RunLayout(s.paths.warehouse_root, DS).record("validate_outputs")["status"] == "failed"
    finally:
        for p in folder.glob("*.parquet"):
            p.unlink()
        for p, data in original.items():
            p.write_bytes(data)
    run_stage(s, "validate_outputs", DS, spark=spark)  # the record the later tests need


def test_validate_outputs_fails_on_broken_recs_and_names_the_expectation(staged, spark):
    s, _ = staged
    _validate_broken_recs(s, spark, ["not-in-catalog"] * 3,
                          r"user_recs: expect_column_values_to_be_in_set .*known_item.* observed 3 unexpected")


def test_cold_users_get_unseen_trending_lists_in_their_categories(staged):
    s, _ = staged
    wh, k = s.paths.warehouse_root, s.recs.k
    prof = W.read_table(wh, "user_profile", DS)
    recs = W.read_table(wh, "user_recs", DS)
    cold = prof[prof["segment"] == "cold"]
    assert 0 < len(cold) < len(prof)
    assert (cold["history_items"] == 0).all() and (prof.loc[prof["segment"] == "warm",
                                                            "history_items"] > 0).all()
    cat = W.read_table(wh, "items", DS).set_index(C.ITEM_ID)[C.CATEGORY]
    inter = pd.read_parquet(W.run_dir(wh, DS) / "interactions")
    seen = set(zip(inter[C.USER_ID], inter[C.ITEM_ID]))
    for _, u in cold.iterrows():
        rows = recs[recs[C.USER_ID] == u[C.USER_ID]].sort_values("rank")
        assert len(rows) == k and set(rows["reason"]) == {C.REASON_TRENDING}
        assert not {(u[C.USER_ID], i) for i in rows[C.ITEM_ID]} & seen
        # trending inside the categories they touched comes first
        assert rows[C.ITEM_ID].map(cat).iloc[0] in set(u["top_categories"])
    warm = recs[~recs[C.USER_ID].isin(cold[C.USER_ID])]
    assert (warm["reason"] != C.REASON_TRENDING).mean() > 0.9


def test_item_popularity_and_user_profile_match_the_interactions(staged):
    s, _ = staged
    wh = s.paths.warehouse_root
    pop = W.read_table(wh, "item_popularity", DS)
    assert list(pop.columns[1:]) == S.ITEM_POPULARITY.names()
    assert sorted(pop["trending_rank"]) == list(range(1, len(pop) + 1))
    assert pop.sort_values("trending_rank")["trending_score"].is_monotonic_decreasing
    assert ((pop["users_1d"] <= pop["users_7d"]) & (pop["users_7d"] <= pop["users_30d"])).all()
    inter = pd.read_parquet(W.run_dir(wh, DS) / "interactions")
    assert pop.set_index(C.ITEM_ID)["users_all"].sort_index().to_dict() == \
        inter.groupby(C.ITEM_ID)[C.USER_ID].nunique().sort_index().to_dict()
    prof = W.read_table(wh, "user_profile", DS).set_index(C.USER_ID)
    assert list(prof.columns[1:]) == S.USER_PROFILE.names()[1:]
    assert prof["items"].sort_index().to_dict() == \
        inter.groupby(C.USER_ID)[C.ITEM_ID].nunique().sort_index().to_dict()
    last = pd.to_datetime(inter.groupby(C.USER_ID)["last_ts"].max(), utc=True)
    assert (pd.to_datetime(prof["last_active"], utc=True).sort_index() == last.sort_index()).all()


def test_run_stats_details_record_coverage_blend_and_the_cold_start_map(staged):
    import json

    s, _ = staged
    wh = s.paths.warehouse_root
    stats = W.read_table(wh, "run_stats", DS).set_index("stage")
    d = json.loads(stats.loc["build_recs", "details"])
    recs = W.read_table(wh, "user_recs", DS)
    items = W.read_table(wh, "items", DS)
    assert d["coverage"] == round(recs[C.ITEM_ID].nunique() / len(items), 4)
    assert sum(d["reasons"].values()) == len(recs)
    assert d["reasons"] == recs["reason"].value_counts().to_dict()
    assert set(d["blend"]) == {"visual_weight", "history_shrink", "tuned"}
    # the version names what ranked: the learned ranker (its record) or the blend
    ranker = json.loads(stats.loc["train_cf", "details"])["ranker"]
    assert d["ranked_by"] == ("ranker" if (ranker.get("chosen") or {}).get("use") else "hybrid")
    assert recs["model_version"].str.endswith(
        f"+ranker{ranker.get('id')}" if d["ranked_by"] == "ranker" else
        f"+vw{d['blend']['visual_weight']:g}h{d['blend']['history_shrink']:g}").all()
    q = d["cold_start_map"]
    assert q is not None and {"r2", "cosine", "auc_mapped", "auc_true_factors"} <= set(q)
    tuned = json.loads(stats.loc["train_cf", "details"])["blend"]
    assert tuned is not None and "grid" in tuned


def test_validate_inputs_fails_on_missing_column(tmp_path, tiny_raw, spark):
    import shutil
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw / "catalog", raw / "catalog")
    (raw / "events" / f"ds={DS}").mkdir(parents=True)
    ev = pd.read_parquet(tiny_raw / "events" / f"ds={DS}").drop(columns=[C.EVENT_TYPE])
    ev.to_parquet(raw / "events" / f"ds={DS}" / "part-0.parquet", index=False)
    s = settings_for(raw, tmp_path / "wh", tmp_path)
    with pytest.raises(ValidationFailed, match="expect_column_to_exist.*event_type"):
        run_stage(s, "validate_inputs", DS, spark=spark)


def test_duplicate_cache_rows_do_not_duplicate_vectors(staged, spark):
    """Regression: a backfill beside the nightly run can append the same key twice."""
    from vrec.spark.embed import append_to_cache, cache_dir, run_embed_items

    s, _ = staged
    wh = s.paths.warehouse_root
    rows = pd.concat(pd.read_parquet(p) for p in cache_dir(wh).glob("*.parquet"))
    append_to_cache(rows, wh, DS)
    catalog = spark.read.parquet(str(RunLayout(wh, DS).path("catalog")))
    res = run_embed_items(spark, catalog, warehouse=wh, image_root=s.paths.image_root,
                          embed=s.embed, ds=DS)
    assert res["embedded_new"] == 0
    assert res["vectors"][C.ITEM_ID].is_unique


def test_item_popularity_windows_hand_example(spark):
    from vrec.spark.interactions import item_popularity

    end = pd.Timestamp("2026-11-21", tz="UTC")
    rows = [("a", "x", end - pd.Timedelta(hours=2)), ("a", "x", end - pd.Timedelta(days=3)),
            ("b", "x", end - pd.Timedelta(days=10)), ("c", "y", end - pd.Timedelta(days=40))]
    ev = spark.createDataFrame([(u, i, t.to_pydatetime()) for u, i, t in rows],
                               "user_id string, item_id string, ts timestamp")
    cat = spark.createDataFrame([("x", "shoes"), ("y", "bags")], "item_id string, category string")
    got = {r.item_id: r for r in item_popularity(ev, cat, "2026-11-20", 7.0).collect()}
    x, y = got["x"], got["y"]
    assert (x.users_1d, x.users_7d, x.users_30d, x.users_all) == (1, 1, 2, 2)
    assert (x.events_7d, x.events_30d) == (2, 3)
    assert x.trend_7d == pytest.approx((1 / 7) / (2 / 30))
    assert x.trending_score == pytest.approx(0.5 ** (2 / 24 / 7) + 0.5 ** (10 / 7))
    assert y.users_30d == 0 and y.trend_7d is None and (x.trending_rank, y.trending_rank) == (1, 2)


def test_a_windows_trending_order_from_its_pairs_is_item_populartys_own(spark):
    """trending_order on the pairs aggregate_interactions gives for some events ranks
    every item as item_popularity does for those events: the same scores (each pair's
    latest event, several events per pair, a timestamp after the day's end), and the
    same ties broken by users, then item id."""
    from vrec.config import EventWeights
    from vrec.spark.interactions import aggregate_interactions, item_popularity, trending_order

    end = pd.Timestamp("2026-11-21", tz="UTC")
    h = pd.Timedelta(hours=1)
    rows = [("a", "x", end - 2 * h), ("a", "x", end - 80 * h), ("b", "x", end - 240 * h),
            ("c", "y", end - 960 * h), ("a", "z", end - 5 * h), ("b", "w", end - 5 * h),
            ("c", "w", end - 700 * h), ("d", "v", end - 5 * h), ("d", "u", end + 3 * h),
            ("a", "t", end - 50 * h), ("b", "s", end - 50 * h), ("e", "v", end - 30 * h)]
    types = ["view", "click", "purchase", "view", "add_to_cart", "view", "view", "click",
             "view", "view", "rating", "view"]
    ev = spark.createDataFrame(
        [(u, i, t.to_pydatetime(), ty, 4.0) for (u, i, t), ty in zip(rows, types)],
        "user_id string, item_id string, ts timestamp, event_type string, value double")
    cat = spark.createDataFrame([(i, "c") for i in "stuvwxyz"], "item_id string, category string")
    want = item_popularity(ev, cat, "2026-11-20", 7.0).toPandas()
    pairs = aggregate_interactions(ev, EventWeights(), "2026-11-20")
    got = trending_order(pairs, "2026-11-20", 7.0).toPandas()
    # by hand: v 1.863, x 1.363, w 1.035, u 1 (its event is after the day's end: age 0),
    # z 0.980, s and t 0.814 each (one user each: by item id), y 0.019
    hand = ["v", "x", "w", "u", "z", "s", "t", "y"]
    for f in (want, got):
        assert f.sort_values("trending_rank")[C.ITEM_ID].tolist() == hand
        assert sorted(f["trending_rank"]) == list(range(1, 9))


def test_pseudonymised_build_recs_hashes_user_ids(staged, spark, monkeypatch):
    from vrec.privacy import pseudonym

    s, _ = staged
    run = RunLayout(s.paths.warehouse_root, DS)
    clear = pd.read_parquet(run.path("user_recs"))
    salt = "a-test-salt-of-enough-length"
    monkeypatch.setenv("VREC_USER_SALT", salt)
    on = s.model_copy(update={"privacy": s.privacy.model_copy(update={"pseudonymize": True})})
    run_stage(on, "build_recs", DS, spark=spark)
    hashed = pd.read_parquet(run.path("user_recs_pseudonymized"))
    prof = pd.read_parquet(run.path("user_profile_pseudonymized"))
    want = {pseudonym(u, salt) for u in clear[C.USER_ID]}
    assert set(hashed[C.USER_ID]) == want == set(prof[C.USER_ID])
    assert not set(hashed[C.USER_ID]) & set(clear[C.USER_ID])
    by_user = clear.assign(**{C.USER_ID: clear[C.USER_ID].map(lambda u: pseudonym(u, salt))})
    key = [C.USER_ID, "rank"]
    assert (by_user.sort_values(key)[C.ITEM_ID].to_numpy()
            == hashed.sort_values(key)[C.ITEM_ID].to_numpy()).all()
    # publish refuses lists that validate_outputs has not seen since build_recs re-ran
    with pytest.raises(Exception, match="validate_outputs ran before the latest run of build_recs"):
        run_stage(on, "publish", DS)
    run_stage(s, "build_recs", DS, spark=spark)  # leave the staging area as the later tests expect
    assert not run.path("user_recs_pseudonymized").exists()
    run_stage(s, "validate_outputs", DS, spark=spark)


def test_eval_metrics_are_published_for_every_model_slice_and_k(staged):
    s, res = staged
    m = W.read_table(s.paths.warehouse_root, "eval_metrics", DS)
    from vrec.core.models import MODELS

    assert set(m["model"]) == set(MODELS)  # the sample's titles give a text model
    assert set(m["slice"]) == {"all", "cold_items", "cold_users", "tuning_window"}
    assert set(m["k"]) == {10, 50} | {s.recs.k}
    # the tuning's estimate of each model sits beside the holdout's value
    est = m[(m["slice"] == "tuning_window") & (m["metric"] == "ndcg")]
    # (the ranker is trained after the blend tuning: its estimate is its validation)
    assert set(est["model"]) == set(MODELS) - {"ranker"} and est["value"].between(0, 1).all()
    allk = m[(m["slice"] == "all") & (m["metric"] == "users")]
    assert (allk["value"] > 0).all()
    bounded = m[m["metric"].isin(["precision", "recall", "f1", "ndcg", "map", "hit_rate",
                                  "coverage"])]
    assert bounded["value"].between(0, 1).all()
    # the test users are the users with a relevant event on the last day (time split)
    ev = pd.read_parquet(W.run_dir(s.paths.warehouse_root, DS) / "events")
    last_day = ev[pd.to_datetime(ev[C.TS], utc=True) >= pd.Timestamp(DS, tz="UTC")]
    assert 0 < allk["value"].iloc[0] <= last_day[C.USER_ID].nunique()
    assert res[DS]["evaluate"]["headline"].keys() == set(MODELS)
    gate = W.manifest(s.paths.warehouse_root, DS)["quality_gate"]
    assert gate["status"] in {"passed", "overridden"} and gate["override"] is True


def test_run_report_is_one_self_contained_file(staged):
    import base64
    import io
    import re

    from PIL import Image

    s, res = staged
    path = res[DS]["report"]["report"]
    assert path.endswith(f"reports/runs/vrec_report_{DS}.html")
    html = open(path).read()
    for model in ("popularity", "als", "visual", "visual_pref", "text", "hybrid"):
        assert f"<td>{model}</td>" in html
    # which model ranked the lists, and the ranker's validation against the blend
    import json

    stats = W.read_table(s.paths.warehouse_root, "run_stats", DS).set_index("stage")
    ranked_by = json.loads(stats.loc["build_recs", "details"])["ranked_by"]
    assert f"Ranked by: <b>{ranked_by}</b>" in html
    if ranked_by == "ranker":
        assert "<td>ranker</td>" in html and "The learned ranker's validation" in html
    # what the tuning expected beside what happened: one row per model with the estimate
    tuned = html.split("What the tuning expected and what happened")[1].split("</table>")[0]
    m = W.read_table(s.paths.warehouse_root, "eval_metrics", DS)
    est = m[(m["slice"] == "tuning_window") & (m["metric"] == "ndcg") & (m["model"] == "als")]
    assert f"<td>als</td><td class=n>{float(est['value'].iloc[0]):.4f} ±" in tuned
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) > 10 and all(x.startswith("data:image/jpeg;base64,") for x in srcs)
    with Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1]))) as im:
        assert max(im.size) <= s.eval.thumb_px
    assert not re.search(r'(src|href)="https?://', html)  # nothing fetched from a server
    for section in ("Pipeline", "Quality gate", "Offline evaluation", "Gallery: sample users",
                    "item_similar"):
        assert section in html
    # the trend plot has a point for each published ds up to this one
    assert f"hybrid {PREV}:" in html and f"hybrid {DS}:" in html


def test_quality_gate_refuses_a_worse_rerun_and_the_override_publishes_it(staged, spark, capsys):
    """Re-running a published day with a config that ranks worse on the same holdout is
    refused (nothing published changes); the operator override publishes and is logged."""
    s, _ = staged
    wh = s.paths.warehouse_root

    def variant(visual_weight: float):  # the picture through the learned preference
        return s.model_copy(update={
            "ranker": s.ranker.model_copy(update={"enabled": False}),  # the blend ranks
            "recs": s.recs.model_copy(update={"tune_blend": False, "history_shrink": 0.0,
                                              "visual_weight": visual_weight,
                                              "pref_mix": 1.0}),
            # a dozen test users here: a strict tolerance, the gate's arithmetic has unit tests
            "eval": s.eval.model_copy(update={"split": "user", "tune": False,
                                              "gate_max_drop": 0.005, "gate_min_users": 5})})

    good, worse = variant(1.0), variant(0.0)
    for stage in ("build_recs", "validate_outputs", "evaluate"):
        run_stage(good, stage, DS, spark=spark)
    published = run_stage(good, "publish", DS)  # first run measured with the per-user split
    assert published["quality_gate"]["status"] == "first_run"
    before = W.manifest(wh, DS)["version"]
    got = run_stage(worse, "evaluate", DS, spark=spark)["headline"]["hybrid"]
    prev = published["quality_gate"]["current"]
    assert prev - got > worse.eval.gate_max_drop, "setup: the worse config must drop on this data"
    with pytest.raises(Exception, match="quality gate refused") as err:
        run_stage(worse, "publish", DS)
    assert f"{got:.4f}" in str(err.value) and f"{prev:.4f}" in str(err.value)
    assert W.manifest(wh, DS)["version"] == before  # nothing published changed
    refused = RunLayout(wh, DS).record("publish")
    assert refused["status"] == "failed" and refused["quality_gate"]["status"] == "refused"
    from vrec.report import report_path

    report = report_path(wh, DS).read_text()  # written by the refused publish
    assert "REFUSED by the quality gate" in report
    m = run_stage(worse, "publish", DS, params={"override_gate": True,
                                                "override_reason": "agreed in review"})
    assert m["version"] != before and m["quality_gate"]["status"] == "overridden"
    assert m["quality_gate"]["reason"] == "agreed in review"
    assert "quality gate OVERRIDDEN by the operator" in capsys.readouterr().out
    assert W.manifest(wh, DS)["quality_gate"]["status"] == "overridden"
    assert RunLayout(wh, DS).record("publish")["quality_gate"]["reason"] == "agreed in review"
    for stage in ("build_recs", "validate_outputs"):  # the staging area as the run left it
        run_stage(s, stage, DS, spark=spark)


def test_every_staged_folder_is_declared_and_read_by_a_later_stage_or_published(staged):
    """The stage contract on a real run: nothing is staged that no later stage reads and
    no table publishes, and nothing is staged outside the declared layout."""
    from vrec.executor import ARTIFACTS, BOOKKEEPING
    from vrec.stages import STAGES, producer
    from vrec.stages.publish import MODEL_ARTIFACT, PSEUDONYMIZED, PUBLISHED_FROM

    s, _ = staged
    run = RunLayout(s.paths.warehouse_root, DS)
    declared = {path: name for name, path in ARTIFACTS.items()}
    parents = {p.split("/")[0] for p in declared if "/" in p}
    on_disk = set()
    for entry in run.root.iterdir():
        if entry.name in parents:
            on_disk |= {f"{entry.name}/{sub.name}" for sub in entry.iterdir()}
        else:
            on_disk.add(entry.name)
    assert on_disk - set(BOOKKEEPING) <= set(declared), "undeclared staging entries"
    published = set(PUBLISHED_FROM.values()) | set(PSEUDONYMIZED.values()) | {MODEL_ARTIFACT}
    position = {st.name: i for i, st in enumerate(STAGES)}
    for path in sorted(on_disk - set(BOOKKEEPING)):
        name = declared[path]
        made_by = producer(name)
        readers = [st.name for st in STAGES
                   if name in st.inputs and position[st.name] > position[made_by.name]]
        assert readers or name in published, f"{name} is staged by {made_by.name} but never read"
        assert name in run.record(made_by.name)["outputs_written"]
    # every stage's record says it ran and succeeded, with the outputs it wrote
    for st in STAGES:
        rec = run.record(st.name)
        assert rec["status"] == "succeeded", (st.name, rec)
        assert set(rec["outputs_written"]) <= set(st.outputs)


def test_lists_from_the_evaluation_path_equal_the_published_lists(staged):
    """Parity: the in-memory path that tuning and evaluate use (one user builder, the same
    retrieval and ranking, the learned ranker when it ranked) on the run's production
    inputs gives exactly the staged lists."""
    import json

    from vrec.core.cf import CFModel
    from vrec.core.itemspace import ItemSpace, ranking_policy
    from vrec.core.ranker import Ranker
    from vrec.core.ranking import rank, to_user_recs
    from vrec.core.retrieval import profile_source, retrieve
    from vrec.core.users import pairs_by_user, user_batch
    from vrec.dates import end_of_ds
    from vrec.stages.candidates import feedback_exclusions
    from vrec.stages.common import PAIR_COLUMNS, published_by

    s, _ = staged
    wh = s.paths.warehouse_root
    run = RunLayout(wh, DS)
    model = CFModel.load(run.path("model"))
    space = ItemSpace.load(run.path("item_space"), mmap=False)
    policy = ranking_policy(s.recs, json.loads(run.path("blend").read_text()),
                            ItemSpace.meta(run.path("item_space"))["slots_off"])
    pairs = W.read_folder(run.path("interactions"), PAIR_COLUMNS)
    rows = pairs_by_user(pairs)
    # the feedback rules' leave-outs, as the candidates stage computes them
    exclude, _ = feedback_exclusions(s.feedback, DS, run.path("feedback"), run.path("events"),
                                     space)
    assert len(exclude), "the front end's impressions must leave items out"
    by_user = exclude.groupby(C.USER_ID)[C.ITEM_ID].agg(list)
    rows["exclude"] = [by_user.get(u) for u in rows[C.USER_ID]]
    batch = user_batch(rows, space, model, s.recs, pd.Timestamp(end_of_ds(DS)))
    inp = retrieve(batch, space, s.recs.candidates, s.visual, profile=profile_source(policy),
                   extra=s.ranker.enabled)
    record = json.loads(run.path("ranker").read_text())
    ranker = Ranker.from_record(record) if published_by(record) == "ranker" else None
    mine = to_user_recs(rank(inp, space, policy, ranker), space, "")
    published = pd.read_parquet(run.path("user_recs"))
    key = [C.USER_ID, "rank"]
    a = mine.sort_values(key).reset_index(drop=True)
    b = published.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert (a[key + [C.ITEM_ID, "reason"]].to_numpy() == b[key + [C.ITEM_ID, "reason"]].to_numpy()).all()
    assert np.allclose(a["score"], b["score"])


def test_realised_metrics_equal_a_recomputation_from_the_raw_events(staged):
    """The night's realised metrics of the day before's published lists, recomputed here
    from the raw partition the front end landed into and the published lists."""
    s, res = staged
    wh = s.paths.warehouse_root
    real = W.read_table(wh, "realised_metrics", DS)
    got = real[(real[C.LIST_DS] == PREV) & (real["slice"] == "all")].set_index("metric")["value"]
    assert (real["horizon_days"] == 1).all()
    recs = W.read_table(wh, "user_recs", PREV)
    raw = pd.read_parquet(s.paths.raw_root / "events" / f"ds={DS}")
    eng = raw[raw[C.EVENT_TYPE].isin(["view", "click", "add_to_cart", "purchase", "rating"])
              & raw[C.USER_ID].notna() & raw[C.ITEM_ID].isin(set(W.read_table(wh, "items", DS)[C.ITEM_ID]))]
    rel = eng.groupby(C.USER_ID)[C.ITEM_ID].agg(set)
    hits, ndcgs = [], []
    for u, g in recs.groupby(C.USER_ID):
        if u not in rel.index:
            continue
        ranks = g[g[C.ITEM_ID].isin(rel[u])]["rank"].to_numpy()
        ideal = sum(1 / np.log2(j + 2) for j in range(min(len(rel[u]), len(g))))
        hits.append(len(ranks) > 0)
        ndcgs.append(sum(1 / np.log2(r + 1) for r in ranks) / ideal)
    assert got["users"] == len(hits) > 5
    assert got["hit_rate"] == pytest.approx(np.mean(hits))
    assert got["ndcg"] == pytest.approx(np.mean(ndcgs))
    imp = raw[raw[C.EVENT_TYPE] == "impression"]
    assert got["impressions"] == res["front_end"]["impressions"] == len(imp) > 0
    assert (imp[C.LIST_DS] == PREV).all()


def test_impressions_and_dismisses_are_never_signal(staged):
    s, res = staged
    run = RunLayout(s.paths.warehouse_root, DS)
    events = pd.read_parquet(run.path("events"))
    assert set(events[C.EVENT_TYPE]) <= set(C.ENGAGEMENT_TYPES)
    fb = pd.read_parquet(run.path("feedback"))
    assert set(fb[C.EVENT_TYPE]) == {"impression", "dismiss"}
    # a pair the user only saw (an impression, no engagement) is no interaction
    inter = pd.read_parquet(run.path("interactions"))
    engaged = set(zip(events[C.USER_ID], events[C.ITEM_ID]))
    only_seen = set(zip(fb[C.USER_ID], fb[C.ITEM_ID])) - engaged
    assert only_seen and not only_seen & set(zip(inter[C.USER_ID], inter[C.ITEM_ID]))
    pop = pd.read_parquet(run.path("item_popularity"))
    assert pop["users_all"].sum() == len(set(zip(events[C.USER_ID], events[C.ITEM_ID])))


def test_unavailable_items_never_reach_lists_or_neighbours_and_lists_stay_full(staged):
    s, res = staged
    wh, k = s.paths.warehouse_root, s.recs.k
    gone = set(res["made_unavailable"])
    items = W.read_table(wh, "items", DS)
    assert gone <= set(items.loc[items["blocked"] == "unavailable", C.ITEM_ID])
    recs = W.read_table(wh, "user_recs", DS)
    before = W.read_table(wh, "user_recs", PREV)
    assert before[C.ITEM_ID].isin(gone).sum() >= 5  # the most recommended: in many lists
    assert not recs[C.ITEM_ID].isin(gone).any()
    assert (recs.groupby(C.USER_ID).size() == k).all()
    sims = W.read_table(wh, "item_similar", DS)
    assert not sims["similar_item_id"].isin(gone).any()
    assert sims[C.ITEM_ID].isin(gone).any()  # they keep their own neighbours
    # they still count as history: their pairs are in the night's interactions
    inter = pd.read_parquet(RunLayout(wh, DS).path("interactions"))
    assert inter[C.ITEM_ID].isin(gone).any()


def test_shown_unengaged_and_dismissed_items_are_left_out_the_next_night(staged):
    s, res = staged
    wh = s.paths.warehouse_root
    raw = pd.read_parquet(s.paths.raw_root / "events" / f"ds={DS}")
    fe = raw[raw[C.LIST_DS].notna() | raw[C.EVENT_TYPE].isin(["dismiss"])]
    clicks = set(zip(raw.loc[raw[C.EVENT_TYPE] != "impression", C.USER_ID],
                     raw.loc[raw[C.EVENT_TYPE] != "impression", C.ITEM_ID]))
    shown = set(zip(fe.loc[fe[C.EVENT_TYPE] == "impression", C.USER_ID],
                    fe.loc[fe[C.EVENT_TYPE] == "impression", C.ITEM_ID])) - clicks
    dismissed = set(zip(raw.loc[raw[C.EVENT_TYPE] == "dismiss", C.USER_ID],
                        raw.loc[raw[C.EVENT_TYPE] == "dismiss", C.ITEM_ID]))
    assert shown and dismissed
    recs = W.read_table(wh, "user_recs", DS)
    pairs = set(zip(recs[C.USER_ID], recs[C.ITEM_ID]))
    assert not pairs & shown  # max_unengaged_shows 1 here
    assert not pairs & dismissed
    left = RunLayout(wh, DS).record("candidates")["left_out"]
    assert left["rested_pairs"] >= len(shown) and left["dismissed_pairs"] == len(dismissed)


def test_validate_outputs_fails_when_a_list_names_a_blocked_item(staged, spark):
    s, res = staged
    _validate_broken_recs(s, spark, res["made_unavailable"][:2],
                          r"user_recs: expect_column_values_to_be_in_set .*recommendable.* observed 2 unexpected")


def test_a_night_that_tunes_fits_the_tuning_window_once_per_setting(staged, spark, tmp_path,
                                                                     monkeypatch, capsys):
    """The CF tuning's chosen point, the blend tuning and the ranker's validation window
    fit the same window with the same settings: train_cf fits it once (the tuning's fit
    serves the other two), and that model is the one a new fit gives. The night's model,
    fit beside the blend tuning, is the one a fit on its own gives, and BLAS has its
    threads back after the stage (both sides limit them). The blend tuning and the
    ranker's validation share the item space built on that model, the one a new build
    gives."""
    import dataclasses
    import shutil

    from threadpoolctl import threadpool_info, threadpool_limits

    import vrec.core.tuning as tuning
    import vrec.spark.cf as spark_cf
    from vrec.core.cf import CFModel
    from vrec.core.visual import load_features

    s, _ = staged
    wh = tmp_path / "wh"
    shutil.copytree(s.paths.warehouse_root, wh, symlinks=True)
    s = s.model_copy(update={"paths": s.paths.model_copy(update={"warehouse_root": str(wh)})})
    fits, real = [], spark_cf.fit_cf

    def counted(pairs, cf, **kw):  # the real fit, counted
        model = real(pairs, cf, **kw)
        fits.append((pairs, cf, model))
        return model

    monkeypatch.setattr(spark_cf, "fit_cf", counted)
    spaces, real_space = [], tuning.build_item_space

    def built(model, *a, **kw):  # the real item space, counted
        space = real_space(model, *a, **kw)
        spaces.append((model, a, kw, space))
        return space

    monkeypatch.setattr(tuning, "build_item_space", built)
    with threadpool_limits(2, "blas"):
        run_stage(s, "train_cf", DS, spark=spark, params={"retune": True})
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
    rec = W.stage_records(wh, DS)["train_cf"]
    assert rec["cf_tuning"].get("grid") and not rec["cf_tuning"].get("reused_from")
    assert rec["blend"].get("grid") and not rec["blend"].get("reused_from")
    assert rec["ranker"].get("validation") and not rec["ranker"].get("reused_from")
    on_frames = [(p, c, m) for p, c, m in fits if isinstance(p, pd.DataFrame)]
    keys = [(id(p), c.model_dump_json()) for p, c, _ in on_frames]
    assert len(keys) == len(set(keys)), "a window was fit twice with the same settings"
    window = max({id(p): p for p, _, _ in on_frames}.values(),
                 key=lambda p: sum(q is p for q, _, _ in on_frames))
    # the window's fits are the tuning's grid points; the blend and the validation took
    # the chosen one's model
    assert sum(p is window for p, _, _ in on_frames) == len(rec["cf_tuning"]["grid"])
    assert capsys.readouterr().out.count("already fit with these settings, is reused") == 2
    chosen = s.cf.model_copy(update=rec["cf_tuning"]["chosen"])
    held = next(m for p, c, m in on_frames if p is window and c == chosen)
    again = real(window, chosen, spark=spark, ds=DS,
                 images=load_features(RunLayout(wh, DS).path("content")))
    np.testing.assert_array_equal(held.user_factors, again.user_factors)
    np.testing.assert_array_equal(held.item_factors, again.item_factors)
    # two windows' spaces (the ranker's first window and the tunings'), the tunings' once
    assert len(spaces) == 2 and sum(m is held for m, *_ in spaces) == 1
    _, a, kw, (space, quality) = next(x for x in spaces if x[0] is held)
    new_space, new_quality = real_space(held, *a, **kw)
    assert quality == new_quality
    for f in dataclasses.fields(space):
        if f.name != "cache":
            x, y = getattr(space, f.name), getattr(new_space, f.name)
            if hasattr(x, "__len__"):  # NaN equals NaN here
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f.name)
            else:
                assert x == y, f.name
    run = RunLayout(wh, DS)
    night = CFModel.load(run.path("model"))
    alone = real(run.path("interactions"), s.cf.model_copy(update=rec["cf_tuning"]["chosen"]),
                 spark=spark, ds=DS, images=load_features(run.path("content")),
                 extra_params={"weights": s.weights.model_dump(mode="json")})
    assert night.version == alone.version
    np.testing.assert_array_equal(night.user_factors, alone.user_factors)
    np.testing.assert_array_equal(night.item_factors, alone.item_factors)


def test_ranking_tasks_share_the_candidates_row_groups_once_each_in_order(tmp_path):
    """build_recs' tasks read the candidates themselves: every row group of every file
    goes to exactly one task, in file and row-group order, empty groups to none, and the
    tasks' users are about equal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vrec.io.warehouse import read_share, row_group_shares

    users = {"part-00000.parquet": 30, "part-00001.parquet": 50}
    for name, n in users.items():
        pq.write_table(pa.table({"user_id": [f"{name[5:10]}-{i}" for i in range(n)]}),
                       tmp_path / name, row_group_size=10)
    pq.write_table(pa.table({"user_id": pa.array([], pa.string())}),
                   tmp_path / "part-00002.parquet")
    shares = row_group_shares(tmp_path, 4)
    assert [len(s) for s in shares] == [2, 2, 2, 2]
    flat = [item for share in shares for item in share]
    assert flat == [(str(tmp_path / f), g) for f, n in users.items() for g in range(n // 10)]
    read = [u for share in shares for df in read_share(share, 7) for u in df["user_id"]]
    assert read == [f"{f[5:10]}-{i}" for f, n in users.items() for i in range(n)]
    assert row_group_shares(tmp_path, 100) == [[g] for g in flat]
    assert len(row_group_shares(tmp_path, 1)) == 1
    (tmp_path / "part-00000.parquet").unlink()
    (tmp_path / "part-00001.parquet").unlink()
    assert row_group_shares(tmp_path, 4) == []


def test_a_task_reads_the_users_that_start_in_its_share_whole(tmp_path):
    """The candidates stage's tasks read the staged interactions (sorted by user and item)
    in shares of row groups: every user's pairs go to exactly one task, whole, even a
    user whose pairs run over several row groups and shares, and regrouped they equal
    the regrouping of the whole table."""
    import pyarrow.parquet as pq

    from vrec.core.users import pairs_by_user
    from vrec.io.warehouse import read_keyed_share, row_group_shares
    from vrec.spark.candidates import PAIR_COLUMNS, user_frames

    end = pd.Timestamp("2026-11-21", tz="UTC")
    counts = {"u0": 3, "u1": 25, "u2": 1, "u3": 7, "u4": 2, "u5": 11}  # u1 spans 3 groups
    pairs = pd.DataFrame([(u, f"i{j:03d}", float(j), end - pd.Timedelta(seconds=j * 61),
                           ["view"] if j % 2 else ["view", "purchase"], j + 1)
                          for u, n in counts.items() for j in range(n)],
                         columns=PAIR_COLUMNS)
    pairs["last_ts"] = pairs["last_ts"].astype("datetime64[ns, UTC]")
    folder = tmp_path / "interactions"
    folder.mkdir()
    pairs.to_parquet(folder / "part-00000.parquet", index=False, row_group_size=8)
    assert pq.ParquetFile(folder / "part-00000.parquet").metadata.num_row_groups == 7
    whole = pairs_by_user(pairs)
    for tasks in (1, 2, 3, 7):
        shares = row_group_shares(folder, tasks)
        tables = [read_keyed_share(shares, i, C.USER_ID, PAIR_COLUMNS)
                  for i in range(len(shares))]
        users = [u for t in tables for u in t.column(C.USER_ID).to_pylist()]
        assert sorted(users) == sorted(pairs[C.USER_ID]) and users == list(pairs[C.USER_ID])
        rows = pd.concat([f for t in tables for f in user_frames(t, chunk=10)],
                         ignore_index=True)
        pd.testing.assert_frame_equal(_plain_types(rows), _plain_types(whole))
    # in several chunks (whole users each) and with the feedback rules' leave-outs
    frames = list(user_frames(read_keyed_share(row_group_shares(folder, 1), 0, C.USER_ID),
                              {"u3": ["i001"]}, chunk=10))
    assert [list(f[C.USER_ID]) for f in frames] == [["u0", "u1"], ["u2", "u3", "u4"], ["u5"]]
    excl = pd.concat(frames)["exclude"].tolist()
    assert excl == [None, None, None, ["i001"], None, None]
    # seconds since the epoch as Spark computes them: whole microseconds over 1e6
    assert whole["last_s"][0] == [end.timestamp() - 61 * j for j in range(3)]
    assert whole["items"][1] == [f"i{j:03d}" for j in range(25)]


def _plain_types(rows: pd.DataFrame) -> pd.DataFrame:
    """User rows with each pair's event types as a plain list (Parquet gives arrays)."""
    return rows.assign(event_types=[[list(t) for t in v] for v in rows["event_types"]])

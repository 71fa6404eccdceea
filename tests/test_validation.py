"""GX's two engines run the same suites: the same frames, with and without defects,
validated by the pandas engine and by the Spark engine give the same verdict for every
expectation and the same unexpected counts (docs/validation.md, "Two engines"). And the
stages choose the engine by the row threshold and say which one ran."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vrec import columns as C
from vrec.io.validation import (
    catalog_frame,
    embeddings_frame,
    reports_dir,
    run_suite,
    validate_all,
)
from vrec.spark.validation_frames import events_frame, recs_frames, similar_frame

from .conftest import TINY

DS = TINY.end_date.isoformat()


@pytest.fixture(scope="module")
def gx(tmp_path_factory):
    from vrec.io.gxcontext import open_context

    wh = tmp_path_factory.mktemp("gx")
    return open_context(reports_dir(wh)), wh


def _events_with_defects(tiny_raw, tmp_path):
    """The tiny sample's last day (it has dirty rows of its own) plus one of each defect."""
    day = pd.read_parquet(tiny_raw / "events" / f"ds={DS}")
    end = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(days=1)
    extra = pd.DataFrame({
        C.USER_ID: [None, "u-x", "u-x", "u-x", "u-y"],
        C.ITEM_ID: [day[C.ITEM_ID].iloc[0], "no-such-item", day[C.ITEM_ID].iloc[1],
                    day[C.ITEM_ID].iloc[2], day[C.ITEM_ID].iloc[3]],
        C.EVENT_TYPE: ["view", "view", "teleport", "click", "view"],
        C.VALUE: [None, None, None, None, 2.0],
        C.TS: [end - pd.Timedelta(hours=1), end - pd.Timedelta(hours=2),
               end - pd.Timedelta(hours=3), end + pd.Timedelta(hours=5),
               end - pd.Timedelta(hours=1)]})
    df = pd.concat([day, extra, extra.iloc[[4]]], ignore_index=True)  # and a duplicate
    folder = tmp_path / "events"
    folder.mkdir()
    df.to_parquet(folder / "part-0.parquet", index=False)
    return folder


def _both(ctx, spark, frame, suite, params):
    """The suite's result on the Spark engine and on the pandas engine."""
    sdf = frame if not isinstance(frame, pd.DataFrame) else spark.createDataFrame(frame)
    pdf = frame if isinstance(frame, pd.DataFrame) else frame.toPandas()
    on_spark, _ = run_suite(ctx, sdf.cache(), suite, params, ds=DS)
    on_pandas, _ = run_suite(ctx, pdf, suite, params, ds=DS)
    assert (on_spark.engine, on_pandas.engine) == ("spark", "pandas")
    return on_spark, on_pandas


def _same(a, b):
    """The same verdict, the same outcome of every expectation, and the same unexpected
    counts wherever both engines count rows (a type list is checked per value on pandas
    and per column on Spark: there only the outcome is compared)."""
    assert a.success == b.success
    assert a.evaluated == b.evaluated == len(a.checks) == len(b.checks)
    assert [f["expectation"] for f in a.failures] == [f["expectation"] for f in b.failures]
    assert [f["expectation"] for f in a.warnings] == [f["expectation"] for f in b.warnings]
    assert {k: ok for k, (ok, _) in a.checks.items()} == {k: ok for k, (ok, _) in b.checks.items()}
    counted = {k for k in a.checks if a.checks[k][1] is not None and b.checks[k][1] is not None}
    assert {k: a.checks[k][1] for k in counted} == {k: b.checks[k][1] for k in counted}
    # rows are counted on both engines for all but the type checks
    assert {k.split(":")[0] for k in set(a.checks) - counted} <= {
        "expect_column_values_to_be_in_type_list", "expect_table_row_count_to_be_between",
        "expect_column_to_exist"}


def test_raw_events_and_catalog_get_the_same_results_on_both_engines(spark, gx, tiny_raw,
                                                                     tmp_path):
    ctx, _ = gx
    catalog = pd.read_parquet(tiny_raw / "catalog" / f"ds={DS}")
    ids = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: catalog[C.ITEM_ID].astype(str)}))
    events = events_frame(spark, _events_with_defects(tiny_raw, tmp_path), ids, DS, 3.0)
    params = {"event_types": list(C.EVENT_TYPES)}
    a, b = _both(ctx, spark, events, "raw_events", params)
    _same(a, b)
    # the defects are seen, as warnings below the suite's tolerance
    warned = {f["kwargs"].get("column") for f in a.warnings}
    assert {"user_id", "event_type", "known_item", "ts_not_future", "is_duplicate"} <= warned
    # beyond the tolerance both engines fail the same critical expectations
    bad = events.withColumn("known_item", events["known_item"] & (events[C.EVENT_TYPE] == "x"))
    a, b = _both(ctx, spark, bad, "raw_events", params)
    _same(a, b)
    assert not a.success and {f["kwargs"]["column"] for f in a.failures} == {"known_item"}
    frame = catalog_frame(catalog, tiny_raw, [tiny_raw])
    _same(*_both(ctx, spark, frame, "raw_catalog", {}))


def test_output_tables_get_the_same_results_on_both_engines(spark, gx):
    ctx, _ = gx
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(30)]
    recs = pd.DataFrame([(u, r, f"i{rng.integers(40)}", 1.0 - r / 10) for u in users
                         for r in range(1, 6)], columns=[C.USER_ID, "rank", C.ITEM_ID, "score"])
    recs = recs.drop_duplicates([C.USER_ID, C.ITEM_ID]).assign(
        cf_score=0.5, visual_score=0.1, reason="collaborative", reason_item_id=None,
        model_version="m")
    recs.loc[recs.index[:2], "rank"] = 9  # beyond k
    recs.loc[recs.index[5], "score"] = 5.0  # a list whose scores rise
    recs.loc[recs.index[7], C.ITEM_ID] = "unknown"
    profile = pd.DataFrame({C.USER_ID: users + ["u-cold"]})
    blocked = recs[C.ITEM_ID].iloc[0]  # unavailable: no list may name it
    catalog = spark.createDataFrame(pd.DataFrame(
        {C.ITEM_ID: [f"i{i}" for i in range(40)],
         "blocked": ["unavailable" if f"i{i}" == blocked else None for i in range(40)]}))
    rows, lists = recs_frames(spark.createDataFrame(recs), spark.createDataFrame(profile),
                              catalog, 5)
    for frame, suite in ((rows, "user_recs"), (lists, "user_lists")):
        a, b = _both(ctx, spark, frame, suite, {"k": 5})
        _same(a, b)
        assert not a.success
        if suite == "user_recs":
            assert "recommendable" in {f["kwargs"].get("column") for f in a.failures}
    sim = pd.DataFrame({C.ITEM_ID: ["i1", "i1", "i2", "i3"], "rank": [1, 2, 1, 1],
                        "similar_item_id": ["i2", "i1", "i1", None],
                        "similarity": [0.9, 1.0, 0.9, 0.5]})
    sim.loc[0, "similar_item_id"] = blocked
    a, b = _both(ctx, spark, similar_frame(spark.createDataFrame(sim), catalog), "item_similar",
                 {"similar_k": 5})
    _same(a, b)
    assert {f["kwargs"].get("column") for f in a.failures} >= {"self_pair", "similar_item_id",
                                                               "similar_recommendable"}
    vec = pd.DataFrame({C.ITEM_ID: ["i1", "i2", "zz"],
                        "embedding": [list(np.eye(4)[0]), [0.5] * 4, [np.nan, 0, 0, 0]]})
    emb = embeddings_frame(vec, {"i1", "i2"})
    _same(*_both(ctx, spark, emb, "item_embeddings", {"dim": 4}))


def test_the_row_threshold_chooses_the_engine_and_results_say_which(spark, gx, tiny_raw):
    """At or below validation.pandas_max_rows a Spark frame is collected and validated in
    pandas; above it, GX runs on Spark. The verdict is the same either way."""
    _, wh = gx
    catalog = pd.read_parquet(tiny_raw / "catalog" / f"ds={DS}")
    ids = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: catalog[C.ITEM_ID].astype(str)}))
    events = events_frame(spark, tiny_raw / "events" / f"ds={DS}", ids, DS, None)
    n = events.count()
    params = {"event_types": list(C.EVENT_TYPES)}
    small = validate_all(wh, DS, {"raw_events": (events, n)}, params, pandas_max_rows=n)
    large = validate_all(wh, DS, {"raw_events": (events, n)}, params, pandas_max_rows=n - 1)
    unknown = validate_all(wh, DS, {"raw_events": (events, None)}, params, pandas_max_rows=n)
    assert [r.engine for r in small + large + unknown] == ["pandas", "spark", "pandas"]
    assert small[0].rows == large[0].rows == unknown[0].rows == n
    _same(small[0], large[0])
    # each result's own Data Docs page was rendered, with the index
    pages = list((reports_dir(wh) / "data_docs" / "validations" / "raw_events").rglob("*.html"))
    assert len(pages) >= 3 and (reports_dir(wh) / "data_docs" / "index.html").is_file()


def test_gx_is_configured_once_per_process_and_imported_only_by_the_validate_stages(tmp_path):
    """open_context returns the context it opened before (GX is imported and configured
    once per stage process); importing every stage module, the report and the status
    command imports no GX (only the validate stages do, when they run)."""
    import subprocess
    import sys

    from vrec.io.gxcontext import open_context

    assert open_context(tmp_path / "r") is open_context(tmp_path / "r")
    code = ("import importlib, sys\nfrom vrec.stages import STAGES\n"
            "for s in STAGES: importlib.import_module(s.module)\n"
            "import vrec.report, vrec.status, vrec.executor, vrec.io.validation\n"
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]

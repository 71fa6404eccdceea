"""The bad-input matrix: each kind of bad input gets its designed outcome (quarantined
with the right reason and count, or the run fails before publish naming the expectation),
and what was published before stays unchanged and readable."""

import datetime as dt
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vrec import columns as C
from vrec.data.sample import SampleSpec, generate_sample
from vrec.executor import run_stage
from vrec.io import warehouse as W
from vrec.io.validation import ValidationFailed
from vrec.spark.rawread import RawTypeError

from .conftest import published_state, run_through_publish, settings_for

SPEC = SampleSpec(n_users=60, n_items=48, days=3, end_date=dt.date(2026, 11, 20), seed=5,
                  image_size=64, missing_image_share=0, corrupt_image_share=0,
                  dirty_event_share=0)
DS, PREV = "2026-11-20", "2026-11-19"


_run = run_through_publish
_published_state = published_state


@pytest.fixture(scope="module")
def base(spark, tmp_path_factory):
    """A clean sample with PREV published: (raw folder, warehouse, tmp)."""
    tmp = tmp_path_factory.mktemp("bad")
    raw = tmp / "raw"
    generate_sample(raw, SPEC)
    s = settings_for(raw, tmp / "wh", tmp)
    _run(spark, s, PREV)
    return raw, tmp / "wh", tmp


def _copy_raw(base_raw: Path, dest: Path) -> Path:
    shutil.copytree(base_raw, dest)
    return dest


def _events(raw: Path) -> pd.DataFrame:
    return pd.read_parquet(raw / "events" / f"ds={DS}")


def _write_events(raw: Path, df: pd.DataFrame) -> None:
    folder = raw / "events" / f"ds={DS}"
    for f in folder.glob("*.parquet"):
        f.unlink()
    df.to_parquet(folder / "part-0.parquet", index=False)


def _every(df: pd.DataFrame, share: float) -> pd.Index:
    return df.index[: int(len(df) * share)]


def _unknown_items(df):
    df.loc[_every(df, 0.4), C.ITEM_ID] = "ghost"
    return df


def _null_users(df):
    df.loc[_every(df, 0.2), C.USER_ID] = None
    return df


def _unknown_types(df):
    df.loc[_every(df, 0.2), C.EVENT_TYPE] = "teleport"
    return df


def _future(df):
    df.loc[_every(df, 0.1), C.TS] = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(days=3)
    return df


def _duplicated(df):
    return pd.concat([df, df.iloc[: int(len(df) * 0.3)]], ignore_index=True)


def _missing_column(df):
    return df.drop(columns=[C.EVENT_TYPE])


def _empty(df):
    return df.iloc[:0]


FAILURES = {
    # case: (change to the day's events, expectation named in the failure)
    "unknown_item_ids": (_unknown_items, r"raw_events: expect_column_values_to_be_in_set .*known_item"),
    "null_user_ids": (_null_users, r"raw_events: expect_column_values_to_not_be_null .*user_id"),
    "unknown_event_types": (_unknown_types, r"raw_events: expect_column_values_to_be_in_set .*event_type"),
    "future_timestamps": (_future, r"raw_events: expect_column_values_to_be_in_set .*ts_not_future"),
    "duplicated_events": (_duplicated, r"raw_events: expect_column_values_to_be_in_set .*is_duplicate"),
    "missing_column": (_missing_column, r"raw_events: expect_column_to_exist .*event_type"),
    "empty_events_file": (_empty, r"raw_events: expect_table_row_count_to_be_between .*observed 0"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_bad_events_beyond_tolerance_fail_before_publish(case, base, spark, tmp_path):
    base_raw, wh, tmp = base
    change, message = FAILURES[case]
    raw = _copy_raw(base_raw, tmp_path / "raw")
    _write_events(raw, change(_events(raw)))
    s = settings_for(raw, wh, tmp_path)
    before = _published_state(wh)
    with pytest.raises(ValidationFailed, match=message):
        run_stage(s, "validate_inputs", DS, spark=spark)
    assert _published_state(wh) == before


def test_catalog_with_many_duplicated_ids_fails_before_publish(base, spark, tmp_path):
    base_raw, wh, _ = base
    raw = _copy_raw(base_raw, tmp_path / "raw")
    folder = raw / "catalog" / f"ds={DS}"
    cat = pd.read_parquet(folder)
    for f in folder.glob("*.parquet"):
        f.unlink()
    pd.concat([cat, cat.iloc[:10]], ignore_index=True).to_parquet(folder / "part-0.parquet", index=False)
    before = _published_state(wh)
    with pytest.raises(ValidationFailed, match=r"raw_catalog: expect_column_values_to_be_unique .*item_id"):
        run_stage(settings_for(raw, wh, tmp_path), "validate_inputs", DS, spark=spark)
    assert _published_state(wh) == before


def test_missing_events_partition_fails_with_a_clear_message(base, spark, tmp_path):
    base_raw, wh, _ = base
    raw = _copy_raw(base_raw, tmp_path / "raw")
    shutil.rmtree(raw / "events" / f"ds={DS}")
    before = _published_state(wh)
    with pytest.raises(FileNotFoundError, match=f"no events landed for ds={DS}"):
        run_stage(settings_for(raw, wh, tmp_path), "validate_inputs", DS, spark=spark)
    assert _published_state(wh) == before


# ---------------------------------------------------------------- ordinary dirt: quarantined

def _image_bytes(kind: str, original: bytes) -> bytes:
    if kind == "truncated":
        return original[: len(original) // 3]
    if kind == "not_an_image":
        return b"<html>this is not an image</html>"
    buf = io.BytesIO()
    if kind == "one_pixel":
        Image.new("RGB", (1, 1), (200, 10, 10)).save(buf, "PNG")
    else:  # cmyk
        Image.open(io.BytesIO(original)).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {"truncated": "undecodable_image", "not_an_image": "undecodable_image",
          "one_pixel": "too_small", "cmyk": None}
EVENT_DIRT = {"unknown_item_id": 2, "null_user_id": 2, "unknown_event_type": 2,
              "future_timestamp": 1, "duplicate_event": 1}


@pytest.fixture(scope="module")
def dirty(base, spark, tmp_path_factory):
    """DS with a little of every kind of dirt, run and published over PREV."""
    base_raw, wh, _ = base
    tmp = tmp_path_factory.mktemp("dirty")
    raw = _copy_raw(base_raw, tmp / "raw")
    ev = _events(raw)
    i = iter(range(len(ev)))
    for _ in range(2):
        ev.loc[next(i), C.ITEM_ID] = "ghost"
    for _ in range(2):
        ev.loc[next(i), C.USER_ID] = None
    for _ in range(2):
        ev.loc[next(i), C.EVENT_TYPE] = "teleport"
    ev.loc[next(i), C.TS] = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(days=2)
    ev = pd.concat([ev, ev.iloc[[next(i)]]], ignore_index=True)
    _write_events(raw, ev)
    cat_dir = raw / "catalog" / f"ds={DS}"
    cat = pd.read_parquet(cat_dir)
    for f in cat_dir.glob("*.parquet"):
        f.unlink()
    pd.concat([cat, cat.iloc[[0]]], ignore_index=True).to_parquet(cat_dir / "part-0.parquet",
                                                                  index=False)
    touched = {}
    for (kind, _), row in zip(IMAGES.items(), cat.iloc[-4:].itertuples()):
        path = raw / row.image_uri
        path.write_bytes(_image_bytes(kind, path.read_bytes()))
        touched[kind] = row.item_id
    s = settings_for(raw, wh, tmp)
    before = _published_state(wh)
    manifest = _run(spark, s, DS)
    return {"wh": wh, "before": before, "manifest": manifest, "images": touched, "settings": s}


def test_dirty_day_publishes_and_keeps_earlier_partitions(dirty):
    wh = dirty["wh"]
    assert W.latest_ds(wh) == DS and dirty["manifest"]["ds"] == DS
    after = _published_state(wh)
    assert {k: v for k, v in after.items() if k[0] != DS} == \
        {k: v for k, v in dirty["before"].items() if k[0] != DS}


@pytest.mark.parametrize("reason", sorted(EVENT_DIRT))
def test_each_kind_of_event_dirt_is_quarantined_with_its_count(dirty, reason):
    q = W.read_table(dirty["wh"], "quarantine", DS)
    ev = q[q["source"] == "events"]
    assert (ev["reason"] == reason).sum() == EVENT_DIRT[reason]


def test_duplicated_catalog_id_is_quarantined_and_counts_reach_run_stats(dirty):
    wh = dirty["wh"]
    q = W.read_table(wh, "quarantine", DS)
    assert (q[q["source"] == "catalog"]["reason"] == "duplicate_item_id").sum() == 1
    stats = W.read_table(wh, "run_stats", DS).set_index("stage")
    assert stats.loc["build_interactions", "rows_quarantined"] == \
        sum(EVENT_DIRT.values()) + 1
    items = W.read_table(wh, "items", DS)
    assert items[C.ITEM_ID].is_unique


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_each_kind_of_bad_image_gets_its_designed_outcome(dirty, kind):
    wh, item = dirty["wh"], dirty["images"][kind]
    q = W.read_table(wh, "quarantine", DS)
    img = q[(q["source"] == "images") & (q["key"] == item)]
    vec = pd.read_parquet(W.run_dir(wh, DS) / "item_vectors")
    if IMAGES[kind] is None:  # CMYK is ordinary: converted to RGB and embedded
        assert img.empty and item in set(vec[C.ITEM_ID])
    else:
        assert list(img["reason"]) == [IMAGES[kind]]
        assert item not in set(vec[C.ITEM_ID])
    recs = W.read_table(wh, "user_recs", DS)
    assert set(recs[C.ITEM_ID]) <= set(W.read_table(wh, "items", DS)[C.ITEM_ID])


def test_warnings_for_the_dirt_are_recorded_and_docs_built(dirty):

    from vrec.io.validation import docs_index

    wh = dirty["wh"]
    res = W.stage_records(wh, DS)["validate_inputs"]["validation"]["raw_events"]
    warned = {(w["expectation"], w["kwargs"].get("column")) for w in res["warned"]}
    assert {("expect_column_values_to_be_in_set", "known_item"),
            ("expect_column_values_to_not_be_null", "user_id"),
            ("expect_column_values_to_be_in_set", "event_type"),
            ("expect_column_values_to_be_in_set", "ts_not_future"),
            ("expect_column_values_to_be_in_set", "is_duplicate")} <= warned
    assert res["success"] and not res["failures"]
    index = docs_index(wh)
    assert index.is_file()
    pages = list((index.parent / "validations").rglob("*.html"))
    suites = {p.parts[len(index.parent.parts) + 1] for p in pages}
    assert {"raw_events", "raw_catalog", "user_recs", "user_lists", "item_similar",
            "item_embeddings"} <= suites
    assert any(DS in str(p) for p in pages)


# ---------------------------------------------------------------- Parquet as producers write it

def _ns_utc(df):
    return df.assign(**{C.TS: df[C.TS].astype("datetime64[ns, UTC]")})


def _ms_naive(df):
    return df.assign(**{C.TS: df[C.TS].dt.tz_convert(None).astype("datetime64[ms]")})


def _int_user_ids(df):
    return df.assign(**{C.USER_ID: df[C.USER_ID].str.extract(r"(\d+)")[0].astype("int64")})


PRODUCER_TYPES = {"nanosecond_utc_ts": _ns_utc, "millisecond_naive_ts": _ms_naive,
                  "integer_user_ids": _int_user_ids}


@pytest.mark.parametrize("case", sorted(PRODUCER_TYPES))
def test_events_parquet_as_producers_write_it_is_read_in_the_contract_types(case, base, spark,
                                                                           tmp_path):
    """pandas' default nanosecond timestamps (Spark refuses them as such), milliseconds
    without a zone, and integer ids are read, cast to the contract's types: the day
    validates and build_interactions stages every event with its exact time and id."""
    import pyarrow.parquet as pq

    base_raw, wh, _ = base
    raw = _copy_raw(base_raw, tmp_path / "raw")
    original = _events(raw)
    changed = PRODUCER_TYPES[case](original.copy())
    _write_events(raw, changed)
    f = next((raw / "events" / f"ds={DS}").glob("*.parquet"))
    written = pq.read_schema(f)
    if case == "nanosecond_utc_ts":
        assert str(written.field(C.TS).type) == "timestamp[ns, tz=UTC]"  # what pandas wrote
    s = settings_for(raw, tmp_path / "wh", tmp_path)
    assert run_stage(s, "validate_inputs", DS, spark=spark)["events"] == len(original)
    run_stage(s, "build_interactions", DS, spark=spark)
    staged = pd.read_parquet(W.run_dir(tmp_path / "wh", DS) / "events")
    staged = staged[staged["landed_ds"] == DS] if "landed_ds" in staged else staged
    want = changed.assign(**{C.USER_ID: changed[C.USER_ID].astype(str)})  # naive = UTC
    got = staged[pd.to_datetime(staged[C.TS], utc=True) >= pd.Timestamp(DS, tz="UTC")]
    assert len(got) == len(want)
    assert sorted(zip(got[C.USER_ID], got[C.ITEM_ID], pd.to_datetime(got[C.TS], utc=True))) == \
        sorted(zip(want[C.USER_ID], want[C.ITEM_ID], pd.to_datetime(want[C.TS], utc=True)))


def test_a_type_that_cannot_be_cast_fails_in_one_line_naming_column_and_types(base, spark,
                                                                             tmp_path):
    base_raw, wh, _ = base
    raw = _copy_raw(base_raw, tmp_path / "raw")
    df = _events(raw)
    _write_events(raw, df.assign(**{C.TS: df[C.TS].astype(str)}))
    s = settings_for(raw, wh, tmp_path)
    before = _published_state(wh)
    with pytest.raises(RawTypeError) as err:
        run_stage(s, "validate_inputs", DS, spark=spark)
    msg = str(err.value)
    assert "\n" not in msg and "column ts is string, expected timestamp" in msg
    assert f"ds={DS}" in msg and ".parquet" in msg  # the file
    assert _published_state(wh) == before


def test_an_unreadable_parquet_file_fails_in_one_line_naming_the_file_without_a_stack_trace(
        base, tmp_path):
    """Through the runner (what the Airflow task runs): one line naming the file, no trace."""
    import subprocess
    import sys

    base_raw, wh, _ = base
    raw = _copy_raw(base_raw, tmp_path / "raw")
    bad = raw / "events" / f"ds={DS}" / "part-1.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet")
    s = settings_for(raw, tmp_path / "wh", tmp_path)
    res = subprocess.run([sys.executable, "-m", "vrec.cli", "run-stage", "validate_inputs", "--ds", DS,
                          "--config", str(tmp_path / "vrec.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    failed = [ln for ln in res.stderr.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and f"events file {bad} is not readable Parquet" in failed[0]
    assert s.paths.raw_root == raw

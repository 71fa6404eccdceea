"""Adapters treat bad rows as rows: the dirty-input matrix (each defect class alone and
all of them together) through the MovieLens adapter and `vrec land`, then the whole
nightly run over the dirty landing: every defect is a reject with its reason, file and
line (or a clear one-line error), the rest lands and is used, the rows balance, and
what was published before stays as it was."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vrec import columns as C
from vrec.data.land import land_files
from vrec.data.movielens import adapt_movielens
from vrec.data.rows import InputFileError
from vrec.io import warehouse as W
from vrec.io.rawio import REJECTS_FILE, list_partitions

from .dirty_movielens import DEFECTS, END, write_folder

NOW = pd.Timestamp("2026-11-23", tz="UTC")


def _landed(raw: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, catalog, rejects with source) of a raw zone."""
    ev = pd.concat([pd.read_parquet(raw / "events" / f"ds={p}" / "part-00000.parquet")
                    for p in list_partitions(raw, "events")], ignore_index=True)
    cat = pd.concat([pd.read_parquet(raw / "catalog" / f"ds={p}" / "part-00000.parquet")
                     for p in list_partitions(raw, "catalog")], ignore_index=True)
    rej = [pd.read_parquet(f).assign(source=f.parts[-3]) for f in sorted(raw.rglob(REJECTS_FILE))]
    return ev, cat, (pd.concat(rej, ignore_index=True) if rej else
                     pd.DataFrame(columns=["file", "line", "reason", "source"]))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The clean folder adapted: the partitions and events every dirty case must match."""
    tmp = tmp_path_factory.mktemp("clean_ml")
    info = write_folder(tmp / "ml", [])
    adapt_movielens(tmp / "ml", tmp / "raw", now=NOW)
    ev, cat, rej = _landed(tmp / "raw")
    assert rej.empty and len(ev) == info["clean"]
    return {"partitions": list_partitions(tmp / "raw", "events"), "events": ev, "catalog": cat}


def _check_case(defects: list[str], clean: dict, tmp_path: Path, **kw) -> dict:
    info = write_folder(tmp_path / "ml", defects, **kw)
    stats = adapt_movielens(tmp_path / "ml", tmp_path / "raw", now=NOW)
    ev, cat, rej = _landed(tmp_path / "raw")
    got = sorted(zip(rej["file"].map(lambda f: Path(f).name), rej["line"], rej["reason"]))
    assert got == info["expected"]  # each defect: its reason, its file and line; nothing else
    assert all(Path(f).is_absolute() for f in rej["file"])
    # the rest lands, in the same partitions, with ids as written
    assert list_partitions(tmp_path / "raw", "events") == clean["partitions"]
    key = [C.USER_ID, C.ITEM_ID, C.VALUE, C.TS]
    assert ev.sort_values(key).reset_index(drop=True)[key].equals(
        clean["events"].sort_values(key).reset_index(drop=True)[key])
    assert {i[1:] for i in cat[C.ITEM_ID]} == info["landed_movies"]
    return {"stats": stats, "catalog": cat}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_is_a_reject_with_reason_file_and_line_and_the_rest_lands(defect, clean,
                                                                             tmp_path):
    out = _check_case([defect], clean, tmp_path)
    if defect == "cp1252_title":  # decoded with the declared fallback, and reported
        cat = out["catalog"].set_index(C.ITEM_ID)
        assert cat.loc["m51", C.TITLE] == "Café Society (2016)"
        assert out["stats"]["decoded_with_fallback"] == {"movies.csv": [6]}  # inserted before clean row 4: line 6


def test_all_defects_together(clean, tmp_path):
    out = _check_case(sorted(DEFECTS), clean, tmp_path)
    assert sum(out["stats"]["rejected"]["ratings.csv"].values()) == \
        sum(d.file == "ratings.csv" and d.reason is not None for d in DEFECTS.values())


def test_byte_order_mark_and_crlf_line_ends_are_ordinary(clean, tmp_path):
    _check_case(["extra_field"], clean, tmp_path, bom_crlf=True)


def test_a_stray_future_row_does_not_move_the_history_partition(clean, tmp_path):
    """Regression: one rating in 2100 used to put history at ds=2099-12-24."""
    _check_case(["timestamp_in_2100"], clean, tmp_path)
    assert max(list_partitions(tmp_path / "raw", "events")) == END.isoformat()


@pytest.mark.parametrize("header,message", [
    (b"userId,movieId,rating\n1,2,4.0\n", r"ratings.csv: header lacks column\(s\) timestamp"),
    (b"", r"ratings.csv: empty file"),
])
def test_a_file_that_cannot_be_read_names_the_file(header, message, tmp_path):
    write_folder(tmp_path / "ml", [])
    (tmp_path / "ml" / "ratings.csv").write_bytes(header)
    with pytest.raises(InputFileError, match=message):
        adapt_movielens(tmp_path / "ml", tmp_path / "raw", now=NOW)


def test_the_cli_prints_one_line_and_no_stack_trace_for_an_input_problem(tmp_path):
    write_folder(tmp_path / "ml", [])
    (tmp_path / "ml" / "movies.csv").write_bytes(b"title,genres\nx,y\n")
    res = subprocess.run([sys.executable, "-m", "vrec.cli", "movielens", "--ml-dir",
                          str(tmp_path / "ml"), "--out", str(tmp_path / "raw")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert errors == [f"vrec movielens: error: {tmp_path / 'ml' / 'movies.csv'}: header lacks "
                      "column(s) movieId (found: title, genres)"]


# ---------------------------------------------------------------- vrec land

def test_land_events_csv_and_jsonl_with_the_same_checks(tmp_path):
    csv_file = tmp_path / "day.csv"
    csv_file.write_text(
        "user_id,item_id,event_type,ts,value\n"
        "u1,0042,view,2026-11-20T10:00:00Z,\n"        # ok; id kept as written
        "u2,i2,rating,2026-11-20T10:00:00,7.5\n"      # off the scale
        ",i3,click,2026-11-20 11:00,\n"               # no user
        "u4,i4,teleport,2026-11-20,\n"                # unknown type
        "u5,i5,view,2026-11-21T00:00:00Z,\n"          # the next day: future
        "u6,i6,view,2026-11-20T12:00:00Z\n"           # a field short
        "u7,i7,rating,1763640000,4.5\n")              # ok, epoch seconds
    jsonl = tmp_path / "day.jsonl"
    jsonl.write_text(
        '{"user_id": 12, "item_id": "i1", "event_type": "click", "ts": "2026-11-20T01:00:00+02:00"}\n'
        '[1, 2]\n'
        '{"user_id": 1.5, "item_id": "i1", "event_type": "click", "ts": "2026-11-20T05:00:00Z"}\n'
        'not json\n')
    stats = land_files("events", [csv_file, jsonl], tmp_path / "raw", dt.date(2026, 11, 20))
    part = tmp_path / "raw" / "events" / "ds=2026-11-20"
    ev = pd.read_parquet(part / "part-00000.parquet")
    assert list(ev[C.USER_ID]) == ["u1", "u7", "12"] and list(ev[C.ITEM_ID]) == ["0042", "i7", "i1"]
    assert list(ev[C.TS]) == [pd.Timestamp("2026-11-20 10:00", tz="UTC"),
                              pd.Timestamp(1763640000, unit="s", tz="UTC"),
                              pd.Timestamp("2026-11-19 23:00", tz="UTC")]
    rej = pd.read_parquet(part / REJECTS_FILE)
    assert list(zip(rej["file"].map(lambda f: Path(f).name), rej["line"], rej["reason"])) == [
        ("day.csv", 3, "rating_out_of_range"), ("day.csv", 4, "null_user_id"),
        ("day.csv", 5, "unknown_event_type"), ("day.csv", 6, "future_timestamp"),
        ("day.csv", 7, "malformed_line"), ("day.jsonl", 2, "malformed_line"),
        ("day.jsonl", 3, "bad_user_id"), ("day.jsonl", 4, "malformed_line")]
    assert stats["landed"] == 3 and stats["rejected"] == 8
    assert (part / "_SUCCESS").is_file()


def test_the_optional_description_lands_as_text(tmp_path):
    import datetime as dt

    from vrec.data.land import land_files

    f = tmp_path / "cat.jsonl"
    f.write_text('{"item_id": "i1", "title": "Navy Blue Shirts", '
                 '"description": "  linen, slim fit "}\n'
                 '{"item_id": "i2", "title": "Lamp", "description": ""}\n')
    land_files("catalog", [f], tmp_path / "raw", dt.date(2026, 11, 20))
    cat = pd.read_parquet(tmp_path / "raw" / "catalog" / "ds=2026-11-20" / "part-00000.parquet")
    assert cat[C.DESCRIPTION].tolist() == ["linen, slim fit", None]


def test_impressions_dismisses_and_availability_land_with_their_own_rejects(tmp_path):
    ev = tmp_path / "front.csv"
    ev.write_text("user_id,item_id,event_type,ts,list_ds,position,surface\n"
                  "u1,i1,impression,2026-11-20T09:00:00Z,2026-11-19,1,home\n"
                  "u1,i2,impression,2026-11-20T09:00:00Z,2026-11-19,2,home\n"
                  "u1,i2,dismiss,2026-11-20T09:01:00Z,,,\n"
                  "u1,i1,click,2026-11-20T09:02:00Z,,,\n"
                  "u1,i3,impression,2026-11-20T09:00:00Z,19/11/2026,3,home\n"
                  "u1,i4,impression,2026-11-20T09:00:00Z,2026-11-19,0,home\n"
                  "u1,i5,impression,2026-11-20T09:00:00Z,2026-11-19,2.5,home\n")
    stats = land_files("events", [ev], tmp_path / "raw", dt.date(2026, 11, 20))
    assert stats["landed"] == 4
    assert stats["reasons"] == {"bad_list_ds": 1, "bad_position": 2}
    got = pd.read_parquet(tmp_path / "raw" / "events" / "ds=2026-11-20" / "part-00000.parquet")
    assert got[C.EVENT_TYPE].tolist() == ["impression", "impression", "dismiss", "click"]
    assert got[C.LIST_DS].tolist()[:2] == ["2026-11-19"] * 2 and got[C.LIST_DS].isna().sum() == 2
    assert got[C.POSITION].tolist()[:2] == [1, 2] and got[C.SURFACE].iloc[0] == "home"
    cat = tmp_path / "cat.jsonl"
    cat.write_text('{"item_id": "i1", "available": false}\n{"item_id": "i2", "available": "yes"}\n'
                   '{"item_id": "i3"}\n{"item_id": "i4", "available": "sold out"}\n')
    stats = land_files("catalog", [cat], tmp_path / "raw", dt.date(2026, 11, 20))
    assert stats["landed"] == 3 and stats["reasons"] == {"bad_available": 1}
    got = pd.read_parquet(tmp_path / "raw" / "catalog" / "ds=2026-11-20" / "part-00000.parquet")
    assert got[C.AVAILABLE].tolist() == [False, True, None]


def test_land_cli_replaces_the_partition_and_reports_counts(tmp_path):
    f = tmp_path / "cat.csv"
    f.write_bytes(b"item_id,title,category,price,image_uri\n"
                  b"i1,Caf\xe9 chair,home,12.5,img/i1.jpg\n"
                  b"i2,Lamp,home,cheap,\n"
                  b",No id,home,1,\n")
    cmd = [sys.executable, "-m", "vrec.cli", "land", "catalog", str(f), "--ds", "2026-11-20",
           "--out", str(tmp_path / "raw")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["landed"] == 1 and stats["reasons"] == {"bad_price": 1, "null_item_id": 1}
    assert stats["decoded_with_fallback"] == {str(f): 1}
    cat = pd.read_parquet(tmp_path / "raw" / "catalog" / "ds=2026-11-20" / "part-00000.parquet")
    assert list(cat[C.TITLE]) == ["Café chair"] and cat[C.PRICE].tolist() == [12.5]
    assert cat[C.UPDATED_AT].iloc[0] == pd.Timestamp("2026-11-20", tz="UTC")
    assert cat[C.DESCRIPTION].isna().all()  # the optional description, left out: nulls
    res = subprocess.run(cmd[:5] + [str(tmp_path / "missing.csv")] + cmd[6:],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{tmp_path / 'missing.csv'}: no such file" in res.stderr


# ---------------------------------------------------------------- the whole run over it

@pytest.fixture(scope="module")
def dirty_run(spark, tmp_path_factory):
    """Every defect at once, plus rows only the run can judge (a rating of an unknown
    movie, a repeated rating, a repeated movie id), landed by the adapter and run through
    every stage for the day before the last (published first) and the last day."""
    from .conftest import published_state, run_through_publish, settings_for

    tmp = tmp_path_factory.mktemp("dirty_ml")
    info = write_folder(tmp / "ml", sorted(DEFECTS))
    ratings = (tmp / "ml" / "ratings.csv").read_bytes().splitlines()
    first = ratings[1]  # the earliest rating: lands in the history partition
    user, _, _, ts = first.split(b",")
    extra = [user + b",99,4.0," + ts, first]  # unknown movie; the first rating again
    (tmp / "ml" / "ratings.csv").write_bytes(b"\n".join(ratings + extra) + b"\n")
    with open(tmp / "ml" / "movies.csv", "ab") as f:
        f.write(b'1,"Movie 1, The (1991)",Comedy|Drama\n')
    stats = adapt_movielens(tmp / "ml", tmp / "raw", now=NOW)
    s = settings_for(tmp / "raw", tmp / "wh", tmp)
    prev = (END - dt.timedelta(days=1)).isoformat()
    run_through_publish(spark, s, prev)
    before = published_state(tmp / "wh")
    manifest = run_through_publish(spark, s, END.isoformat())
    from vrec.executor import run_stage

    report = run_stage(s, "report", END.isoformat(), spark=spark)["report"]
    return {"wh": tmp / "wh", "info": info, "stats": stats, "before": before, "prev": prev,
            "manifest": manifest, "clean": info["clean"], "report": Path(report).read_text()}


def test_the_dirty_landing_publishes_and_earlier_partitions_stay(dirty_run):
    from .conftest import published_state

    wh = dirty_run["wh"]
    assert dirty_run["manifest"]["ds"] == END.isoformat() == W.latest_ds(wh)
    after = published_state(wh)
    assert {k: v for k, v in after.items() if k[0] == dirty_run["prev"]} == dirty_run["before"]
    assert len(W.read_table(wh, "user_recs")) > 0


def test_every_reject_and_every_dropped_row_is_in_the_quarantine_once(dirty_run):
    q = W.read_table(dirty_run["wh"], "quarantine", END.isoformat())
    rejects = q[q["found_by"] == "landing"]
    got = sorted((k.rsplit(":", 1)[0].rsplit("/", 1)[-1], int(k.rsplit(":", 1)[1]), r)
                 for k, r in zip(rejects["key"], rejects["reason"]))
    assert got == dirty_run["info"]["expected"]
    assert rejects["detail"].notna().all() and rejects["landed_ds"].notna().all()
    rest = q[(q["found_by"] == "run") & q["source"].isin(["events", "catalog"])]
    assert sorted(zip(rest["source"], rest["reason"])) == [
        ("catalog", "duplicate_item_id"), ("events", "duplicate_event"),
        ("events", "unknown_item_id")]
    assert not q.duplicated().any()


def test_rows_landed_equal_rows_used_plus_rows_quarantined_per_source(dirty_run):
    wh, ds = dirty_run["wh"], END.isoformat()
    stats = W.read_table(wh, "run_stats", ds).set_index("stage")
    recon = json.loads(stats.loc["build_interactions", "details"])["reconciliation"]
    n_rating_rejects = sum(1 for f, _, _ in dirty_run["info"]["expected"] if f == "ratings.csv")
    n_movie_rejects = sum(1 for f, _, _ in dirty_run["info"]["expected"] if f == "movies.csv")
    ev, cat = recon["events"], recon["catalog"]
    # every line of ratings.csv but the header: the clean rows and the two extra rows
    assert ev["landed"] == dirty_run["clean"] + 2 + n_rating_rejects
    assert ev["rejected_at_landing"] == n_rating_rejects
    assert ev["used"] == dirty_run["clean"] and ev["quarantined"] == n_rating_rejects + 2
    assert ev["balanced"] and cat["balanced"]
    assert cat["landed"] == 51 + 1 + n_movie_rejects and cat["used"] == 51
    events = pd.read_parquet(W.run_dir(wh, ds) / "events")
    assert len(events) == ev["used"]


def test_the_report_shows_the_row_accounting_and_where_rows_were_set_aside(dirty_run):
    import re

    html = dirty_run["report"]
    wh = dirty_run["wh"]
    stats = W.read_table(wh, "run_stats", END.isoformat()).set_index("stage")
    ev = json.loads(stats.loc["build_interactions", "details"])["reconciliation"]["events"]
    row = re.search(r"<tr><td>events</td>(.*?)</tr>", html.split("Rows accounted for")[1]).group(1)
    cells = [int(c.replace(",", "")) for c in re.findall(r"<td class=n>([\d,]+)</td>", row)]
    assert cells == [ev["landed"], ev["rejected_at_landing"], ev["used"], ev["quarantined"]]
    assert "<td class='ok'>yes</td>" in row
    assert "<td>malformed_line</td><td>rejected at landing</td><td class=n>3</td>" in html
    assert "<td>duplicate_event</td><td>by the run</td><td class=n>1</td>" in html


def _land_both_ways(f: Path, tmp_path: Path) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """Land events file ``f`` natively and record by record; check that both landed the
    same rows and rejects; (native stats, record stats, landed rows, rejects)."""
    out = {}
    for native in (True, False):
        raw = tmp_path / f"raw-{native}"
        stats = land_files("events", [f], raw, dt.date(2026, 11, 20), native=native)
        part = raw / "events" / "ds=2026-11-20"
        out[native] = (stats, pd.read_parquet(part / "part-00000.parquet"),
                       pd.read_parquet(part / REJECTS_FILE))
    (fast, fast_ev, fast_rej), (slow, slow_ev, slow_rej) = out[True], out[False]
    pd.testing.assert_frame_equal(fast_ev, slow_ev)
    pd.testing.assert_frame_equal(fast_rej, slow_rej)
    for key in ("landed", "rejected", "reasons", "decoded_with_fallback"):
        assert fast[key] == slow[key], key
    return fast, slow, slow_ev, slow_rej


DIRTY_EVENT_LINES = [
    b"u1,i1,view,1763596800,", b"u2,i2,click,1763596800.25,1", b"u3,i3,add_to_cart,1763600000,2.5",
    b"u4,i4,view,2026-11-20T10:00:00Z,", b"u5,i5,view,2026-11-20 10:00,",
    b"u6,i6,view,2026-11-20T10:00:00.123+01:00,", b"u7,i7,view,2026-11-20T10:00:00.5,",
    b"  u8 , i8 ,view, 1763596800 ,", b"u9,i9,rating,1763596800,4.5", b"u9,i9,rating,1763596800,7",
    b"u9,i9,rating,1763596800,", b"u9,i9,rating,1763596800,4.25", b",i1,view,1763596800,",
    b"u1,,view,1763596800,", b"u1,i1,teleport,1763596800,", b"u1,i1,view,,",
    b"u1,i1,view,yesterday,", b"u1,i1,view,9999999999.5,", b"u1,i1,view,99999999999,",
    b"u1,i1,view,+1763596800,", b"u1,i1,view,1763683200,", b"u1,i1,view,2026-11-21T00:00:00Z,",
    b"u1,i1,view,1763596800,1_000", b"u1,i1,view,1763596800,inf", b"u1,i1,view,1763596800,nan",
    b"u1,i1,view,1763596800,abc", b"u1,i1,view,1763596800,1e3", b"caf\xc3\xa9,i1,view,1763596800,",
    b"caf\xe9,i1,view,1763596800,", b"u\x01x,i1,view,1763596800,", b"\x1fu2,i1,view,1763596800,",
    b'u1,"i,1",view,1763596800,', b'u1,"i1,view,1763596800,', b"u1,i1,view", b"u1,i1,view,1,2,3",
    b"", b"   ", b"u1,i1,view,2026-13-45T10:00,", b"u1,i1,view,1969-12-31T23:00:00Z,",
    b"u1,i1,view,2026-11-20,", b"u1,i1,view,1763596800,-2",
]
IMPRESSION_LINES = [
    b"u1,i1,impression,1763596800,,2026-11-19,1,home", b"u1,i2,impression,1763596800,,,,",
    b"u1,i4,impression,1763596800,,0999-01-01,2,", b"u1,i3,impression,1763596800,,2026-02-30,1,home",
    b"u1,i5,impression,1763596800,,2026-11-19,3.0,home", b"u1,i6,impression,1763596800,,2026-11-19,+3,",
    b"u1,i7,impression,1763596800,,2026-11-19,0,home", b"u1,i8,dismiss,1763596800,,,,  ",
    b"u1,i9,impression,1763596800,,19/11/2026,4,home", b"u1,i9,impression,1763596800,, 2026-11-19 , 5 , app ",
]


@pytest.mark.parametrize("header, lines", [
    (b"user_id,item_id,event_type,ts,value", DIRTY_EVENT_LINES),
    (b"user_id,item_id,event_type,ts,value,list_ds,position,surface", IMPRESSION_LINES),
    (b"\xef\xbb\xbfuser_id,item_id,event_type,ts", [ln.rsplit(b",", 1)[0] for ln in DIRTY_EVENT_LINES]),
])
def test_native_landing_gives_the_same_rows_and_rejects_as_record_by_record(
        tmp_path, monkeypatch, header, lines):
    """Clean rows in bulk with every kind of defect scattered through them, in small
    blocks (some read natively, some record by record) and with mixed line ends: the
    native reader lands the same rows in the same order and rejects the same lines with
    the same reasons, details and text as the record-by-record parser."""
    import random

    from vrec.data import bulk

    monkeypatch.setattr(bulk, "BLOCK_BYTES", 600)
    rng = random.Random(7)
    clean = lines[:3] * 1000
    body = clean + lines * 3
    rng.shuffle(body)
    ends = [b"\n"] * 40 + [b"\r\n"]
    data = header + b"\n" + b"".join(ln + rng.choice(ends) for ln in body[:-50]) \
        + b"".join(ln + b"\n" for ln in body[-50:]) + b"u1,i1,view,1763596800"
    f = tmp_path / "day.csv"
    f.write_bytes(data)
    fast, slow, slow_ev, slow_rej = _land_both_ways(f, tmp_path)
    assert fast["native"]["rows"] > len(clean) / 3  # most clean rows came the fast way
    assert fast["native"]["lines_parsed_record_by_record"] > 0
    assert fast["native"]["rows_checked_one_by_one"] > 0
    assert slow_rej is not None and len(slow_rej) > 5 and len(slow_ev) > len(clean)


JSON_EVENT_LINES = [
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": "u2", "item_id": "i2", "event_type": "click", "ts": "2026-11-20T10:00:00Z", "value": 2}',
    b'{"user_id": "u3", "item_id": "i3", "event_type": "purchase", "ts": 1763596800.25, "extra": [1]}',
    b'{"user_id": 12, "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": 1.5, "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": null, "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": true}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "soon"}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1795305600}',
    b'{"user_id": "caf\\u00e9", "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": "caf\xe9", "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": "u1", "user_id": "u2", "item_id": "i1", "event_type": "view", "ts": 1763596800}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "rating", "ts": 1763596800, "value": 9}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "impression", "ts": 1763596800, '
    b'"list_ds": "2026-11-19", "position": 2.0, "surface": "home"}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "impression", "ts": 1763596800, '
    b'"position": 2.5}',
    b'[1, 2]', b'not json', b'', b'  {"user_id": "u9", "item_id": "i9", "event_type": "view", "ts": 1}',
    b'{"user_id": "u1", "item_id": {"a": 1}, "event_type": "view", "ts": 1763596800}',
]


def test_native_landing_of_json_lines_gives_the_same_rows_and_rejects(tmp_path, monkeypatch):
    """JSON lines the same way: ids as integers (kept as their digits) or fractions
    (rejected), nulls, missing keys, other types, escapes, cp1252 bytes, duplicate keys,
    lines that are no object or no JSON, carriage returns and a byte-order mark."""
    import random

    from vrec.data import bulk

    monkeypatch.setattr(bulk, "BLOCK_BYTES", 4000)
    monkeypatch.setattr(bulk, "SMALLEST_PIECE", 2)
    rng = random.Random(3)
    body = JSON_EVENT_LINES[:3] * 300 + JSON_EVENT_LINES * 3
    rng.shuffle(body)
    data = b"\xef\xbb\xbf" + b"".join(ln + rng.choice([b"\n"] * 30 + [b"\r\n"]) for ln in body)
    f = tmp_path / "day.jsonl"
    f.write_bytes(data)
    fast, slow, slow_ev, slow_rej = _land_both_ways(f, tmp_path)
    assert fast["native"]["rows"] > 300 and fast["native"]["lines_parsed_record_by_record"] > 0
    assert len(slow_ev) > 900 and len(slow_rej) > 20


def test_a_stray_quote_far_from_the_next_quote_is_rejected_alone_in_both_paths(tmp_path):
    """A stray quote with more than the CSV reader's field limit (128 KiB) of text before
    any other quote: record by record the reader runs into the limit; the line is still
    an unbalanced quote, rejected alone, as the native reader says."""
    lines = [b"u%d,i1,view,1763596800,\n" % i for i in range(8000)]
    f = tmp_path / "day.csv"
    f.write_bytes(b"user_id,item_id,event_type,ts,value\n" + b"".join(lines[:4])
                  + b'u1,"i1,view,1,\n' + b"".join(lines) + b'u2,"i2,view,1,\n')
    for native in (True, False):
        stats = land_files("events", [f], tmp_path / f"raw-{native}", dt.date(2026, 11, 20),
                           native=native)
        rej = pd.read_parquet(tmp_path / f"raw-{native}" / "events" / "ds=2026-11-20" / REJECTS_FILE)
        assert stats["landed"] == 8000 + 4
        assert rej["line"].tolist() == [6, 8007]
        assert rej["detail"].tolist() == [
            "unbalanced quote (the record ran over the end of its line)"] * 2

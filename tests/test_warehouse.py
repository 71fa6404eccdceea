import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vrec.io import warehouse as W


def _stage(folder, df):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "part-0.parquet")
    return folder


def _recs(n, tag):
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "rank": 1, "item_id": tag})


def test_publish_then_read_latest(tmp_path):
    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s1", _recs(3, "a"))})
    W.publish(wh, "2026-11-02", {"user_recs": _stage(tmp_path / "s2", _recs(4, "b"))})
    assert W.latest_ds(wh) == "2026-11-02"
    assert W.published_ds(wh) == ["2026-11-01", "2026-11-02"]
    assert len(W.read_table(wh, "user_recs")) == 4
    assert W.manifest(wh, "2026-11-01")["tables"]["user_recs"]["rows"] == 3
    # plain DuckDB sees both partitions with their ds
    got = duckdb.sql(f"SELECT ds, count(*) FROM read_parquet('{wh}/user_recs/*/*.parquet', "
                     "hive_partitioning=true) GROUP BY 1 ORDER BY 1").fetchall()
    assert [(str(d), n) for d, n in got] == [("2026-11-01", 3), ("2026-11-02", 4)]


def test_backfilling_an_old_ds_keeps_latest_pointer(tmp_path):
    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-05", {"user_recs": _stage(tmp_path / "s1", _recs(1, "a"))})
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s2", _recs(2, "b"))})
    assert W.latest_ds(wh) == "2026-11-05"


def test_republish_replaces_partition(tmp_path):
    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s1", _recs(3, "a"))})
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s2", _recs(5, "b"))})
    df = W.read_table(wh, "user_recs", "2026-11-01")
    assert len(df) == 5 and set(df["item_id"]) == {"b"}


@pytest.mark.parametrize("breakage", ["truncated_file", "missing_table", "empty_folder"])
def test_failed_publish_leaves_previous_partition_intact(tmp_path, breakage):
    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "ok", _recs(3, "old")),
                                 "item_similar": _stage(tmp_path / "ok2", _recs(2, "old"))})
    before = W.manifest(wh, "2026-11-01")
    good = _stage(tmp_path / "new", _recs(9, "new"))
    bad = tmp_path / "bad"
    bad.mkdir()
    if breakage == "truncated_file":  # a writer died mid-file
        full = (tmp_path / "ok" / "part-0.parquet").read_bytes()
        (bad / "part-0.parquet").write_bytes(full[: len(full) // 2])
    elif breakage == "missing_table":
        bad = tmp_path / "does-not-exist"
    with pytest.raises(W.PublishError):
        W.publish(wh, "2026-11-01", {"user_recs": good, "item_similar": bad})
    for table in ("user_recs", "item_similar"):
        df = W.read_table(wh, table, "2026-11-01")
        assert set(df["item_id"]) == {"old"}
    assert W.manifest(wh, "2026-11-01") == before
    assert len(duckdb.sql(f"SELECT * FROM read_parquet('{wh}/user_recs/*/*.parquet')").fetchall()) == 3


def test_old_versions_are_pruned_but_live_one_kept(tmp_path):
    wh = tmp_path / "wh"
    for i in range(4):
        W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / f"s{i}", _recs(i + 1, "x"))})
    versions = list((wh / "_versions" / "ds=2026-11-01").iterdir())
    assert len(versions) == W.KEEP_VERSIONS
    assert len(W.read_table(wh, "user_recs")) == 4


def test_retention_removes_old_partitions_and_keeps_the_rest_readable(tmp_path):
    wh = tmp_path / "wh"
    days = ["2026-01-01", "2026-01-10", "2026-01-20", "2026-01-25"]
    for d in days:
        folder = tmp_path / "staged" / d
        W.write_table_folder(pd.DataFrame({"x": [1, 2]}), folder)
        (tmp_path / "model" / d).mkdir(parents=True)
        (tmp_path / "model" / d / "model.json").write_text("{}")
        W.publish(wh, d, {"t": folder}, model=tmp_path / "model" / d)
        (wh / "reports" / "runs").mkdir(parents=True, exist_ok=True)
        (wh / "reports" / "runs" / f"vrec_report_{d}.html").write_text("<html></html>")
    for d in ("2026-01-05", "2026-01-24"):  # staging of runs that never published
        (W.run_dir(wh, d) / "stats").mkdir(parents=True)
    (wh / "_failures" / "ds=2026-01-05").mkdir(parents=True)
    removed = W.apply_retention(wh, "2026-01-25", 10)
    assert removed == ["2026-01-01", "2026-01-10"]
    assert not W.run_dir(wh, "2026-01-05").exists() and W.run_dir(wh, "2026-01-24").exists()
    assert not (wh / "_failures" / "ds=2026-01-05").exists()
    assert W.published_ds(wh) == ["2026-01-20", "2026-01-25"]
    assert not (wh / "t" / "ds=2026-01-01").is_symlink() and not list((wh / "_versions").glob("ds=2026-01-0*"))
    assert not (wh / "models" / "ds=2026-01-10").is_symlink()
    assert (wh / "models" / "ds=2026-01-20" / "model.json").is_file()
    reports = sorted(p.name for p in (wh / "reports" / "runs").iterdir())
    assert reports == ["vrec_report_2026-01-20.html", "vrec_report_2026-01-25.html"]
    assert len(W.read_table(wh, "t", "2026-01-20")) == 2 and W.latest_ds(wh) == "2026-01-25"
    assert W.apply_retention(wh, "2025-01-01", 1) == []  # a backfill removes nothing newer
    # far ahead: everything is old, but the latest published partition always stays
    assert W.apply_retention(wh, "2026-03-01", 1) == ["2026-01-20"]
    assert W.published_ds(wh) == ["2026-01-25"] and len(W.read_table(wh, "t")) == 2


@pytest.mark.parametrize("sql,refused", [
    ("COPY (SELECT 1 AS x) TO '{wh}/user_recs/ds=2026-11-01/part-0.parquet'", "COPY statements are refused"),
    ("ATTACH '{tmp}/other.db'", "ATTACH statements are refused"),
    ("INSTALL httpfs", "statements are refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
    ("SET enable_external_access = true", "SET statements are refused"),
    ("SELECT 1; COPY (SELECT 1) TO '{tmp}/x.csv'", "COPY statements are refused"),
])
def test_vrec_query_refuses_statements_that_write(sql, refused, tmp_path):
    from vrec.io.query import ReadOnlyError, run_query

    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s1", _recs(3, "a"))})
    before = {p: p.read_bytes() for p in wh.rglob("*.parquet")}
    with pytest.raises(ReadOnlyError, match=refused):
        run_query(wh, sql.format(wh=wh, tmp=tmp_path))
    assert {p: p.read_bytes() for p in wh.rglob("*.parquet")} == before
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "other.db").exists()


def test_vrec_query_reads_the_warehouse_and_nothing_outside_it(tmp_path):
    from vrec.io.query import run_query

    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s1", _recs(3, "a"))})
    outside = _stage(tmp_path / "elsewhere", _recs(2, "z"))
    assert run_query(wh, "SELECT count(*) AS n FROM user_recs")["n"].tolist() == [3]
    inside = next((wh / "user_recs" / "ds=2026-11-01").glob("*.parquet"))
    assert len(run_query(wh, f"SELECT * FROM read_parquet('{inside}')")) == 3
    for sql in (f"SELECT * FROM read_parquet('{outside}/part-0.parquet')",
                "SELECT * FROM read_text('/etc/hostname')"):
        with pytest.raises(duckdb.PermissionException):
            run_query(wh, sql)


def test_the_query_cli_says_why_it_refused(tmp_path):
    import subprocess
    import sys

    wh = tmp_path / "wh"
    W.publish(wh, "2026-11-01", {"user_recs": _stage(tmp_path / "s1", _recs(3, "a"))})
    for sql, msg in [("COPY (SELECT 1) TO 'x.csv'", "read-only: COPY statements are refused"),
                     ("SELECT * FROM read_text('/etc/hostname')", "vrec query: refused:")]:
        res = subprocess.run([sys.executable, "-m", "vrec.cli", "query", sql, "--warehouse",
                              str(wh)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr


def test_to_frame_shares_one_array_per_distinct_string_list():
    """Reading a table whose rows hold a few distinct string lists (a pair's event types)
    gives the frame pyarrow's own conversion gives, value for value and type for type,
    with equal lists as one shared array; lists with null or empty-string elements
    convert as pyarrow does; arrow=True gives Arrow-backed columns."""
    lists = [["view"], ["click", "view"], None, [], ["view"], ["click", "view"]] * 50
    table = pa.table({"user_id": [f"u{i}" for i in range(300)], "event_types": lists,
                      "n": list(range(300)),
                      "odd": [["a", None], [""], ["b"]] * 100})
    want, got = table.to_pandas(), W.to_frame(table)
    assert list(got.columns) == list(want.columns) and got.dtypes.equals(want.dtypes)
    for name in ("user_id", "n"):
        assert got[name].tolist() == want[name].tolist()
    for col in ("event_types", "odd"):
        for a, b in zip(got[col], want[col]):
            assert (a is None and b is None) or (
                type(a) is type(b) and a.dtype == b.dtype and a.tolist() == b.tolist())
    ev = got["event_types"]
    assert ev[0] is ev[4] and ev[1] is ev[5] and ev[1] is not ev[0]
    assert len({id(a) for a in ev}) == 4  # ['view'], ['click', 'view'], None, []
    assert got["odd"][0] is not got["odd"][3]  # not shared: pandas' own arrays
    arrow = W.to_frame(table.select(["user_id"]), arrow=True)
    assert str(arrow["user_id"].dtype).startswith("string")

import datetime as dt

import pandas as pd
import pytest

from vrec import columns as C
from vrec.data.movielens import adapt_movielens
from vrec.io.rawio import list_partitions


@pytest.fixture()
def ml_dir(tmp_path):
    d = tmp_path / "ml"
    (d / "posters").mkdir(parents=True)
    day = lambda s: int(pd.Timestamp(s, tz="UTC").timestamp())  # noqa: E731
    pd.DataFrame({
        "userId": [1, 1, 2, 2, 3],
        "movieId": [10, 20, 10, 30, 20],
        "rating": [4.0, 2.5, 5.0, 3.5, 1.0],
        "timestamp": [day("2017-01-01 10:00"), day("2018-03-01 09:00"), day("2018-03-02 23:59"),
                      day("2018-03-05 12:00"), day("2018-03-08 08:00")],
    }).to_csv(d / "ratings.csv", index=False)
    pd.DataFrame({"movieId": [10, 20, 30], "title": ["A (1995)", "B (1999)", "C (2001)"],
                  "genres": ["Comedy|Drama", "Action", "(no genres listed)"]}).to_csv(
        d / "movies.csv", index=False)
    (d / "posters" / "10.jpg").write_bytes(b"\xff\xd8fake")
    return d


def test_adapter_writes_ratings_and_catalog(ml_dir, tmp_path):
    out = tmp_path / "raw"
    stats = adapt_movielens(ml_dir, out, bulk_until=dt.date(2018, 3, 1))
    assert stats["events"] == 5 and stats["users"] == 3 and stats["with_poster"] == 1
    parts = list_partitions(out, "events")
    # history before bulk_until lands in one partition the day before it; then daily
    assert parts == ["2018-02-28", "2018-03-01", "2018-03-02", "2018-03-05", "2018-03-08"]
    hist = pd.read_parquet(out / "events" / "ds=2018-02-28")
    assert list(hist[C.ITEM_ID]) == ["m10"] and hist[C.VALUE].iloc[0] == 4.0
    ev = pd.concat(pd.read_parquet(out / "events" / f"ds={p}") for p in parts)
    assert set(ev[C.EVENT_TYPE]) == {"rating"}
    assert sorted(ev[C.VALUE]) == [1.0, 2.5, 3.5, 4.0, 5.0]
    late = pd.read_parquet(out / "events" / "ds=2018-03-02")
    assert late[C.TS].iloc[0] == pd.Timestamp("2018-03-02 23:59", tz="UTC")
    cat = pd.read_parquet(out / "catalog" / "ds=2018-02-28").set_index(C.ITEM_ID)
    assert cat.loc["m10", C.CATEGORY] == "Comedy" and cat.loc["m20", C.CATEGORY] == "Action"
    assert cat.loc["m10", C.IMAGE_URI].endswith("posters/10.jpg")
    assert cat.loc["m20", C.IMAGE_URI] is None
    assert list_partitions(out, "catalog") == ["2018-02-28"]
    # every partition carries the completion marker the nightly DAG waits for
    for source, ds in [("events", p) for p in parts] + [("catalog", "2018-02-28")]:
        assert (out / source / f"ds={ds}" / "_SUCCESS").is_file(), (source, ds)


def test_since_drops_old_ratings(ml_dir, tmp_path):
    stats = adapt_movielens(ml_dir, tmp_path / "raw", since=dt.date(2018, 1, 1),
                            bulk_until=dt.date(2018, 3, 3))
    assert stats["events"] == 4


def test_not_a_movielens_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.csv"):
        adapt_movielens(tmp_path, tmp_path / "raw")


def test_rated_only_keeps_movies_rated_in_the_window(ml_dir, tmp_path):
    """Regression: filtering the catalog used to misalign pandas indexes and crash."""
    out = tmp_path / "raw"
    stats = adapt_movielens(ml_dir, out, since=dt.date(2018, 3, 3), rated_only=True,
                            bulk_until=dt.date(2018, 3, 6))
    cat = pd.read_parquet(out / "catalog" / "ds=2018-03-05")
    assert stats["items"] == 2 and sorted(cat[C.ITEM_ID]) == ["m20", "m30"]
    assert cat[C.PRICE].isna().all() and cat[C.IMAGE_URI].isna().all()

"""MovieLens adapter: an ml-latest-small style folder (+ optional posters) to the raw
landing zone.

Ratings become ``rating`` events (value = the rating, ts = its timestamp). Movies become
the catalog (category = first genre, image_uri = the poster's absolute path when a
``{movieId}.jpg`` exists). Ratings before ``bulk_until`` land in one history partition
(ds = the day before ``bulk_until``); later ratings land in one partition per day, so
nightly runs over the tail see the data arrive day by day.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd

from vrec import columns as C
from vrec.io.rawio import write_catalog_snapshot, write_events_partition

log = logging.getLogger(__name__)


def adapt_movielens(ml_dir: str | Path, raw_root: str | Path, *,
                    posters_dir: str | Path | None = None,
                    bulk_until: dt.date | None = None,
                    since: dt.date | None = None,
                    rated_only: bool = False) -> dict[str, object]:
    """Convert MovieLens CSVs to ``raw/events`` and ``raw/catalog`` partitions.

    Parameters
    ----------
    ml_dir : path
        Folder with ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
        (movieId,title,genres).
    raw_root : path
        Output landing zone.
    posters_dir : path, optional
        Folder of ``{movieId}.jpg`` posters (default: ``ml_dir/posters`` if present).
    bulk_until : date, optional
        Ratings before this date land in one history partition; default: 7 days before
        the last rating's date.
    since : date, optional
        Drop ratings before this date (a recent window for fast runs).
    rated_only : bool
        Keep only movies with at least one kept rating in the catalog (fewer posters to
        embed for a recent window).

    Returns
    -------
    dict
        Counts and the ds values written.
    """
    ml_dir, raw_root = Path(ml_dir), Path(raw_root)
    for name in ("ratings.csv", "movies.csv"):
        if not (ml_dir / name).is_file():
            raise FileNotFoundError(f"{ml_dir} has no {name}: not an ml-latest-small folder")
    ratings = pd.read_csv(ml_dir / "ratings.csv")
    missing = {"userId", "movieId", "rating", "timestamp"} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings.csv lacks columns {sorted(missing)}")
    movies = pd.read_csv(ml_dir / "movies.csv")
    if posters_dir is None and (ml_dir / "posters").is_dir():
        posters_dir = ml_dir / "posters"
    ts = pd.to_datetime(ratings["timestamp"], unit="s", utc=True)
    events = pd.DataFrame({
        C.USER_ID: "u" + ratings["userId"].astype(str),
        C.ITEM_ID: "m" + ratings["movieId"].astype(str),
        C.EVENT_TYPE: "rating",
        C.VALUE: ratings["rating"].astype("float64"),
        C.TS: ts,
    })
    if since is not None:
        events = events[events[C.TS].dt.date >= since]
    if events.empty:
        raise ValueError("no ratings left after the `since` filter")
    last = events[C.TS].max().date()
    bulk_until = bulk_until or (last - dt.timedelta(days=7))
    bulk_ds = bulk_until - dt.timedelta(days=1)
    day = events[C.TS].dt.date
    land = day.where(day >= bulk_until, bulk_ds)
    written = []
    for ds, part in events.groupby(land, sort=True):
        write_events_partition(raw_root, ds, part.sort_values(C.TS))
        written.append(ds.isoformat())

    if rated_only:
        kept = set(events[C.ITEM_ID])
        movies = movies[("m" + movies["movieId"].astype(str)).isin(kept)].reset_index(drop=True)
    poster_files = {}
    if posters_dir is not None:
        poster_files = {p.stem: str(p.resolve()) for p in Path(posters_dir).glob("*.jpg")}
    catalog = pd.DataFrame({
        C.ITEM_ID: "m" + movies["movieId"].astype(str),
        C.TITLE: movies["title"].astype(str),
        C.CATEGORY: movies["genres"].astype(str).str.split("|").str[0],
        C.PRICE: pd.Series([None] * len(movies), dtype="float64"),
        C.IMAGE_URI: [poster_files.get(str(m)) for m in movies["movieId"]],
        C.UPDATED_AT: pd.Timestamp(bulk_ds, tz="UTC"),
    })
    write_catalog_snapshot(raw_root, bulk_ds, catalog)
    stats = {
        "events": int(len(events)), "users": int(events[C.USER_ID].nunique()),
        "items": int(len(catalog)), "with_poster": int(catalog[C.IMAGE_URI].notna().sum()),
        "first_ds": written[0], "last_ds": written[-1], "partitions": len(written),
    }
    log.info("MovieLens landed under %s: %s", raw_root, stats)
    return stats

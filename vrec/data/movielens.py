"""MovieLens adapter: an ml-latest-small style folder (+ optional posters) to the raw
landing zone.

Ratings become ``rating`` events (user ``u<userId>``, item ``m<movieId>``, value = the
rating, ts = its timestamp). Movies become the catalog (category = first genre,
image_uri = the poster's path when a ``{movieId}.jpg`` exists, through a link
``raw/images/movielens-posters`` to the posters folder). Ratings before
``bulk_until`` land in one history partition (ds = the day before ``bulk_until``);
later ratings land in one partition per day, so nightly runs over the tail see the data
arrive day by day.

Bad rows are rows, not the end of the file (``vrec.data.rows``, ``vrec.data.land``):
each goes to its partition's ``_rejects.parquet`` with a reason, the file and the line,
and the rest lands. MovieLens ids are digits, kept as the text written (``m007`` stays
``m007``); a timestamp after the adapter's clock, or more than ``max_ahead_days`` after
the 99.9th percentile of the file's timestamps, is a ``future_timestamp`` and does not
move the partitions. A reject lands in its day's partition when that day has ratings,
else in the history partition; catalog rejects land with the catalog snapshot.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EventWeights
from vrec.data.land import check_event, checked_rows, report_fallback
from vrec.data.rows import BadValue, InputFileError, Rejects, parse_ts, read_csv_records
from vrec.io.rawio import link_image_folder, write_catalog_snapshot, write_events_partition

log = logging.getLogger(__name__)


RATINGS = ("userId", "movieId", "rating", "timestamp")
MOVIES = ("movieId", "title", "genres")


def movielens_id(v: object, what: str, prefix: str) -> str:
    """``prefix`` + the id's digits as written; empty is ``null_<what>``, anything but
    digits ``bad_<what>``."""
    text = "" if v is None else str(v).strip()
    if not text:
        raise BadValue(f"null_{what}", f"{what} is empty")
    if not text.isascii() or not text.isdigit():
        raise BadValue(f"bad_{what}", f"{what} {text[:40]!r} is not a MovieLens id (digits)")
    return prefix + text


def _rating(fields: dict, weights: EventWeights) -> dict:
    return check_event({C.USER_ID: movielens_id(fields["userId"], C.USER_ID, "u"),
                        C.ITEM_ID: movielens_id(fields["movieId"], C.ITEM_ID, "m"),
                        C.EVENT_TYPE: "rating", C.VALUE: fields["rating"],
                        C.TS: fields["timestamp"]}, weights)


def _movie(fields: dict) -> dict:
    genres = str(fields.get("genres") or "").strip()
    title = str(fields.get("title") or "").strip()
    return {"movieId": movielens_id(fields["movieId"], C.ITEM_ID, ""),
            C.TITLE: title or None, C.CATEGORY: genres.split("|")[0] if genres else None,
            # every genre is part of the movie's text (the category keeps the first)
            C.DESCRIPTION: genres.replace("|", " ") if genres else None}


def future_horizon(ts: pd.Series, now: pd.Timestamp, max_ahead_days: float) -> pd.Timestamp:
    """The latest believable time of a file's events: the clock, or ``max_ahead_days``
    after the 99.9th percentile of the timestamps if that is earlier (one stray year-2100
    row cannot move it)."""
    if ts.empty:
        return now
    q = pd.Timestamp(np.quantile(ts.astype("int64").to_numpy(), 0.999), unit="ns", tz="UTC")
    return min(now, q + pd.Timedelta(days=max_ahead_days))


def adapt_movielens(ml_dir: str | Path, raw_root: str | Path, *,
                    posters_dir: str | Path | None = None,
                    bulk_until: dt.date | None = None,
                    since: dt.date | None = None,
                    rated_only: bool = False,
                    weights: EventWeights | None = None,
                    fallback_encoding: str = "cp1252",
                    max_ahead_days: float = 365.0,
                    now: pd.Timestamp | None = None) -> dict[str, object]:
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
        the last accepted rating's date.
    since : date, optional
        Drop ratings before this date (a recent window for fast runs).
    rated_only : bool
        Keep only movies with at least one kept rating in the catalog (fewer posters to
        embed for a recent window).
    weights : EventWeights, optional
        The rating scale (``rating_min``, ``rating_max``, ``rating_step``); default the
        configuration's defaults.
    fallback_encoding : str
        How a line that is not UTF-8 is decoded (reported in the result and the log).
    max_ahead_days : float
        Ratings more than this many days after the 99.9th percentile of the file's
        timestamps are ``future_timestamp`` rejects (as are ratings after ``now``).
    now : Timestamp, optional
        The clock (default: now).

    Returns
    -------
    dict
        Counts (landed, rejected by reason, decoded with the fallback) and the ds values
        written.
    """
    ml_dir, raw_root = Path(ml_dir).resolve(), Path(raw_root)
    for name in ("ratings.csv", "movies.csv"):
        if not (ml_dir / name).is_file():
            raise FileNotFoundError(f"{ml_dir} has no {name}: not an ml-latest-small folder")
    weights = weights or EventWeights()
    now = now or pd.Timestamp.now(tz="UTC")
    r_file, m_file = ml_dir / "ratings.csv", ml_dir / "movies.csv"
    ev_rej, cat_rej = Rejects(), Rejects()
    lines: list[int] = []
    reject_day: dict[int, dt.date | None] = {}  # a rejected rating's day, when readable
    recs = list(read_csv_records(r_file, RATINGS, ev_rej, fallback=fallback_encoding))
    rows = []
    for rec in recs:
        try:
            rows.append(_rating(rec.fields, weights))
            lines.append(rec.line)
        except BadValue as bad:
            ev_rej.add(r_file, rec.line, bad.reason, str(bad), rec.raw)
            reject_day[rec.line] = _day(rec.fields.get("timestamp"))
    events = pd.DataFrame(rows, columns=S.RAW["events"].required()).assign(_line=lines)
    raw_of = {rec.line: rec.raw for rec in recs}
    if not events.empty:
        events[C.TS] = pd.to_datetime(events[C.TS], utc=True)
    horizon = future_horizon(events[C.TS], now, max_ahead_days)
    ahead = events[C.TS] > horizon
    for line, ts in zip(events.loc[ahead, "_line"], events.loc[ahead, C.TS]):
        ev_rej.add(r_file, line, "future_timestamp",
                   f"ts {ts.isoformat()} is after {horizon.isoformat()} (the clock, or "
                   f"{max_ahead_days:g} days after the 99.9th percentile of the file's times)",
                   raw_of[line])
    events = events[~ahead]
    before_since = 0
    if since is not None:
        keep = events[C.TS].dt.date >= since
        before_since = int((~keep).sum())
        events = events[keep]
    if events.empty:
        raise InputFileError(f"{r_file}: no usable ratings"
                             + (" after the `since` filter" if since is not None else "")
                             + f" ({len(ev_rej.rows)} rejected: {ev_rej.counts()})")
    last = events[C.TS].max().date()
    bulk_until = bulk_until or (last - dt.timedelta(days=7))
    bulk_ds = bulk_until - dt.timedelta(days=1)
    day = events[C.TS].dt.date
    land = day.where(day >= bulk_until, bulk_ds)
    rejects = _place_rejects(ev_rej.frame(), reject_day, set(land), bulk_until, bulk_ds, since)
    written = []
    for ds, part in events.drop(columns="_line").groupby(land, sort=True):
        write_events_partition(raw_root, ds, part.sort_values(C.TS),
                               rejects[rejects["_ds"] == ds].drop(columns="_ds"))
        written.append(ds.isoformat())

    movies = pd.DataFrame(checked_rows(
        read_csv_records(m_file, ("movieId",), cat_rej, fallback=fallback_encoding),
        _movie, m_file, cat_rej), columns=["movieId", C.TITLE, C.CATEGORY, C.DESCRIPTION])
    if rated_only:
        kept = set(events[C.ITEM_ID])
        movies = movies[("m" + movies["movieId"]).isin(kept)].reset_index(drop=True)
    if posters_dir is None and (ml_dir / "posters").is_dir():
        posters_dir = ml_dir / "posters"
    poster_files = {}
    if posters_dir is not None:  # linked into the raw zone: images are read from there
        linked = link_image_folder(raw_root, "movielens-posters", posters_dir)
        poster_files = {p.stem: str(linked / p.name) for p in Path(posters_dir).glob("*.jpg")}
    catalog = pd.DataFrame({
        C.ITEM_ID: "m" + movies["movieId"],
        C.TITLE: movies[C.TITLE],
        C.CATEGORY: movies[C.CATEGORY],
        C.PRICE: pd.Series([None] * len(movies), dtype="float64"),
        C.DESCRIPTION: movies[C.DESCRIPTION],
        C.IMAGE_URI: [poster_files.get(m) for m in movies["movieId"]],
        C.UPDATED_AT: pd.Timestamp(bulk_ds, tz="UTC"),
    })
    write_catalog_snapshot(raw_root, bulk_ds, catalog, cat_rej.frame())
    for rej in (ev_rej, cat_rej):
        report_fallback(rej, fallback_encoding)
    stats = {
        "events": int(len(events)), "users": int(events[C.USER_ID].nunique()),
        "items": int(len(catalog)), "with_poster": int(catalog[C.IMAGE_URI].notna().sum()),
        "first_ds": written[0], "last_ds": written[-1], "partitions": len(written),
        "rejected": {"ratings.csv": ev_rej.counts(), "movies.csv": cat_rej.counts()},
        "before_since": before_since,
        "decoded_with_fallback": {Path(f).name: lines for rej in (ev_rej, cat_rej)
                                  for f, lines in rej.fallback_lines.items()},
    }
    n_rej = len(ev_rej.rows) + len(cat_rej.rows)
    log.info("MovieLens landed under %s: %s", raw_root, stats)
    if n_rej:
        log.warning("%d MovieLens rows rejected (see _rejects.parquet next to the partitions "
                    "and the run's quarantine table): %s", n_rej, stats["rejected"])
    return stats


def _day(v: object) -> dt.date | None:
    try:
        return parse_ts(v).date()
    except BadValue:
        return None


def _place_rejects(rejects: pd.DataFrame, reject_day: dict[int, dt.date | None], days: set,
                   bulk_until: dt.date, bulk_ds: dt.date, since: dt.date | None) -> pd.DataFrame:
    """Each reject's partition (``_ds``): the day its time falls on when that day has
    ratings, else the history partition (so are rejects without a readable time and
    future ones). Rejects dated before ``since`` are dropped with the ratings of that
    period."""
    ds = []
    for line, reason in zip(rejects["line"], rejects["reason"]):
        d = None if reason == "future_timestamp" else reject_day.get(int(line))
        if d is not None and since is not None and d < since:
            ds.append(None)
            continue
        d = bulk_ds if d is None or d < bulk_until else d
        ds.append(d if d in days else bulk_ds)
    out = rejects.assign(_ds=ds)
    return out[out["_ds"].notna()]

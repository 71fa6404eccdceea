"""Run days (``ds``, a logical date written YYYY-MM-DD) and their instants: the one place
these are computed. Pure standard library."""

from __future__ import annotations

import datetime as dt


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is a real date written YYYY-MM-DD, else raise ValueError."""
    if not isinstance(ds, str) or len(ds) != 10 or ds[4] != "-" or ds[7] != "-":
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}")
    dt.date.fromisoformat(ds)
    return ds


def end_of_ds(ds: str) -> dt.datetime:
    """The exclusive end of logical date ``ds`` (next midnight, UTC)."""
    return dt.datetime.combine(dt.date.fromisoformat(check_ds(ds)) + dt.timedelta(days=1),
                               dt.time(), tzinfo=dt.UTC)


def shift_ds(ds: str, days: int) -> str:
    """The ds ``days`` after ``ds`` (before it when negative)."""
    return (dt.date.fromisoformat(check_ds(ds)) + dt.timedelta(days=days)).isoformat()

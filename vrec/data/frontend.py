"""A small simulated shop front end, for the demo and the feedback benchmark: what a shop
would land the day after a night published its lists.

For the lists published on ``list_ds`` (the warehouse's ``user_recs``), on the next day:

* a share ``show_share`` of the users see their list: one ``impression`` per item (with
  ``list_ds``, ``position`` = its rank and ``surface``), at a random time of the day;
* each shown item is clicked with probability ``base_ctr × (0.3 + 3 × s) / √position``
  (``base_ctr`` 0.02 by default: about 2% of impressions, a home page's order of magnitude)
  (at most 0.9), where ``s`` is the share of the user's events so far in the item's
  category (users click what they already like, and the top of a list more), a few
  seconds to minutes after the impression, within the day;
* one shown, unclicked item in ``dismiss_share`` of the shown lists is dismissed.

Clicks on shown lists are engagements like any other, so they also enter the next
nights' offline holdouts, where they favour models whose lists resemble what was shown
(the demo's hybrid holdout NDCG@10 went from 0.11 on the first night to 0.41 on the
second at ``base_ctr`` 0.08, and the third night's noise tripped the quality gate; 0.22
at 0.02).

The events are added to that day's raw partition as one file (``frontend-<list_ds>``), so
a rerun replaces them. Taste here is read from the raw events alone: the simulation
knows nothing the pipeline does not.
"""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.io import warehouse as W
from vrec.io.rawio import add_events_file, data_files, event_partitions_until, partition_dir


def _category_shares(raw_root: Path, until: str, catalog: pd.DataFrame) -> pd.DataFrame:
    """Per (user, category): the share of the user's engagement events up to ``until``."""
    files = [f for d in event_partitions_until(raw_root, until)
             for f in data_files(partition_dir(raw_root, "events", d))]
    ev = pd.concat([pd.read_parquet(f, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TYPE])
                    for f in files], ignore_index=True)
    ev = ev[ev[C.EVENT_TYPE].isin(C.ENGAGEMENT_TYPES)].merge(
        catalog[[C.ITEM_ID, C.CATEGORY]], on=C.ITEM_ID)
    n = ev.groupby([C.USER_ID, C.CATEGORY]).size()
    return (n / n.groupby(level=0).transform("sum")).rename("share").reset_index()


def simulate_front_end(raw_root: str | Path, warehouse: str | Path, list_ds: str, *,
                       seed: int = 0, show_share: float = 0.8, base_ctr: float = 0.02,
                       dismiss_share: float = 0.05, surface: str = "home") -> dict:
    """Land the next day's impressions, clicks and dismisses of the lists of ``list_ds``
    (module doc); their counts."""
    raw_root = Path(raw_root)
    day = (dt.date.fromisoformat(list_ds) + dt.timedelta(days=1))
    rng = np.random.default_rng([seed, zlib.crc32(list_ds.encode())])
    recs = W.read_table(warehouse, "user_recs", list_ds)
    catalog = W.read_table(warehouse, "items", list_ds)[[C.ITEM_ID, C.CATEGORY]]
    shares = _category_shares(raw_root, list_ds, catalog)
    users = np.sort(recs[C.USER_ID].unique())
    shown = users[rng.random(len(users)) < show_share]
    lists = recs[recs[C.USER_ID].isin(shown)].merge(catalog, on=C.ITEM_ID, how="left") \
        .merge(shares, on=[C.USER_ID, C.CATEGORY], how="left").fillna({"share": 0.0}) \
        .sort_values([C.USER_ID, "rank"])
    start = pd.Timestamp(day, tz="UTC")
    end = start + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    seen_at = {u: start + pd.Timedelta(seconds=float(rng.uniform(0, 70000))) for u in shown}
    rows = []
    for r in lists.itertuples(index=False):
        t = seen_at[r.user_id]
        rows.append((r.user_id, r.item_id, C.IMPRESSION, None, t, list_ds, int(r.rank), surface))
        p = min(0.9, base_ctr * (0.3 + 3.0 * r.share) / np.sqrt(r.rank))
        if rng.random() < p:
            rows.append((r.user_id, r.item_id, "click", None,
                         min(end, t + pd.Timedelta(seconds=float(rng.uniform(5, 600)))),
                         None, None, None))
    ev = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.TS,
                                     C.LIST_DS, C.POSITION, C.SURFACE])
    clicked = set(zip(ev.loc[ev[C.EVENT_TYPE] == "click", C.USER_ID],
                      ev.loc[ev[C.EVENT_TYPE] == "click", C.ITEM_ID]))
    dismisses = []
    for u in shown[rng.random(len(shown)) < dismiss_share]:
        own = lists[(lists[C.USER_ID] == u)
                    & ~lists[C.ITEM_ID].map(lambda i, u=u: (u, i) in clicked)]
        if len(own):
            it = own[C.ITEM_ID].iloc[int(rng.integers(len(own)))]
            dismisses.append((u, it, C.DISMISS, None,
                              min(end, seen_at[u] + pd.Timedelta(seconds=30)), None, None, None))
    if dismisses:
        ev = pd.concat([ev, pd.DataFrame(dismisses, columns=ev.columns)], ignore_index=True)
    ev[C.VALUE] = ev[C.VALUE].astype("float64")
    ev[C.TS] = pd.to_datetime(ev[C.TS], utc=True).dt.floor("us")
    ev[C.POSITION] = ev[C.POSITION].astype("Int32")
    add_events_file(raw_root, day, ev.sort_values(C.TS, kind="stable"), f"frontend-{list_ds}")
    return {"list_ds": list_ds, "landed_ds": day.isoformat(), "users_shown": int(len(shown)),
            "impressions": int((ev[C.EVENT_TYPE] == C.IMPRESSION).sum()),
            "clicks": int((ev[C.EVENT_TYPE] == "click").sum()),
            "dismisses": int(len(dismisses))}

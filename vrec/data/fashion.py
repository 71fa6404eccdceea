"""Simulated shoppers over the real fashion-small catalog (photos + attributes).

Tastes are defined over attributes the recommender never sees (article type, colour,
usage); it sees only the photos and the clicks, so the visual path must recover the
tastes from the pixels. Items arrive over the simulated period; the last days' arrivals
are the true cold-start case (real photos, no history).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.data.rows import InputFileError, Rejects, read_csv_records

log = logging.getLogger(__name__)


def read_styles(folder: str | Path) -> tuple[pd.DataFrame, Rejects]:
    """styles.csv as text columns (``id`` kept as written; empty and ``NA`` are missing),
    read record by record: a bad line is a reject with its reason and line (logged), not
    the end of the file."""
    path = Path(folder) / "styles.csv"
    rejects = Rejects()
    rows = [r.fields for r in read_csv_records(path, ("id",), rejects)]
    if rejects.rows:
        log.warning("%s: %d line(s) rejected %s, first at line %d", path, len(rejects.rows),
                    rejects.counts(), rejects.rows[0]["line"])
    styles = pd.DataFrame(rows).replace({"": None, "NA": None})  # "NA": not available
    if styles.empty:
        raise InputFileError(f"{path}: no usable rows")
    return styles, rejects


def load_styles(folder: str | Path, with_images: set[str] | None = None) -> pd.DataFrame:
    """styles.csv rows that have an image (``id`` as string item_id)."""
    s = read_styles(folder)[0].rename(columns={"id": C.ITEM_ID})
    if with_images is None:
        with_images = {p.stem for p in (Path(folder) / "images").glob("*.jpg")}
    return s[s[C.ITEM_ID].isin(with_images)].reset_index(drop=True)


def simulate_shoppers(styles: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                      events_per_user: float = 30.0, taste: float = 3.0, seed: int = 0,
                      type_weight: float = 1.0, colour_weight: float = 0.5,
                      usage_weight: float = 0.3, n_types: int = 2, n_colours: int = 2,
                      n_usages: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, items). Each user has ``n_types`` favourite article types, ``n_colours``
    colours and ``n_usages`` usages; a click picks an item already arrived with
    probability proportional to ``popularity · exp(taste · affinity)``, affinity =
    ``type_weight·[type] + colour_weight·[colour] + usage_weight·[usage]`` (the taste mix;
    the defaults are 1, 0.5, 0.3 with 2 types, 2 colours, 1 usage). ``items`` holds
    item_id, arrival_day and the attributes."""
    rng = np.random.default_rng(seed)
    items = styles[[C.ITEM_ID, "articleType", "baseColour", "usage", "masterCategory"]].copy()
    n = len(items)
    items["arrival_day"] = rng.integers(0, days, n)
    # a third of the catalog is there from the start
    items.loc[rng.random(n) < 1 / 3, "arrival_day"] = 0
    pop = rng.lognormal(0.0, 1.0, n)
    types = items["articleType"].astype(str).to_numpy()
    colours = items["baseColour"].astype(str).to_numpy()
    usage = items["usage"].astype(str).to_numpy()
    tfreq = items["articleType"].value_counts(normalize=True)
    cfreq = items["baseColour"].value_counts(normalize=True)
    ufreq = items["usage"].value_counts(normalize=True)
    arrival = items["arrival_day"].to_numpy()
    rows = []
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    for u in range(n_users):
        ft = rng.choice(tfreq.index, n_types, replace=False, p=tfreq.to_numpy())
        fc = rng.choice(cfreq.index, n_colours, replace=False, p=cfreq.to_numpy())
        # (one usage is drawn as before the taste mix was configurable: same seeds, same users)
        fu = rng.choice(ufreq.index, n_usages, replace=n_usages == 1, p=ufreq.to_numpy())
        aff = (type_weight * np.isin(types, ft) + colour_weight * np.isin(colours, fc)
               + usage_weight * np.isin(usage, fu))
        w = pop * np.exp(taste * aff)
        n_ev = max(2, rng.poisson(events_per_user))
        ev_days = np.sort(rng.integers(0, days, n_ev))
        for d in ev_days:
            avail = arrival <= d
            p = w * avail
            i = rng.choice(n, p=p / p.sum())
            ts = t0 + pd.Timedelta(days=int(d)) + pd.Timedelta(seconds=int(rng.integers(0, 86400)))
            rows.append((f"s{u:05d}", items[C.ITEM_ID].iat[i], "click", None, ts))
    events = pd.DataFrame(rows, columns=S.RAW["events"].names())
    return events, items

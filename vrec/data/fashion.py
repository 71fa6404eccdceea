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


FORMS = ("softmax", "utility_noise", "funnel", "gender", "hidden_popularity", "mixture")
"""The generative forms of :func:`simulate_shoppers` (see its doc)."""


def simulate_shoppers(styles: pd.DataFrame, *, n_users: int = 2000, days: int = 60,
                      events_per_user: float = 30.0, taste: float = 3.0, seed: int = 0,
                      type_weight: float = 1.0, colour_weight: float = 0.5,
                      usage_weight: float = 0.3, n_types: int = 2, n_colours: int = 2,
                      n_usages: int = 1, form: str = "softmax",
                      titles: str = "shop") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, items). Each user has ``n_types`` favourite article types, ``n_colours``
    colours and ``n_usages`` usages, affinity = ``type_weight·[type] +
    colour_weight·[colour] + usage_weight·[usage]`` (the taste mix; the defaults are 1,
    0.5, 0.3 with 2 types, 2 colours, 1 usage), and each event picks an item already
    arrived. How a pick is made is the generative ``form``:

    * ``softmax``: probability ∝ ``popularity · exp(taste · affinity)`` (a click);
    * ``utility_noise``: a multinomial logit whose utility also holds a persistent
      idiosyncratic term ``ε_ui ~ N(0, 1)`` per shopper and item that no attribute or
      picture explains;
    * ``funnel``: the picked item is viewed; it is clicked with probability
      ``σ(2·affinity − 1)``, put in the cart with ``σ(2·affinity − 2)`` and bought with
      0.5 of those (event types view, click, add_to_cart, purchase);
    * ``gender``: shoppers have a gender and never pick items of the other one (a hard
      constraint; unisex items are open to both);
    * ``hidden_popularity``: item popularity is far wider (lognormal σ 2 instead of 1):
      a signal no picture shows;
    * ``mixture``: each shopper has ``n_types + 1`` separate tastes (an article type and
      a colour each) and each pick serves one of them, not their sum.

    ``titles``: ``shop`` ("Navy Blue Shirts": colour and article type, as shops write
    them) or ``opaque`` (a product number that names no attribute: the pictures are all
    the content side sees). ``items`` holds item_id, title, category, arrival_day and
    the attributes."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; forms: {', '.join(FORMS)}")
    rng = np.random.default_rng(seed)
    items = styles[[C.ITEM_ID, "articleType", "baseColour", "usage", "masterCategory",
                    "gender"]].copy()
    n = len(items)
    items["arrival_day"] = rng.integers(0, days, n)
    # a third of the catalog is there from the start
    items.loc[rng.random(n) < 1 / 3, "arrival_day"] = 0
    pop = rng.lognormal(0.0, 2.0 if form == "hidden_popularity" else 1.0, n)
    types = items["articleType"].astype(str).to_numpy()
    colours = items["baseColour"].astype(str).to_numpy()
    usage = items["usage"].astype(str).to_numpy()
    gender = items["gender"].astype(str).to_numpy()
    tfreq = items["articleType"].value_counts(normalize=True)
    cfreq = items["baseColour"].value_counts(normalize=True)
    ufreq = items["usage"].value_counts(normalize=True)
    arrival = items["arrival_day"].to_numpy()
    items[C.CATEGORY] = items["masterCategory"]
    items[C.TITLE] = (items["baseColour"].fillna("") + " " + items["articleType"].fillna("")
                      ).str.strip() if titles == "shop" else "Product " + items[C.ITEM_ID]
    rows = []
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    log_pop = np.log(pop)
    for u in range(n_users):
        ft = rng.choice(tfreq.index, n_types, replace=False, p=tfreq.to_numpy())
        fc = rng.choice(cfreq.index, n_colours, replace=False, p=cfreq.to_numpy())
        # (one usage is drawn as before the taste mix was configurable: same seeds, same users)
        fu = rng.choice(ufreq.index, n_usages, replace=n_usages == 1, p=ufreq.to_numpy())
        aff = (type_weight * np.isin(types, ft) + colour_weight * np.isin(colours, fc)
               + usage_weight * np.isin(usage, fu))
        util = taste * aff + log_pop
        if form == "utility_noise":
            util = util + rng.normal(0.0, 1.0, n)
        elif form == "gender":
            g = "Men" if rng.random() < 0.5 else "Women"
            util = np.where(np.isin(gender, [g, "Unisex"]), util, -np.inf)
        mix = None
        if form == "mixture":
            k = n_types + 1
            mt = rng.choice(tfreq.index, k, replace=False, p=tfreq.to_numpy())
            mc = rng.choice(cfreq.index, k, replace=True, p=cfreq.to_numpy())
            mix = [taste * (type_weight * (types == a) + colour_weight * (colours == b))
                   + log_pop for a, b in zip(mt, mc)]
        n_ev = max(2, rng.poisson(events_per_user))
        ev_days = np.sort(rng.integers(0, days, n_ev))
        uid = f"s{u:05d}"
        for d in ev_days:
            base = mix[rng.integers(len(mix))] if mix is not None else util
            x = np.where(arrival <= d, base, -np.inf)
            x = np.exp(x - x.max())
            i = rng.choice(n, p=x / x.sum())
            ts = t0 + pd.Timedelta(days=int(d)) + pd.Timedelta(seconds=int(rng.integers(0, 86000)))
            iid = items[C.ITEM_ID].iat[i]
            if form != "funnel":
                rows.append((uid, iid, "click", None, ts))
                continue
            rows.append((uid, iid, "view", None, ts))
            a = aff[i]
            for step, (etype, logit) in enumerate((("click", 2 * a - 1), ("add_to_cart", 2 * a - 2),
                                                   ("purchase", 0.0))):
                if rng.random() >= 1.0 / (1.0 + np.exp(-logit)):
                    break
                rows.append((uid, iid, etype, None, ts + pd.Timedelta(seconds=60 * (step + 1))))
    events = pd.DataFrame(rows, columns=S.RAW["events"].required())
    return events, items

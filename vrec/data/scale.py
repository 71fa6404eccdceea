"""A large synthetic landing zone for scale runs (``make bench-scale``): by default 200k
users, 50k items and 10M events over 30 days, with a picture for every item.

The per-user loop of :mod:`vrec.data.sample` is far too slow at this size, so events are
drawn in vectorised form. Tastes follow the same idea: each user likes two *groups*
(category x colour) and most of their events fall there; the rest follow global
popularity. Items are real fashion photos (with their own attributes) where a photo
folder is given, topped up with drawn product pictures; a share of the catalog arrives on
the last day, so the second night of a run has new items to embed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.data.sample import CATEGORIES, COLOURS, PATTERNS, render_item_image
from vrec.io.rawio import link_image_folder, write_catalog_snapshot, write_events_partition

log = logging.getLogger(__name__)
EVENT_MIX = (("view", 0.72), ("click", 0.15), ("add_to_cart", 0.08), ("purchase", 0.05))


@dataclass(frozen=True)
class ScaleSpec:
    """Size and shape of a scale data set."""

    n_users: int = 200_000
    n_items: int = 50_000
    n_events: int = 10_000_000
    days: int = 30
    end_date: dt.date = dt.date(2026, 11, 20)
    seed: int = 11
    last_day_share: float = 0.01   # items first seen on the last day (the second night's new items)
    early_share: float = 0.7       # items present from the first day
    taste_share: float = 0.75      # events inside one of the user's two liked groups
    dirty_share: float = 0.001     # unknown item ids and null user ids
    image_size: int = 96


def _catalog(spec: ScaleSpec, rng: np.random.Generator, photos: Path | None) -> pd.DataFrame:
    """Items with their group and arrival day; photos first (their own attributes)."""
    frames = []
    if photos is not None:
        from vrec.data.fashion import read_styles

        styles = read_styles(photos)[0]
        have = {p.stem for p in (photos / "images").glob("*.jpg")}
        styles = styles[styles["id"].isin(have)].dropna(subset=["articleType", "baseColour"])
        styles = styles.head(spec.n_items)
        frames.append(pd.DataFrame({
            C.ITEM_ID: "f" + styles["id"].astype(str).to_numpy(),
            C.CATEGORY: styles["articleType"].to_numpy(), "colour": styles["baseColour"].to_numpy(),
            "pattern": styles["usage"].fillna("Unknown").to_numpy(),
            "photo": [f"{i}.jpg" for i in styles["id"]]}))
    n_drawn = spec.n_items - sum(len(f) for f in frames)
    if n_drawn > 0:
        frames.append(pd.DataFrame({
            C.ITEM_ID: [f"s{k:06d}" for k in range(n_drawn)],
            C.CATEGORY: rng.choice(list(CATEGORIES), n_drawn),
            "colour": rng.choice(list(COLOURS), n_drawn),
            "pattern": rng.choice(PATTERNS, n_drawn), "photo": None}))
    items = pd.concat(frames, ignore_index=True)
    n = len(items)
    created = rng.integers(1, spec.days - 1, n)
    order = rng.permutation(n)
    created[order[: int(n * spec.early_share)]] = 0
    created[order[n - max(1, int(round(n * spec.last_day_share))):]] = spec.days - 1
    items["created_day"] = created
    items["group"] = items[C.CATEGORY] + "|" + items["colour"]
    items[C.TITLE] = items["colour"] + " " + items["pattern"] + " " + items[C.CATEGORY]
    items[C.PRICE] = np.round(rng.lognormal(3.3, 0.6, n), 2)
    items[C.DESCRIPTION] = None  # the optional column, left empty at scale
    return items


def _events_of_day(day: int, n: int, world: dict, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` events of day ``day``: users by activity, items by taste and popularity among
    the items that exist that day (``world``: the arrays built by :func:`generate_scale`)."""
    g_of, created, cw, starts = world["gid"], world["created"], world["cw"], world["starts"]
    avail = world["avail"][:, day]              # items of each group present on `day`
    users = np.searchsorted(world["user_cw"], rng.random(n) * world["user_cw"][-1], side="right")
    taste = rng.random(n) < world["taste_share"]
    group = np.where(taste, world["tastes"][users, rng.integers(0, 2, n)],
                     np.searchsorted(world["group_cw"], rng.random(n) * world["group_cw"][-1],
                                     side="right"))
    lo, cnt = starts[group], avail[group]
    empty = cnt == 0
    base = np.where(lo > 0, cw[np.maximum(lo - 1, 0)], 0.0)
    top = cw[np.maximum(lo + cnt - 1, 0)]
    r = base + rng.random(n) * (top - base)
    idx = np.clip(np.searchsorted(cw, r, side="right"), lo, np.maximum(lo + cnt - 1, lo))
    if empty.any():  # a group with nothing yet: any item that exists that day
        present = np.flatnonzero(created <= day)
        idx[empty] = rng.choice(present, int(empty.sum()))
    assert (created[idx] <= day).all() and (g_of[idx] == np.where(empty, g_of[idx], group)).all()
    kinds = np.array([k for k, _ in EVENT_MIX])
    kind = kinds[np.searchsorted(np.cumsum([p for _, p in EVENT_MIX]), rng.random(n), side="right")]
    return pd.DataFrame({"u": users, "i": idx, C.EVENT_TYPE: kind,
                         "sec": np.sort(rng.integers(0, 86_400, n))})


def generate_scale(raw_root: str | Path, spec: ScaleSpec = ScaleSpec(), *,
                   photos: str | Path | None = None) -> dict[str, int]:
    """Write the raw landing zone (``events/``, ``catalog/``, ``images/``) of a scale run.

    ``photos``: a folder with ``styles.csv`` and ``images/<id>.jpg`` (fashion-small);
    its photos are used first, linked into the raw zone, not copied. Progress goes to the
    log. Returns counts (users, items, photos, drawn images, events, days).
    """
    t0 = time.time()
    raw_root = Path(raw_root)
    rng = np.random.default_rng(spec.seed)
    photos = Path(photos) if photos else None
    items = _catalog(spec, rng, photos)
    # items sorted by (group, arrival) so the items of a group present on a day are a prefix
    items = items.sort_values(["group", "created_day", C.ITEM_ID], kind="stable").reset_index(drop=True)
    groups, gid = np.unique(items["group"].to_numpy(), return_inverse=True)
    items["gid"] = gid
    sizes = np.bincount(gid, minlength=len(groups))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    created = items["created_day"].to_numpy()
    avail = np.zeros((len(groups), spec.days), dtype=np.int64)
    for d in range(spec.days):
        avail[:, d] = np.bincount(gid[created <= d], minlength=len(groups))
    # item popularity: a cumulative weight, so a group's present items are one range of it;
    # every user likes two groups, drawn by group size; activity is heavy-tailed
    world = {"gid": gid, "created": created, "starts": starts, "avail": avail,
             "cw": np.cumsum(rng.lognormal(0, 1.0, len(items))), "taste_share": spec.taste_share,
             "group_cw": np.cumsum(np.sqrt(sizes)),
             "tastes": np.searchsorted(np.cumsum(sizes),
                                       rng.random((spec.n_users, 2)) * sizes.sum(), side="right"),
             "user_cw": np.cumsum(rng.lognormal(0, 1.0, spec.n_users))}
    user_ids = np.array([f"u{k:07d}" for k in range(spec.n_users)], dtype=object)
    # pictures: the photos through one link, the rest drawn from their attributes
    image_dir = raw_root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    uris = np.empty(len(items), dtype=object)
    is_photo = items["photo"].notna().to_numpy()
    if photos is not None and is_photo.any():
        link = link_image_folder(raw_root, "scale-photos", photos / "images")
        uris[is_photo] = [str(link / p) for p in items.loc[is_photo, "photo"]]
    drawn = np.flatnonzero(~is_photo)
    for n_done, k in enumerate(drawn, 1):
        row = items.iloc[k]
        rel = f"images/{row[C.ITEM_ID]}.jpg"
        path = raw_root / rel
        if not path.exists():
            path.write_bytes(render_item_image(row[C.CATEGORY], row["colour"], row["pattern"], rng,
                                               spec.image_size))
        uris[k] = rel
        if n_done % 10_000 == 0:
            log.info("scale: %d/%d pictures drawn (%.0f s)", n_done, len(drawn), time.time() - t0)
    items[C.IMAGE_URI] = uris
    start = spec.end_date - dt.timedelta(days=spec.days - 1)
    per_day = np.full(spec.days, spec.n_events // spec.days)
    per_day[: spec.n_events % spec.days] += 1
    item_ids = items[C.ITEM_ID].to_numpy(dtype=object)
    total = 0
    for d in range(spec.days):
        date = start + dt.timedelta(days=d)
        ev = _events_of_day(d, int(per_day[d]), world, rng)
        df = pd.DataFrame({
            C.USER_ID: user_ids[ev["u"].to_numpy()], C.ITEM_ID: item_ids[ev["i"].to_numpy()],
            C.EVENT_TYPE: ev[C.EVENT_TYPE].to_numpy(), C.VALUE: np.nan,
            C.TS: pd.Timestamp(date, tz="UTC") + pd.to_timedelta(ev["sec"].to_numpy(), unit="s")})
        n_dirty = int(len(df) * spec.dirty_share)
        if n_dirty:
            pick = rng.choice(len(df), n_dirty, replace=False)
            half = pick[: n_dirty // 2]
            df.loc[half, C.ITEM_ID] = "unknown-item"
            df.loc[pick[n_dirty // 2:], C.USER_ID] = None
        write_events_partition(raw_root, date, df)
        snap = items[created <= d].copy()
        snap[C.UPDATED_AT] = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(snap["created_day"], unit="D")
        write_catalog_snapshot(raw_root, date, snap[[c for c in S.RAW["catalog"].names() if c in snap]])
        total += len(df)
        log.info("scale: day %s written, %d events so far (%.0f s)", date, total, time.time() - t0)
    stats = {"users": spec.n_users, "items": len(items), "photos": int(is_photo.sum()),
             "drawn_images": len(drawn), "events": total, "days": spec.days,
             "new_on_last_day": int((created == spec.days - 1).sum()),
             "seconds": round(time.time() - t0, 1)}
    log.info("scale data written to %s: %s", raw_root, stats)
    return stats

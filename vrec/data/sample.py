"""Deterministic sample data: a synthetic shop whose pictures matter, or simulated users
over a real photo catalog. Both write the raw landing zone described in docs/tables.md.

Users' tastes are defined over item *attributes* (category, colour, pattern or usage),
never over pixels: a recommender that sees only clicks and pictures has to recover them.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.io.rawio import link_image_folder, write_catalog_snapshot, write_events_partition

log = logging.getLogger(__name__)

CATEGORIES: dict[str, str] = {
    # category -> shape drawn in its product photo
    "tops": "tshirt",
    "shoes": "shoe",
    "bags": "bag",
    "lamps": "lamp",
    "mugs": "mug",
    "posters": "frame",
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 70),
    "yellow": (230, 200, 40),
    "black": (30, 30, 30),
    "white": (235, 235, 235),
    "pink": (235, 130, 180),
    "brown": (130, 80, 40),
}
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks")


@dataclass(frozen=True)
class SampleSpec:
    """Size and shape of a generated sample."""

    n_users: int = 400
    n_items: int = 600
    days: int = 30
    end_date: dt.date = dt.date(2026, 11, 20)
    seed: int = 7
    image_size: int = 128
    new_item_share: float = 0.25
    missing_image_share: float = 0.01
    corrupt_image_share: float = 0.01
    daily_active_share: float = 0.3
    dirty_event_share: float = 0.002
    new_users: int = 8
    """Newcomers on the last day whose only events are low ratings (below
    weights.min_rating: seen, no history): cold users, whose lists are trending."""
    out_of_stock_share: float = 0.03
    """Items that go out of stock (``available`` false) on a day of the second half and
    stay out: the lists must never name them from that day on."""
    dismiss_share: float = 0.02
    """Of each day's active users, those who dismiss one item they never touched ("not
    for me")."""


def _draw_shape(draw, shape: str, box: tuple[int, int, int, int], fill, outline) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "tshirt":
        draw.polygon(
            [(x0 + w * .3, y0), (x0 + w * .7, y0), (x1, y0 + h * .25), (x0 + w * .85, y0 + h * .4),
             (x0 + w * .8, y1), (x0 + w * .2, y1), (x0 + w * .15, y0 + h * .4), (x0, y0 + h * .25)],
            fill=fill, outline=outline)
    elif shape == "shoe":
        draw.polygon([(x0, y0 + h * .55), (x0 + w * .45, y0 + h * .5), (x0 + w * .55, y0 + h * .2),
                      (x0 + w * .75, y0 + h * .2), (x1, y0 + h * .7), (x1, y1 - h * .15),
                      (x0, y1 - h * .15)], fill=fill, outline=outline)
    elif shape == "bag":
        draw.arc((x0 + w * .25, y0, x1 - w * .25, y0 + h * .5), 180, 360, fill=outline, width=4)
        draw.rectangle((x0, y0 + h * .3, x1, y1), fill=fill, outline=outline)
    elif shape == "lamp":
        draw.polygon([(x0 + w * .25, y0), (x0 + w * .75, y0), (x1, y0 + h * .45), (x0, y0 + h * .45)],
                     fill=fill, outline=outline)
        draw.rectangle((x0 + w * .45, y0 + h * .45, x0 + w * .55, y1 - h * .1), fill=outline)
        draw.rectangle((x0 + w * .25, y1 - h * .1, x1 - w * .25, y1), fill=outline)
    elif shape == "mug":
        draw.rectangle((x0, y0 + h * .15, x0 + w * .75, y1), fill=fill, outline=outline)
        draw.ellipse((x0 + w * .6, y0 + h * .35, x1, y0 + h * .75), outline=outline, width=5)
    else:  # frame
        draw.rectangle((x0, y0, x1, y1), fill=outline)
        draw.rectangle((x0 + w * .1, y0 + h * .1, x1 - w * .1, y1 - h * .1), fill=fill)


def render_item_image(category: str, colour: str, pattern: str, rng: np.random.Generator,
                      size: int = 128) -> bytes:
    """Draw a product photo (JPEG bytes) whose look follows category, colour and pattern."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(215, 250, size=3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    base = np.array(COLOURS[colour], dtype=float)
    fill = tuple(int(v) for v in np.clip(base + rng.normal(0, 12, 3), 0, 255))
    outline = (40, 40, 40) if colour != "black" else (120, 120, 120)
    margin = int(size * rng.uniform(0.1, 0.2))
    box = (margin, margin, size - margin, size - margin)
    _draw_shape(draw, CATEGORIES[category], box, fill, outline)
    # Pattern overlay inside the shape only (mask drawn with the same geometry).
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), CATEGORIES[category], box, 255, 0)
    overlay = Image.new("L", (size, size), 0)
    od = ImageDraw.Draw(overlay)
    contrast = (250, 250, 250) if sum(fill) < 380 else (20, 20, 20)
    step = max(6, size // 12)
    if pattern == "stripes":
        for x in range(0, size, step):
            od.rectangle((x, 0, x + step // 3, size), fill=255)
    elif pattern == "dots":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                od.ellipse((x - 2, y - 2, x + 2, y + 2), fill=255)
    elif pattern == "checks":
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    od.rectangle((x, y, x + step - 1, y + step - 1), fill=255)
    if pattern != "solid":
        arr = np.asarray(img).copy()
        pat = (np.asarray(mask) == 255) & (np.asarray(overlay) == 255)
        arr[pat] = contrast
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _arrival_days(n: int, spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """Day each item enters the catalog: most on day 0, the newest share spread over the
    later days, a few on the last day (cold start)."""
    n_new = int(round(n * spec.new_item_share))
    created = np.zeros(n, dtype=int)
    created[n - n_new:] = np.sort(rng.integers(1, spec.days, size=n_new))
    if n_new:
        created[-max(1, n_new // 20):] = spec.days - 1
    return created


def _synthetic_catalog(spec: SampleSpec, rng: np.random.Generator) -> pd.DataFrame:
    cats = list(CATEGORIES)
    cols = list(COLOURS)
    n = spec.n_items
    cat = rng.choice(cats, size=n)
    col = rng.choice(cols, size=n)
    pat = rng.choice(PATTERNS, size=n)
    created = _arrival_days(n, spec, rng)
    return pd.DataFrame({
        C.ITEM_ID: [f"i{k:05d}" for k in range(n)],
        C.TITLE: [f"{c.title()} {p} {k[:-1] if k.endswith('s') else k} #{i}"
                  for i, (k, c, p) in enumerate(zip(cat, col, pat))],
        C.CATEGORY: cat,
        C.PRICE: np.round(rng.lognormal(3.2, 0.5, size=n), 2),
        # the optional description: every other item has one (the rest are nulls)
        C.DESCRIPTION: [f"A {p} {k[:-1] if k.endswith('s') else k} in {c}" if i % 2 == 0
                        else None for i, (k, c, p) in enumerate(zip(cat, col, pat))],
        "axis_a": cat, "axis_b": col, "axis_c": pat,
        "created_day": created,
    })


def _real_catalog(spec: SampleSpec, catalog_dir: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Items drawn from a real catalog's styles.csv (bad lines are logged and skipped:
    the sample picks among the good ones)."""
    from vrec.data.fashion import read_styles

    styles = read_styles(catalog_dir)[0]
    image_dir = catalog_dir / "images"
    have = {p.stem for p in image_dir.glob("*.jpg")}
    styles = styles[styles["id"].isin(have)].dropna(subset=["articleType", "baseColour"])
    if styles.empty:
        raise ValueError(f"no rows of {catalog_dir}/styles.csv have an image in {image_dir}")
    n = min(spec.n_items, len(styles))
    pick = styles.sample(n=n, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    created = _arrival_days(n, spec, rng)
    return pd.DataFrame({
        C.ITEM_ID: "f" + pick["id"],
        C.TITLE: (pick["baseColour"] + " " + pick["articleType"] + " (" + pick["gender"].fillna("")
                  + ")"),
        C.CATEGORY: pick["articleType"],
        C.PRICE: np.round(rng.lognormal(3.5, 0.6, size=n), 2),
        C.DESCRIPTION: (pick["usage"].fillna("") + " " + pick["season"].fillna("") + " "
                        + pick["subCategory"].fillna("")).str.strip().replace("", None),
        "axis_a": pick["articleType"], "axis_b": pick["baseColour"],
        "axis_c": pick["usage"].fillna("Unknown"),
        "created_day": created,
        "source_image": [str((image_dir / f"{i}.jpg").resolve()) for i in pick["id"]],
    })


def _simulate_events(items: pd.DataFrame, spec: SampleSpec, rng: np.random.Generator,
                     start: dt.date) -> dict[dt.date, pd.DataFrame]:
    """Users with tastes over the three attribute axes, plus popularity bias."""
    axes = ["axis_a", "axis_b", "axis_c"]
    axis_weights = np.array([1.6, 1.0, 0.7])
    values = {a: sorted(items[a].unique()) for a in axes}
    # item popularity: a fixed lognormal draw (some items are simply more popular)
    pop = rng.lognormal(0, 0.8, size=len(items))
    # each user likes one or two values per axis
    prefs = []
    for _ in range(spec.n_users):
        prefs.append({a: set(rng.choice(values[a], size=min(len(values[a]), int(rng.integers(1, 3))),
                                        replace=False)) for a in axes})
    item_vals = {a: items[a].to_numpy() for a in axes}
    created = items["created_day"].to_numpy()
    item_ids = items[C.ITEM_ID].to_numpy()
    out: dict[dt.date, pd.DataFrame] = {}
    funnel = (("click", 0.35), ("add_to_cart", 0.35), ("purchase", 0.5))
    for day in range(spec.days):
        date = start + dt.timedelta(days=day)
        avail = np.flatnonzero(created <= day)
        # new arrivals are shown less often until they gain traction
        age_boost = np.where(created[avail] == day, 0.3, 1.0)
        rows: list[tuple] = []
        active = np.flatnonzero(rng.random(spec.n_users) < spec.daily_active_share)
        day_start = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
        for u in active:
            aff = np.zeros(len(avail))
            for w, a in zip(axis_weights, axes):
                aff += w * np.isin(item_vals[a][avail], list(prefs[u][a]))
            logits = 1.4 * aff + 0.5 * np.log(pop[avail]) + np.log(age_boost)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            n_views = 1 + rng.poisson(4)
            seen = rng.choice(avail, size=min(n_views, len(avail)), replace=False, p=p)
            t = day_start + dt.timedelta(seconds=float(rng.uniform(0, 80000)))
            for i in seen:
                t += dt.timedelta(seconds=float(rng.uniform(5, 120)))
                rows.append((f"u{u:05d}", item_ids[i], "view", None, t))
                like = aff[np.searchsorted(avail, i)] / axis_weights.sum()
                for ev, base in funnel:
                    if rng.random() < base * (0.4 + like):
                        t += dt.timedelta(seconds=float(rng.uniform(5, 60)))
                        rows.append((f"u{u:05d}", item_ids[i], ev, None, t))
                    else:
                        break
        df = pd.DataFrame(rows, columns=S.RAW["events"].required())
        df[C.VALUE] = df[C.VALUE].astype("float64")
        out[date] = df
    return out


def _add_dirty_events(events: dict[dt.date, pd.DataFrame], spec: SampleSpec,
                      rng: np.random.Generator) -> None:
    """Ordinary dirt: unknown item ids, null user ids and exact duplicates."""
    for date, df in events.items():
        n = int(np.ceil(len(df) * spec.dirty_event_share))
        if n == 0 or df.empty:
            continue
        bad = df.sample(n=min(n, len(df)), random_state=int(rng.integers(2**31))).copy()
        bad.iloc[0::3, bad.columns.get_loc(C.ITEM_ID)] = "unknown-item"
        bad.iloc[1::3, bad.columns.get_loc(C.USER_ID)] = None
        events[date] = pd.concat([df, bad], ignore_index=True).sort_values(C.TS, kind="stable")


def _add_newcomers(events: dict[dt.date, pd.DataFrame], items: pd.DataFrame, spec: SampleSpec
                   ) -> None:
    """Users who arrive on the last day and only rate one to three items low (1 to 2.5
    stars, below the default min_rating of 3): every item is seen, none is history."""
    if spec.new_users <= 0:
        return
    rng = np.random.default_rng(spec.seed + 7919)  # apart: the rest of the sample is unchanged
    last = max(events)
    avail = items.loc[items["created_day"] <= spec.days - 1, C.ITEM_ID].to_numpy()
    day_start = dt.datetime(last.year, last.month, last.day, tzinfo=dt.UTC)
    rows = []
    for j in range(spec.new_users):
        t = day_start + dt.timedelta(seconds=float(rng.uniform(0, 80000)))
        for item in rng.choice(avail, size=min(int(rng.integers(1, 4)), len(avail)), replace=False):
            t += dt.timedelta(seconds=float(rng.uniform(30, 600)))
            rows.append((f"u{spec.n_users + j:05d}", item, "rating",
                         float(rng.choice([1.0, 1.5, 2.0, 2.5])), t))
    new = pd.DataFrame(rows, columns=S.RAW["events"].required())
    events[last] = pd.concat([events[last], new], ignore_index=True).sort_values(C.TS, kind="stable")


def _out_of_stock_days(n: int, spec: SampleSpec) -> np.ndarray:
    """The day each item goes out of stock (a day of the second half), or ``days`` for
    items that never do."""
    rng = np.random.default_rng(spec.seed + 104729)  # apart: the rest is unchanged
    out = np.full(n, spec.days, dtype=int)
    k = int(round(n * spec.out_of_stock_share))
    if k and spec.days > 1:
        pick = rng.choice(n, size=min(k, n), replace=False)
        out[pick] = rng.integers(max(1, spec.days // 2), spec.days, size=len(pick))
    return out


def _add_dismisses(events: dict[dt.date, pd.DataFrame], items: pd.DataFrame, spec: SampleSpec
                   ) -> None:
    """A few ``dismiss`` events: some active users say "not for me" to an item they never
    touched, a minute after their last event of the day."""
    if spec.dismiss_share <= 0:
        return
    rng = np.random.default_rng(spec.seed + 15485863)
    ids = items[C.ITEM_ID].to_numpy()
    created = items["created_day"].to_numpy()
    for day, date in enumerate(sorted(events)):
        df = events[date]
        ok = df[df[C.USER_ID].notna()]
        if ok.empty:
            continue
        users = ok[C.USER_ID].unique()
        pick = users[rng.random(len(users)) < spec.dismiss_share]
        rows = []
        last = ok.groupby(C.USER_ID)[C.TS].max()
        touched = ok.groupby(C.USER_ID)[C.ITEM_ID].agg(set)
        for u in pick:
            cand = [i for i in ids[created <= day] if i not in touched[u]]
            if cand:
                rows.append((u, cand[int(rng.integers(len(cand)))], C.DISMISS, None,
                             min(last[u] + dt.timedelta(minutes=1),
                                 pd.Timestamp(date + dt.timedelta(days=1), tz="UTC")
                                 - dt.timedelta(seconds=1))))
        if rows:
            new = pd.DataFrame(rows, columns=S.RAW["events"].required())
            events[date] = pd.concat([df, new], ignore_index=True).sort_values(C.TS, kind="stable")


def generate_sample(raw_root: str | Path, spec: SampleSpec = SampleSpec(), *,
                    catalog_dir: str | Path | None = None) -> dict[str, int]:
    """Write a deterministic raw landing zone under ``raw_root``.

    Parameters
    ----------
    raw_root : path
        Output folder: ``events/ds=*/``, ``catalog/ds=*/`` and ``images/``.
    spec : SampleSpec
        Sizes, dates and seed.
    catalog_dir : path, optional
        A real catalog (``styles.csv`` + ``images/{id}.jpg``, e.g. fashion-small) used
        instead of drawn images; image_uri then holds absolute paths into that folder.

    Returns
    -------
    dict
        Counts: users, new_users, items, events, days, images, missing_images,
        corrupt_images, out_of_stock, dismisses.
    """
    raw_root = Path(raw_root)
    rng = np.random.default_rng(spec.seed)
    start = spec.end_date - dt.timedelta(days=spec.days - 1)
    if catalog_dir is None:
        items = _synthetic_catalog(spec, rng)
    else:
        items = _real_catalog(spec, Path(catalog_dir), rng)
    n = len(items)
    image_dir = raw_root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(n)
    n_missing = int(round(n * spec.missing_image_share))
    n_corrupt = int(round(n * spec.corrupt_image_share))
    missing = set(order[:n_missing])
    corrupt = set(order[n_missing:n_missing + n_corrupt])
    uris: list[str | None] = []
    for k, row in enumerate(items.itertuples(index=False)):
        if k in missing:
            uris.append(None)
            continue
        if catalog_dir is None:
            data = render_item_image(row.axis_a, row.axis_b, row.axis_c, rng, spec.image_size)
            rel = f"images/{row.item_id}.jpg"
            if k in corrupt:
                data = data[: len(data) // 3] if k % 2 else b"this is not an image"
            (raw_root / rel).write_bytes(data)
            uris.append(rel)
        else:
            if k in corrupt:
                rel = f"images/{row.item_id}.jpg"
                (raw_root / rel).write_bytes(b"this is not an image")
                uris.append(rel)
            else:  # the real photo, through a link into the raw zone (read from there)
                linked = link_image_folder(raw_root, "catalog", Path(row.source_image).parent)
                uris.append(str(linked / Path(row.source_image).name))
    items[C.IMAGE_URI] = uris
    events = _simulate_events(items, spec, rng, start)
    _add_dirty_events(events, spec, rng)
    _add_newcomers(events, items, spec)
    _add_dismisses(events, items, spec)
    gone = _out_of_stock_days(n, spec)
    total = 0
    for day, (date, df) in enumerate(sorted(events.items())):
        write_events_partition(raw_root, date, df)
        total += len(df)
        snap = items[items["created_day"] <= day].copy()
        snap[C.AVAILABLE] = gone[snap.index.to_numpy()] > day
        snap[C.UPDATED_AT] = [
            pd.Timestamp(start + dt.timedelta(days=int(c)), tz="UTC") for c in snap["created_day"]
        ]
        write_catalog_snapshot(raw_root, date, snap[[c for c in S.RAW["catalog"].names() if c in snap]])
    stats = {
        "users": spec.n_users, "new_users": max(spec.new_users, 0), "items": n, "events": total, "days": spec.days,
        "images": n - n_missing, "missing_images": n_missing, "corrupt_images": n_corrupt,
        "out_of_stock": int((gone < spec.days).sum()),
        "dismisses": int(sum((df[C.EVENT_TYPE] == C.DISMISS).sum() for df in events.values())),
    }
    log.info("sample written to %s: %s", raw_root, stats)
    return stats


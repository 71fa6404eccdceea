"""The catalog as retrieval and ranking see it: one row per catalog item, in item-id order.

:func:`build_item_space` aligns the run's CF factors, image embeddings, categories and
trending order on the catalog, marks new arrivals (an image and at most
``recs.cold_item_max_users`` users) and predicts their factors with the cold-start map
(:mod:`vrec.core.coldstart`). :func:`gate_new_arrivals` turns new arrivals off when that
map ranks no better than ``recs.new_arrival_min_auc``. The candidates stage saves the
space (``.npy`` files that Spark tasks memory-map) and build_recs ranks over the same one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import RecsSettings, VisualSettings
from vrec.core.coldstart import fit_ridge_map, l2_normalise
from vrec.core.visual import ImageFeatures, fit_pca, gram

if TYPE_CHECKING:
    from vrec.core.cf import CFModel

ARRAYS = ("item_ids", "emb", "has_vec", "factors", "warm", "new", "category", "trending",
          "category_names", "pref_z", "has_z", "pref_gram", "text_dims", "stats", "blocked")
# the columns of ItemSpace.stats, as of the space's cutoff (the learned ranker's item
# features): distinct users whose latest event is at most 1, 7 and 30 days old, the 7-day
# trend (daily users of 7 days / of 30), days since the item's oldest pair's latest event
# (a lower bound on how long it has been known; NaN without pairs), and the price
STATS = ("users_1d", "users_7d", "users_30d", "trend_7d", "days_known", "price")


@dataclass
class ItemSpace:
    """The catalog as the ranker sees it; row ``i`` of every array is catalog item ``i``.

    ``emb``: L2-normalised image embeddings (zero rows for items without one);
    ``factors``: ALS factors of warm items, predicted factors of new arrivals, zeros
    otherwise; ``warm``: has an ALS factor; ``new``: new arrival (predicted factor);
    ``category``: code into ``category_names`` (-1 unknown); ``trending``: catalog
    indices in trending order (every item once); ``pref_z``: the content features of
    the preference model and the cold-start map (image PCA and/or text, the last
    ``text_dims[0]`` columns text; zero rows for items with neither), ``has_z`` which
    items have them, and ``pref_gram`` their ``ZᵀZ`` (vrec.core.visual); ``blocked``:
    never recommended (unavailable or excluded: :func:`block_items`); such items stay in
    every array (they are history and signal) but no candidate source or trending fill
    returns them.
    """

    item_ids: np.ndarray
    emb: np.ndarray
    has_vec: np.ndarray
    factors: np.ndarray
    warm: np.ndarray
    new: np.ndarray
    category: np.ndarray
    trending: np.ndarray
    category_names: np.ndarray
    pref_z: np.ndarray
    has_z: np.ndarray
    pref_gram: np.ndarray
    text_dims: np.ndarray
    stats: np.ndarray | None = None
    blocked: np.ndarray | None = None
    # search structures built from these arrays (vrec.core.retrieval); a replaced space
    # (dataclasses.replace) starts with an empty cache
    cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stats is None:  # no facts known: every stat unknown
            self.stats = np.full((len(self.item_ids), len(STATS)), np.nan, dtype=np.float32)
        if self.blocked is None:  # every item may be recommended
            self.blocked = np.zeros(len(self.item_ids), dtype=bool)

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """One ``.npy`` per array (tasks memory-map them) and ``meta.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            arr = getattr(self, name)
            np.save(folder / f"{name}.npy",
                    np.asarray(arr).astype(str) if name in ("item_ids", "category_names") else arr)
        (folder / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = True) -> ItemSpace:
        """Read a space written by :meth:`save`."""
        mode = "r" if mmap else None
        return cls(**{n: np.load(Path(folder) / f"{n}.npy", mmap_mode=mode) for n in ARRAYS
                      if n != "blocked" or (Path(folder) / f"{n}.npy").is_file()})

    def text_only(self) -> ItemSpace | None:
        """The same space with only the text block of the content features (the ``text``
        model and the text-preference source); None without text features."""
        t = int(np.asarray(self.text_dims).ravel()[0]) if np.size(self.text_dims) else 0
        if t == 0:
            return None
        if "text_only" not in self.cache:
            # the text columns alone: the image block would only add zeros to every
            # product and solve (the same numbers, a third of the work)
            z = np.ascontiguousarray(np.asarray(self.pref_z)[:, -t:], dtype=np.float32)
            has = np.abs(z).sum(axis=1) > 0
            self.cache["text_only"] = dataclasses.replace(
                self, pref_z=z, has_z=has, pref_gram=gram(z[has]),
                new=np.asarray(self.new, dtype=bool) & has)
        return self.cache["text_only"]

    @staticmethod
    def meta(folder: str | Path) -> dict:
        """The ``meta.json`` written with the space (map quality, why slots are off)."""
        return json.loads((Path(folder) / "meta.json").read_text())


def catalog_embedding_matrix(item_ids: np.ndarray, vectors: pd.DataFrame
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(emb, has_vec) aligned with ``item_ids``; rows without a vector are zeros."""
    index = {str(i): j for j, i in enumerate(item_ids)}
    dim = len(vectors["embedding"].iloc[0]) if len(vectors) else 1
    emb = np.zeros((len(item_ids), dim), dtype=np.float32)
    has = np.zeros(len(item_ids), dtype=bool)
    for iid, vec in zip(vectors[C.ITEM_ID], vectors["embedding"]):
        j = index.get(str(iid))
        if j is not None:
            emb[j] = np.asarray(vec, dtype=np.float32)
            has[j] = True
    return emb, has


def index_of(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Position of each value in ``universe`` (-1 when absent)."""
    def strings(a) -> pd.Index:  # Python str objects: no fixed-width copy of 8.8M ids
        return pd.Index(np.asarray(a, dtype=object)).astype(str)

    index = strings(universe)
    if not index.is_unique:  # a dict keeps a repeated value's last position
        lookup = {v: i for i, v in enumerate(index)}
        return np.asarray([lookup.get(str(v), -1) for v in values], dtype=np.int64)
    return index.get_indexer(strings(values)).astype(np.int64)


def item_stats(item_ids: np.ndarray, pairs: pd.DataFrame, catalog: pd.DataFrame,
               end: pd.Timestamp | None) -> np.ndarray:
    """The :data:`STATS` columns of each item in ``item_ids`` from the pairs known at
    ``end`` (None: the latest pair's time) and the catalog's price, when it has one."""
    out = np.full((len(item_ids), len(STATS)), np.nan, dtype=np.float32)
    if C.PRICE in catalog:
        price = pd.to_numeric(catalog.set_index(catalog[C.ITEM_ID].astype(str))[C.PRICE],
                              errors="coerce")
        out[:, STATS.index("price")] = price[~price.index.duplicated()].reindex(
            item_ids.astype(str)).to_numpy(dtype=np.float32)
    if pairs.empty:
        out[:, :3] = 0.0
        return out
    last = pd.to_datetime(pairs["last_ts"], utc=True)
    end = pd.Timestamp(end) if end is not None else last.max()
    end = end.tz_localize("UTC") if end.tzinfo is None else end
    age = ((end - last).dt.total_seconds() / 86400.0).to_numpy()
    ci = index_of(pairs[C.ITEM_ID].to_numpy(), item_ids)
    ok = ci >= 0
    for j, days in enumerate((1, 7, 30)):
        out[:, j] = np.bincount(ci[ok & (age <= days)], minlength=len(item_ids))
    out[:, 3] = np.where(out[:, 2] > 0, (out[:, 1] / 7.0) / np.maximum(out[:, 2] / 30.0, 1e-9),
                         np.nan)
    oldest = np.full(len(item_ids), -np.inf)
    np.maximum.at(oldest, ci[ok], age[ok])
    out[:, 4] = np.where(np.isfinite(oldest), oldest, np.nan)
    return out


def build_item_space(model: CFModel, catalog: pd.DataFrame, vectors: pd.DataFrame,
                     pairs: pd.DataFrame, trending_ids: list[str], recs: RecsSettings, *,
                     visual: VisualSettings | None = None, seed: int = 0,
                     content: ImageFeatures | None = None,
                     end: pd.Timestamp | None = None) -> tuple[ItemSpace, dict]:
    """The catalog-indexed arrays of the ranker and the cold-start map's quality
    (``skipped`` with the reason when too few warm items have content features;
    ``pca_explained``: the share of image variance the image features keep, when they
    are computed here).

    ``content``: the run's content features (vrec.core.visual.content_features); None:
    the images' PCA features only. New arrivals are items with content features and at
    most ``recs.cold_item_max_users`` distinct users (pairs with weight > 0); their
    factors come from the ridge map from content features to ALS factors, fit on warm
    items with content features and at least ``recs.map_min_users`` users. ``end``: the
    cutoff the item stats are measured from (None: the latest pair).
    """
    item_ids = np.asarray(sorted(catalog[C.ITEM_ID].astype(str)), dtype=object)
    cats = catalog.set_index(catalog[C.ITEM_ID].astype(str))[C.CATEGORY].reindex(item_ids)
    names = sorted(str(c) for c in cats.dropna().unique())
    code = {c: j for j, c in enumerate(names)}
    category = np.asarray([code.get(str(c), -1) if pd.notna(c) else -1 for c in cats],
                          dtype=np.int64)
    emb, has = catalog_embedding_matrix(item_ids, vectors)
    emb = l2_normalise(emb)
    visual = visual or VisualSettings()
    explained = None
    if content is None and has.sum() >= 2:
        pca = fit_pca(emb[has], visual.dim, whiten=visual.whiten)
        content = ImageFeatures(item_ids[has].astype(str), pca.project(emb[has]))
        explained = pca.explained
    if content is not None:
        pref_z, has_z = content.lookup(item_ids)
        text_dims = content.text_dims
    else:
        pref_z = np.zeros((len(item_ids), min(visual.dim, emb.shape[1])), dtype=np.float32)
        has_z, text_dims = np.zeros(len(item_ids), dtype=bool), 0
    pos = pairs[pairs["weight"] > 0]
    ci = index_of(pos[C.ITEM_ID].to_numpy(), item_ids)
    users = np.bincount(ci[ci >= 0], minlength=len(item_ids))
    mpos = index_of(item_ids, model.item_ids)
    in_model = mpos >= 0
    new = has_z & (users <= recs.cold_item_max_users)
    warm = in_model & ~new
    f = np.asarray(model.item_factors).shape[1]
    factors = np.zeros((len(item_ids), f), dtype=np.float32)
    factors[warm] = np.asarray(model.item_factors)[mpos[warm]]
    fit = warm & has_z & (users >= recs.map_min_users)
    uidx = index_of(pos[C.USER_ID].to_numpy(), model.user_ids)
    ok = (ci >= 0) & (uidx >= 0)
    liked = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (uidx[ok], ci[ok])),
                          shape=(len(model.user_ids), len(item_ids)))
    fit_idx = np.flatnonzero(fit)
    rmap = fit_ridge_map(pref_z[fit_idx], factors[fit_idx], np.asarray(model.user_factors),
                         liked[:, fit_idx], seed=seed)
    if rmap is not None:
        factors[new] = rmap.predict(pref_z[new])
    else:
        new[:] = False  # no map: new arrivals are reached through the content path only
    t = index_of(np.asarray(trending_ids), item_ids)
    t = t[t >= 0]
    rest = np.setdiff1d(np.arange(len(item_ids)), t)
    space = ItemSpace(item_ids=item_ids.astype(str), emb=emb, has_vec=has, factors=factors,
                      warm=warm, new=new, category=category,
                      trending=np.concatenate([t, rest]).astype(np.int64),
                      category_names=np.asarray(names, dtype=str), pref_z=pref_z, has_z=has_z,
                      pref_gram=gram(pref_z[has_z]),
                      text_dims=np.asarray([text_dims], dtype=np.int64),
                      stats=item_stats(item_ids, pos, catalog, end))
    quality = ({"skipped": f"{len(fit_idx)} warm items with content features and >= "
                           f"{recs.map_min_users} users; the map needs 20", "new_arrivals": 0}
               if rmap is None else {**rmap.quality, "new_arrivals": int(new.sum())})
    return space, {**quality, "content_dim": int(pref_z.shape[1]), "text_dims": int(text_dims),
                   "content_items": int(has_z.sum()), "pca_explained": explained}


def block_items(space: ItemSpace, blocked_ids) -> ItemSpace:
    """``space`` with ``blocked`` set for the items of ``blocked_ids``."""
    blocked = np.isin(space.item_ids.astype(str), np.asarray(list(blocked_ids), dtype=str))
    return dataclasses.replace(space, blocked=blocked)


def open_trending(space: ItemSpace) -> np.ndarray:
    """The trending order without the blocked items: what the trending source and the
    fill may list (``space.trending`` keeps every item: the ranker's trending rank)."""
    if "open_trending" not in space.cache:
        t = np.asarray(space.trending)
        space.cache["open_trending"] = t[~np.asarray(space.blocked)[t]].astype(np.int64)
    return space.cache["open_trending"]


def gate_new_arrivals(space: ItemSpace, map_quality: dict | None, min_auc: float,
                      blend: dict | None = None) -> tuple[ItemSpace, str | None]:
    """Use the cold-start map only when it ranks held-out warm items for their users with
    AUC >= ``min_auc``, and the blend tuning's map on its forward window (``blend``:
    the tuning record, when there is one) did too. Otherwise a map no better than chance
    would spend list places on noise: new arrivals get no predicted CF score and no
    reserved slots (they stay reachable through the pictures, as plain items). Returns
    the space to retrieve and rank with, and why new arrivals were turned off (or None)."""
    a = (map_quality or {}).get("auc_mapped")
    window = (blend or {}).get("slots_off")
    if a is not None and a >= min_auc and not window:
        return space, None
    if a is None:
        why = f"no cold-start map ({(map_quality or {}).get('skipped', 'not fit')})"
    elif a < min_auc:
        why = f"cold-start map AUC {a} < recs.new_arrival_min_auc {min_auc}"
    else:
        why = f"on the tuning's forward window: {window}"
    new = np.asarray(space.new, dtype=bool)
    factors = np.array(space.factors, dtype=np.float32)
    factors[new] = 0.0
    return dataclasses.replace(space, new=np.zeros_like(new), factors=factors), why


def ranking_policy(recs: RecsSettings, blend: dict | None = None,
                   slots_off: str | None = None) -> RecsSettings:
    """The ``recs`` settings a run ranks with: the tuned blend (``blend['chosen']``) when
    there is one, and no reserved new-arrival slots when the map gate turned them off."""
    update = dict((blend or {}).get("chosen") or {})
    if slots_off:
        update["new_arrival_slots"] = 0
    return recs.model_copy(update=update) if update else recs

"""Forward windows: what is known at a cutoff, and what users did after it.

One builder serves every tuning and the evaluation (docs/evaluation.md, "Forward
windows"). A :class:`Window` holds

* ``train``: the (user, item) pairs aggregated from the events before the cutoff, with
  the run's weights and their time decay measured from the cutoff;
* ``relevant``: each user's labels, the items they interacted with positively after the
  cutoff (up to ``label_end``) that they had no pair with before it; users who were cold
  at the cutoff and items that were new arrivals at the cutoff are included;
* ``trending``: item ids in trending order as of the cutoff (None: the training part's
  distinct users per item);
* ``end``: the cutoff itself (recency in profiles is measured from it).

:func:`forward_window` builds it from pairs aggregated as of the cutoff and the labels'
pairs; the Spark side (vrec.spark.windows) aggregates them from the staged events.
:func:`user_window` is the evaluation's per-user split (``eval.split: user``) for data
without a usable time axis; the tunings never use it.
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.core.metrics import ndcg_at_k

# what a window's training pairs hold (the user builder needs event types and counts)
PAIR_COLUMNS = [C.USER_ID, C.ITEM_ID, "weight", "last_ts", "event_types", "n_events"]


@dataclasses.dataclass
class Window:
    """Features as of a cutoff and the labels after it (module doc). ``users`` is the
    sample of labelled users a tuning or an evaluation scores (all of them until
    :meth:`sampled`)."""

    train: pd.DataFrame
    relevant: dict[str, set[str]]
    end: pd.Timestamp
    split: str
    trending: list[str] | None = None
    label_end: pd.Timestamp | None = None
    users: np.ndarray | None = None
    labels: pd.DataFrame | None = None
    # facts of ``train`` found once, for this window and the samples taken of it (they
    # share the frame): {name: (the frame, value)}
    cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.users is None:
            self.users = np.asarray(sorted(self.relevant), dtype=object)

    def train_users(self) -> frozenset[str]:
        """The distinct users of the training pairs (found once per training frame: at
        10M each :meth:`info` of the tunings' window spent about 2 s on them)."""
        held = self.cache.get("train_users")
        if held is None or held[0] is not self.train:
            held = self.cache["train_users"] = (
                self.train, frozenset(pd.unique(self.train[C.USER_ID].astype(str))))
        return held[1]

    def sampled(self, max_users: int, seed: int = 0) -> Window:
        """The same window scoring at most ``max_users`` labelled users (a fixed-seed
        sample, sorted)."""
        users = np.asarray(sorted(self.relevant), dtype=object)
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        return dataclasses.replace(self, users=users)

    def first_days(self, days: float) -> Window:
        """The same window with only the labels of the first ``days`` days after the
        cutoff (label pairs need ``first_ts``), scoring the users of :attr:`users` who
        have one: what a holdout of ``days`` days would see, for comparing an estimate
        with it at the same length."""
        if self.labels is None or "first_ts" not in self.labels:
            raise ValueError("this window's labels carry no first_ts")
        lab = self.labels[pd.to_datetime(self.labels["first_ts"], utc=True)
                          < self.end + pd.Timedelta(days=days)]
        rel = _relevant(lab)
        users = np.asarray([u for u in self.users if u in rel], dtype=object)
        return dataclasses.replace(self, relevant=rel, users=users, labels=lab,
                                   label_end=self.end + pd.Timedelta(days=days))

    def trending_ids(self) -> list[str]:
        """Item ids in trending order as of the cutoff."""
        return list(self.trending) if self.trending is not None else \
            training_popularity(self.train).index.tolist()

    def info(self) -> dict:
        known = self.train_users()
        cold = set(self.users) - known
        return {"split": self.split, "cutoff": str(self.end),
                "label_end": None if self.label_end is None else str(self.label_end),
                "train_pairs": int(len(self.train)),
                "train_users": len(known),
                "test_users": len(self.relevant),
                "test_pairs": int(sum(len(v) for v in self.relevant.values())),
                "scored_users": int(len(self.users)), "cold_users": len(cold),
                "train_end": str(self.end)}

    def ndcg(self, lists: dict[str, list[str]], k: int) -> np.ndarray:
        """Per-user NDCG@k of ``{user: [item_id, ...]}`` over the window's users."""
        return np.asarray([ndcg_at_k(lists.get(u, []), self.relevant[u], k) for u in self.users])


def _relevant(pairs: pd.DataFrame) -> dict[str, set[str]]:
    """``{user: items with weight > 0}``, users in sorted order."""
    pos = pairs[pairs["weight"] > 0]
    out: dict[str, set[str]] = {}
    for u, i in zip(pos[C.USER_ID].astype(str).tolist(), pos[C.ITEM_ID].astype(str).tolist()):
        out.setdefault(u, set()).add(i)
    return dict(sorted(out.items()))


def forward_window(train: pd.DataFrame, labels: pd.DataFrame, cutoff: pd.Timestamp, *,
                   trending: list[str] | None = None,
                   label_end: pd.Timestamp | None = None) -> Window:
    """The window of a cutoff: ``train`` = pairs aggregated from events before
    ``cutoff``; ``labels`` = (user_id, item_id, weight[, first_ts]) of the events after
    it (``first_ts``: the pair's first event after the cutoff). Relevant
    = label pairs with weight > 0 that the user had no training pair with (seen items
    are never recommended, so they could not be hit). A label pair whose ``last_ts`` is
    before the cutoff would be a leak: ValueError."""
    if "last_ts" in train and len(train):
        late = pd.to_datetime(train["last_ts"], utc=True) >= cutoff
        if late.any():
            raise ValueError(f"{int(late.sum())} training pair(s) end at or after the cutoff "
                             f"{cutoff}: features must be built from events before it")
    gc_was = gc.isenabled()
    gc.disable()  # millions of tuples: the cyclic collector would walk them again and again
    try:
        seen = set(zip(train[C.USER_ID].astype(str).tolist(),
                       train[C.ITEM_ID].astype(str).tolist()))
        keep = np.fromiter(((str(u), str(i)) not in seen for u, i in
                            zip(labels[C.USER_ID].tolist(), labels[C.ITEM_ID].tolist())),
                           dtype=bool, count=len(labels))
        del seen
    finally:
        if gc_was:
            gc.enable()
    kept = labels[keep]  # a boolean mask (an empty list would select no columns)
    return Window(train, _relevant(kept), cutoff, "forward", trending, label_end,
                  labels=kept.reset_index(drop=True))


def user_window(pairs: pd.DataFrame, end: pd.Timestamp, *, fraction: float = 0.2,
                min_pairs: int = 5) -> Window:
    """Per-user chronological split: each user's latest ``fraction`` of pairs (users with
    at least ``min_pairs``) is test; relevant = those with weight > 0."""
    train, test = per_user_chronological_split(pairs, fraction, min_pairs)
    return Window(train, _relevant(test), end, "user")


def per_user_chronological_split(pairs: pd.DataFrame, fraction: float = 0.2,
                                 min_pairs: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``fraction`` of pairs (by last_ts) is test, for users with at
    least ``min_pairs`` pairs; returns (train, test)."""
    p = pairs.sort_values([C.USER_ID, "last_ts", C.ITEM_ID], kind="stable")
    n = p.groupby(C.USER_ID)[C.ITEM_ID].transform("size")
    from_end = p.groupby(C.USER_ID).cumcount(ascending=False)
    test = (from_end < np.ceil(fraction * n)) & (n >= min_pairs)
    return p[~test], p[test]


def training_popularity(train: pd.DataFrame) -> pd.Series:
    """Distinct users with a positive training pair per item, most popular first (ties
    by item id)."""
    pos = train[train["weight"] > 0]
    n = pos.groupby(pos[C.ITEM_ID].astype(str))[C.USER_ID].nunique()
    return n.sort_index().sort_values(ascending=False, kind="stable")


def pairs_from_events(events: pd.DataFrame, cutoff: pd.Timestamp, *,
                      weight: str = "weight") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training pairs, label pairs) of weighted events (user_id, item_id, ts, weight):
    events before ``cutoff`` summed per pair (with ``last_ts``), events from it on kept
    as (user, item, max weight). The pandas twin of vrec.spark.windows for benchmarks
    and tests; no time decay."""
    ts = pd.to_datetime(events[C.TS], utc=True)
    before = events[ts < cutoff]
    after = events[ts >= cutoff]
    train = before.groupby([C.USER_ID, C.ITEM_ID], as_index=False).agg(
        weight=(weight, "sum"), last_ts=(C.TS, "max"), n_events=(weight, "size"))
    labels = after.groupby([C.USER_ID, C.ITEM_ID], as_index=False).agg(
        weight=(weight, "max"), first_ts=(C.TS, "min"))
    return train, labels

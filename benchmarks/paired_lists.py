"""Two versions of one night's published lists, paired per user against what followed.

The realised metrics of the product (vrec.core.feedback.user_scores: binary NDCG over a
list, hit when the user engaged with a listed item) per user, for lists ``a`` and ``b``
of the same list night, over the engagements in the ``days`` days after it; the users
are those active in that window with a list in both. Reports each side's mean NDCG and
hit rate and the paired per-user difference b - a ± its standard error.

    python benchmarks/paired_lists.py --a OLD/user_recs/ds=2026-11-19 \\
        --b NEW/user_recs/ds=2026-11-19 --events NEW/_runs/2026-11-20/events \\
        --list-ds 2026-11-19
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vrec import columns as C  # noqa: E402
from vrec.core.feedback import end_of, user_scores  # noqa: E402
from vrec.core.tuning import paired_gain  # noqa: E402


def paired(a: pd.Series, b: pd.Series) -> dict:
    """Mean of each side and the paired difference b - a ± SE over the shared index."""
    diff, se = paired_gain(b.to_numpy(dtype=float), a.to_numpy(dtype=float))
    return {"a": round(float(a.mean()), 5), "b": round(float(b.mean()), 5),
            "diff": round(diff, 5), "se": round(se, 5)}


def compare(a_lists: pd.DataFrame, b_lists: pd.DataFrame, events: pd.DataFrame, list_ds: str,
            days: int = 1) -> dict:
    """The paired comparison (module doc) of two list frames (user_id, rank, item_id)."""
    ts = pd.to_datetime(events[C.TS], utc=True)
    start = end_of(list_ds)
    window = events[(ts >= start) & (ts < start + pd.Timedelta(days=days))]
    both = set(a_lists[C.USER_ID]) & set(b_lists[C.USER_ID])
    scores = {}
    for side, lists in (("a", a_lists), ("b", b_lists)):
        _, users = user_scores(lists[lists[C.USER_ID].isin(both)], window)
        scores[side] = users
    users = scores["a"].index.intersection(scores["b"].index)
    sa, sb = scores["a"].loc[users], scores["b"].loc[users]
    return {"list_ds": list_ds, "days": days, "users_with_both_lists": len(both),
            "active_users": int(len(users)),
            "ndcg": paired(sa["ndcg"], sb["ndcg"]),
            "hit_rate": paired((sa["hits"] > 0).astype(float), (sb["hits"] > 0).astype(float)),
            "rows_equal": bool(a_lists.sort_values([C.USER_ID, "rank"])[[C.USER_ID, "rank", C.ITEM_ID]]
                               .reset_index(drop=True).equals(
                                   b_lists.sort_values([C.USER_ID, "rank"])
                                   [[C.USER_ID, "rank", C.ITEM_ID]].reset_index(drop=True)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="the first lists (user_recs folder)")
    ap.add_argument("--b", required=True, type=Path, help="the second lists")
    ap.add_argument("--events", required=True, type=Path,
                    help="engagement events (a staged events folder) covering the days after")
    ap.add_argument("--list-ds", required=True, help="the night the lists were published for")
    ap.add_argument("--days", type=int, default=1, help="days of engagements after it")
    args = ap.parse_args(argv)
    cols = [C.USER_ID, "rank", C.ITEM_ID]
    out = compare(pd.read_parquet(args.a, columns=cols), pd.read_parquet(args.b, columns=cols),
                  pd.read_parquet(args.events, columns=[C.USER_ID, C.ITEM_ID, C.TS]),
                  args.list_ds, args.days)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

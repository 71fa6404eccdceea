"""The learned ranker's cost at the 10M night's shape, against the blend in the same run.

Reads the night-1 warehouse that ``make bench-scale`` keeps (synth10m: 200,000 users ×
50,000 items, 8.9M pairs; ``benchmarks/.cache/scale-10m/night1``), takes a sample of its
users and times, on one core, what the ranker adds to a night:

* retrieval with the ranker's two extra sources (trending, last items) against without;
* ranking each user's candidates with the ranker (features + scoring by the compiled
  trees) against the blend;
* scoring the sample's candidates with the night's ranker (its ``ranker.json``), its
  trees compiled against LightGBM's predictor (and their largest difference);
* a LightGBM fit on training rows of the size the night fits (``ranker.max_users``
  queries), with the rounds fixed (the fashion runs chose 40-80).

Labels for the fit are drawn at random (the cost does not depend on them). Per-user
times are extrapolated to all users over the 2 Spark tasks of a 2-core machine. The
training windows' own cost (a forward window's aggregation and a CF fit on it) is the
tuning's, measured in the e2e benchmark's train_cf row.

    .venv/bin/python benchmarks/bench_ranker.py [--users 4000] [--rounds 80]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
NIGHT = REPO / "benchmarks" / ".cache" / "scale-10m" / "night1" / "warehouse" / "_runs" / "2026-11-19"


def _space(folder: Path, pairs: pd.DataFrame, end: pd.Timestamp):
    """The staged item space; arrays an older warehouse lacks are filled as a night
    would (content = the image features, no text; item stats from the pairs)."""
    from vrec.core.itemspace import ARRAYS, ItemSpace, item_stats

    arr = {}
    for name in ARRAYS:
        f = folder / f"{name}.npy"
        if f.exists():
            arr[name] = np.load(f, mmap_mode="r")
    arr.setdefault("has_z", np.asarray(arr["has_vec"]))
    arr.setdefault("text_dims", np.asarray([0]))
    ids = np.asarray(arr["item_ids"]).astype(str)
    arr["stats"] = item_stats(ids, pairs, pd.DataFrame({"item_id": ids}), end)
    return ItemSpace(**arr)


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from vrec import columns as C
    from vrec.config import RankerSettings, RecsSettings, VisualSettings
    from vrec.core.cf import CFModel
    from vrec.core.ranker import Ranker, features, fit_ranker
    from vrec.core.ranking import rank
    from vrec.core.retrieval import retrieve
    from vrec.core.users import pairs_by_user, user_batch

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--night", type=Path, default=NIGHT)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ranker_10m.json")
    a = ap.parse_args(argv)
    if not (a.night / "item_space").is_dir():
        raise SystemExit(f"no night-1 warehouse at {a.night}: run `make bench-scale` first")
    t0 = time.perf_counter()
    pairs = pd.read_parquet(a.night / "interactions",
                            columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts", "event_types",
                                     "n_events"])
    end = pd.Timestamp("2026-11-20", tz="UTC")
    space = _space(a.night / "item_space", pairs, end)
    model = CFModel.load(a.night / "model", mmap=True)
    all_users = pairs[C.USER_ID].nunique()
    users = np.random.default_rng(0).choice(pairs[C.USER_ID].unique(), a.users, replace=False)
    rows = pairs_by_user(pairs[pairs[C.USER_ID].isin(set(users))], users)
    del pairs
    recs, visual = RecsSettings(), VisualSettings()
    print(f"loaded {space.n} items, {all_users} users; sample {a.users} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"items": int(space.n), "users": int(all_users), "sample": a.users, "rounds": a.rounds}
    timings: dict[str, float] = {}
    with threadpool_limits(1, "blas"):  # one Spark task's share
        batches, inps = [], {}
        for s in range(0, a.users, recs.batch_users):
            batches.append(user_batch(rows.iloc[s:s + recs.batch_users], space, model, recs, end))
        # the search indexes are built once per worker: not part of either timing
        retrieve(batches[0], space, recs.candidates, visual, extra=True)
        for extra in (False, True):
            t = time.perf_counter()
            inps[extra] = [retrieve(b, space, recs.candidates, visual, extra=extra)
                           for b in batches]
            timings[f"retrieve_extra_{extra}"] = time.perf_counter() - t
        cands = {e: int(sum(len(c) for i in v for c in i.items)) for e, v in inps.items()}
        # a model of the night's size: training rows as ranker.max_users queries make
        X = np.concatenate([features(i, space) for i in inps[True]])
        n_q = sum(len(i.items) for i in inps[True])
        rng = np.random.default_rng(1)
        per = RankerSettings().negatives + 2
        keep = np.concatenate([rng.choice(len(c), min(len(c), per), replace=False) + o
                               for c, o in zip((c for i in inps[True] for c in i.items),
                                               np.cumsum([0] + [len(c) for i in inps[True]
                                                                for c in i.items])[:-1])])
        # the scoring peers, on the night's own ranker (trained on real labels: the fit
        # below, on random ones, grows other trees), before the fit: right after a
        # two-thread LightGBM fit the compiled scoring was once 3x slower
        record = a.night / "ranker.json"
        if not record.exists():
            raise SystemExit(f"no ranker.json in {a.night}: the night trained no ranker")
        scorer = Ranker(json.loads(record.read_text())["model"])
        t = time.perf_counter()
        out["engine"] = scorer.engine  # compiles the trees (or loads them from the cache)
        timings["compile"] = time.perf_counter() - t
        scores = {}
        for name, fn in (("predict_lightgbm", scorer.predict_lightgbm),
                         ("predict_compiled", scorer.predict)):
            t = time.perf_counter()
            scores[name] = fn(X)
            timings[name] = time.perf_counter() - t
        out["predict_rows"] = int(len(X))
        out["predict_max_abs_difference"] = float(np.abs(scores["predict_compiled"]
                                                         - scores["predict_lightgbm"]).max())
        reps = max(1, RankerSettings().max_users // n_q)
        Xt = np.tile(X[keep], (reps, 1))
        groups = np.tile([min(len(c), per) for i in inps[True] for c in i.items], reps)
        y = (rng.random(len(Xt)) < 0.03).astype(np.float32)
        t = time.perf_counter()
        ranker, facts = fit_ranker(Xt, y, groups, RankerSettings(), k=recs.k, rounds=a.rounds,
                                   threads=2)
        timings["fit_2_threads"] = time.perf_counter() - t
        time.sleep(2)  # a pause between the two-thread fit and the rankings
        out["fit_rows"] = int(len(Xt))
        learned = Ranker(ranker.model, slots=0)
        for name, model_ in (("rank_blend", None), ("rank_ranker", learned)):
            # fresh inputs, as build_recs reads them: nothing computed for the features
            # above (a RankInput caches its per-list sorts) may serve the timed ranking
            fresh = [dataclasses.replace(i) for i in inps[True]]
            t = time.perf_counter()
            for i in fresh:
                rank(i, space, recs, model_)
            timings[name] = time.perf_counter() - t
    per_user = {k: v / a.users for k, v in timings.items() if k not in ("fit_2_threads", "compile")}
    night = {k: round(v * all_users / 2, 1) for k, v in per_user.items()}  # 2 tasks
    out.update({
        "seconds_sample": {k: round(v, 2) for k, v in timings.items()},
        "candidates_per_user": {str(k): round(v / a.users, 1) for k, v in cands.items()},
        "night_seconds_2_tasks": night,
        "extra_retrieval_night_s": round(night["retrieve_extra_True"]
                                         - night["retrieve_extra_False"], 1),
        "extra_ranking_night_s": round(night["rank_ranker"] - night["rank_blend"], 1),
        "ratios": {"retrieve extra / plain": round(timings["retrieve_extra_True"]
                                                   / timings["retrieve_extra_False"], 3),
                   "rank ranker / blend": round(timings["rank_ranker"]
                                                / timings["rank_blend"], 3),
                   "predict compiled / lightgbm": round(timings["predict_compiled"]
                                                        / timings["predict_lightgbm"], 3)},
    })
    print(json.dumps(out, indent=2))
    a.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

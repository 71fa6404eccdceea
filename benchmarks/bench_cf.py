"""Benchmark scenarios `cf-*`: vrec's ALS stage and all-user top-K against their peers.

Same matrix, same rank / iterations / regularization / alpha, same run, same machine:

  train   raw ``implicit`` fit on a prebuilt CSR (the peer; fit only) and vrec's
          train_cf_model (engine ``implicit``: read the Parquet pairs, build the CSR, fit),
          interleaved --rounds times in one process with a Spark session up; medians
          Spark MLlib ``ALS(implicitPrefs=True)`` fit (ids indexed by StringIndexer)
  top-K   numpy blocked matrix product only (the roofline: no selection, no output)
          interleaved with vrec's score_all_users in Spark, end to end (seen items
          excluded, rows written to Spark's ``noop`` sink); the first, cold call (Python
          workers starting) reported apart; medians of the warm calls
          numpy product + argpartition (the obvious implementation), once
          MLlib ``recommendForAllUsers`` (no exclusion) after its fit, to the ``noop`` sink
  quality NDCG@10 of every fitted model on a time holdout, scored the same way (train
          items excluded).

Each group runs in its own process so peak memory (RSS of the process tree, JVM
included, sampled every 0.2 s) is per group. Scenarios:

  movielens  ../shared/datasets/movielens-small ratings; per-user chronological holdout
             (each user's last 20% of ratings), relevant = held-out ratings >= 3
  synth50k   50,000 users x 20,000 items, ~1.9M pairs over 60 days; global time cutoff,
             last 7 days held out
  synth10m   200,000 users x 50,000 items, ~10M pairs; same cutoff

    .venv/bin/python benchmarks/bench_cf.py --scenario synth50k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
CACHE = REPO / "benchmarks" / ".cache"
SCENARIOS = {
    "movielens": None,
    "synth50k": dict(users=50_000, items=20_000, pairs=1_900_000, seed=1),
    "synth10m": dict(users=200_000, items=50_000, pairs=10_000_000, seed=2),
}
K = 10
EVENT_P = {"view": 0.70, "click": 0.20, "add_to_cart": 0.07, "purchase": 0.03}


# ---------------------------------------------------------------- data

def synth_events(users: int, items: int, pairs: int, seed: int) -> pd.DataFrame:
    """Shop events with taste clusters and long-tail popularity over 60 days."""
    rng = np.random.default_rng(seed)
    n_ev = int(pairs * 1.52)  # ~26% of events repeat a pair or fall in the test week
    clusters = 200
    item_cluster = np.sort(rng.integers(0, clusters, items))
    pop = rng.pareto(1.1, items) + 1.0
    starts = np.searchsorted(item_cluster, np.arange(clusters + 1))
    cum = np.empty(items)
    for c in range(clusters):
        seg = pop[starts[c]:starts[c + 1]]
        cum[starts[c]:starts[c + 1]] = c + np.cumsum(seg) / max(seg.sum(), 1e-12)
    counts = np.maximum(3, rng.lognormal(0, 0.9, users))
    counts = np.maximum(3, np.round(counts * n_ev / counts.sum())).astype(np.int64)
    user = np.repeat(np.arange(users), counts)[:n_ev]
    taste = rng.integers(0, clusters, (users, 3))
    mix = rng.dirichlet(np.ones(3), users)
    pick = (rng.random(len(user))[:, None] > np.cumsum(mix[user], axis=1)).sum(axis=1).clip(0, 2)
    cl = taste[user, pick]
    item = np.searchsorted(cum, cl + rng.random(len(user)) * 0.999999).clip(0, items - 1)
    noise = rng.random(len(user)) < 0.15
    gpop = np.cumsum(pop) / pop.sum()
    item[noise] = np.searchsorted(gpop, rng.random(int(noise.sum()))).clip(0, items - 1)
    et = rng.choice(list(EVENT_P), size=len(user), p=list(EVENT_P.values()))
    day = rng.random(len(user)) * 60
    return pd.DataFrame({"user_id": np.char.add("u", user.astype(str)),
                         "item_id": np.char.add("i", item.astype(str)),
                         "event_type": et, "day": day})


def aggregate(ev: pd.DataFrame) -> pd.DataFrame:
    """vrec's default event weights (view 1, click 2, cart 4, purchase 8) summed per pair."""
    w = ev["event_type"].map({"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0})
    return (ev.assign(weight=w).groupby(["user_id", "item_id"], as_index=False)
            .agg(weight=("weight", "sum"), n_events=("weight", "size")))


def prepare(scenario: str) -> dict:
    """Write train.parquet (user_id, item_id, weight, n_events) and test.parquet."""
    folder = CACHE / scenario
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if scenario == "movielens":
        path = DATASETS / "movielens-small" / "ratings.csv"
        if not path.is_file():
            raise SystemExit(f"{path} not found: this scenario needs ../shared/datasets")
        r = pd.read_csv(path).sort_values(["userId", "timestamp", "movieId"])
        r["pos"] = r.groupby("userId").cumcount() / r.groupby("userId")["movieId"].transform("size")
        r["user_id"], r["item_id"] = "u" + r["userId"].astype(str), "m" + r["movieId"].astype(str)
        tr, te = r[r["pos"] < 0.8], r[r["pos"] >= 0.8]
        # vrec's rating weight: 2 * value / 5 at >= 3 stars, 0 below (seen, not trained)
        train = pd.DataFrame({"user_id": tr["user_id"], "item_id": tr["item_id"],
                              "weight": np.where(tr["rating"] >= 3, 2.0 * tr["rating"] / 5, 0.0),
                              "n_events": 1})
        test = te[te["rating"] >= 3][["user_id", "item_id"]]
        split = "per-user chronological, last 20% of each user's ratings; relevant = rating >= 3"
    else:
        ev = synth_events(**SCENARIOS[scenario])
        tr, te = ev[ev["day"] < 53], ev[ev["day"] >= 53]
        train = aggregate(tr)
        test = te[["user_id", "item_id"]].drop_duplicates()
        split = "global time cutoff: days 0-53 train, days 53-60 test (pairs new in test)"
    known = set(zip(train["user_id"], train["item_id"]))
    test = test[[p not in known for p in zip(test["user_id"], test["item_id"])]]
    test = test[test["user_id"].isin(set(train["user_id"])) & test["item_id"].isin(set(train["item_id"]))]
    train.to_parquet(folder / "train.parquet", index=False)
    test.to_parquet(folder / "test.parquet", index=False)
    meta = {"scenario": scenario, "split": split, "train_pairs": int(len(train)),
            "positive_pairs": int((train["weight"] > 0).sum()),
            "users": int(train["user_id"].nunique()), "items": int(train["item_id"].nunique()),
            "test_pairs": int(len(test)), "test_users": int(test["user_id"].nunique()),
            "prepare_seconds": round(time.perf_counter() - t0, 1)}
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------- shared helpers

def cf_settings(args):
    from vrec.config import CFSettings

    return CFSettings(factors=args.factors, iterations=args.iterations,
                      regularization=args.regularization, alpha=args.alpha, gpu="off")


def ndcg_at_k(folder: Path, user_ids, item_ids, uf, itf, k: int = K) -> float:
    """Mean NDCG@k over test users; train items excluded; binary relevance."""
    from vrec.spark.candidates import seen_for_model, topk_blocked

    test = pd.read_parquet(folder / "test.parquet")
    uix, iix = pd.Index(np.asarray(user_ids, dtype=str)), pd.Index(np.asarray(item_ids, dtype=str))
    seen = seen_for_model(folder / "train.parquet", uix.to_numpy(), iix.to_numpy())
    test = test.assign(u=uix.get_indexer(test["user_id"]), i=iix.get_indexer(test["item_id"]))
    test = test[(test["u"] >= 0) & (test["i"] >= 0)]
    rel = test.groupby("u")["i"].apply(set)
    users = rel.index.to_numpy()
    idx, _ = topk_blocked(uf[users], itf, k, exclude=seen[users])
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for row, u in zip(idx, users):
        r = rel[u]
        dcg = sum(disc[j] for j, it in enumerate(row) if it in r)
        scores.append(dcg / disc[:min(len(r), k)].sum())
    return float(np.mean(scores))


def spark_session(args):
    from vrec.config import Settings
    from vrec.spark.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    s = Settings(spark={"master": "local[*]", "conf": {
        "spark.sql.shuffle.partitions": "8", "spark.driver.memory": args.driver_memory,
        "spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false"}})
    return build_session(s, "vrec-bench-cf")


# ---------------------------------------------------------------- groups (one process each)

def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def group_train(folder: Path, args) -> dict:
    """Raw implicit fit on a prebuilt CSR vs vrec's train_cf_model from the Parquet pairs,
    interleaved ``--rounds`` times in one process with a Spark session up (as in the
    stage); medians reported."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from vrec.core.cf import build_matrix, train_cf_model

    users, items, mat = build_matrix(pd.read_parquet(folder / "train.parquet"), args.alpha)
    spark = spark_session(args)
    raw_s, vrec_s = [], []
    try:
        for _ in range(args.rounds):
            with threadpool_limits(1, "blas"):
                raw = AlternatingLeastSquares(factors=args.factors, regularization=args.regularization,
                                              alpha=1.0, iterations=args.iterations, random_state=42,
                                              calculate_training_loss=False)
                t = time.perf_counter()
                raw.fit(mat, show_progress=False)
                raw_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            model = train_cf_model(spark, folder / "train.parquet", cf_settings(args), ds="2026-01-01")
            vrec_s.append(time.perf_counter() - t)
        model.save(folder / "vrec_model")
    finally:
        spark.stop()
    return {"implicit_fit_s": _median(raw_s), "vrec_train_s": _median(vrec_s),
            "implicit_fit_runs": raw_s, "vrec_train_runs": vrec_s,
            "implicit_ndcg10": ndcg_at_k(folder, users, items, np.asarray(raw.user_factors),
                                         np.asarray(raw.item_factors)),
            "vrec_ndcg10": ndcg_at_k(folder, model.user_ids, model.item_ids,
                                     model.user_factors, model.item_factors)}


def group_topk(folder: Path, args) -> dict:
    """vrec's score_all_users in Spark (cold once, then warm, interleaved with the numpy
    roofline); numpy argpartition once."""
    from vrec.core.cf import CFModel
    from vrec.spark.candidates import score_all_users, seen_for_model

    m = CFModel.load(folder / "vrec_model")
    uf, itf = np.asarray(m.user_factors), np.asarray(m.item_factors)
    spark = spark_session(args)
    model, inter = folder / "vrec_model", folder / "train.parquet"

    def vrec_once() -> float:
        t = time.perf_counter()
        score_all_users(spark, model, inter, n=K).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    def product_once() -> float:
        t = time.perf_counter()
        for s in range(0, len(uf), 1024):
            _ = uf[s:s + 1024] @ itf.T
        return time.perf_counter() - t

    try:
        cold = vrec_once()
        warm, prod = [], []
        for _ in range(args.rounds):
            prod.append(product_once())
            warm.append(vrec_once())
        rows = score_all_users(spark, model, inter, n=K).count()
    finally:
        spark.stop()
    seen = seen_for_model(inter, m.user_ids, m.item_ids)
    t = time.perf_counter()
    for s in range(0, len(uf), 1024):
        blk = uf[s:s + 1024] @ itf.T
        sub = seen[s:s + 1024]
        blk[np.repeat(np.arange(len(blk)), np.diff(sub.indptr)), sub.indices] = -np.inf
        part = np.argpartition(-blk, K - 1, axis=1)[:, :K]
        ps = np.take_along_axis(blk, part, axis=1)
        _ = np.take_along_axis(part, np.argsort(-ps, axis=1), axis=1)
    argp = time.perf_counter() - t
    return {"vrec_topk_cold_s": cold, "vrec_topk_s": _median(warm), "vrec_topk_runs": warm,
            "numpy_product_s": _median(prod), "numpy_product_runs": prod,
            "numpy_argpartition_topk_s": argp, "vrec_topk_rows": int(rows)}


def group_mllib(folder: Path, args) -> dict:
    """Spark MLlib implicit ALS fit and recommendForAllUsers on the same pairs."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    spark = spark_session(args)
    try:
        pairs = spark.read.parquet(str(folder / "train.parquet")).where(F.col("weight") > 0)
        idx = {c: StringIndexer(inputCol=c, outputCol=f"_{c}", stringOrderType="alphabetAsc").fit(pairs)
               for c in ("user_id", "item_id")}
        data = idx["item_id"].transform(idx["user_id"].transform(pairs)).cache()
        data.count()
        als = ALS(rank=args.factors, maxIter=args.iterations, regParam=args.regularization,
                  alpha=args.alpha, implicitPrefs=True, seed=42, userCol="_user_id",
                  itemCol="_item_id", ratingCol="weight")
        t = time.perf_counter()
        model = als.fit(data)
        model.userFactors.count()
        fit = time.perf_counter() - t
        t = time.perf_counter()
        model.recommendForAllUsers(K).write.format("noop").mode("overwrite").save()
        rec = time.perf_counter() - t

        def factors(df, n):
            pdf = df.toPandas()
            out = np.zeros((n, args.factors), np.float32)
            out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy())
            return out

        users, items = idx["user_id"].labels, idx["item_id"].labels
        uf, itf = factors(model.userFactors, len(users)), factors(model.itemFactors, len(items))
    finally:
        spark.stop()
    return {"mllib_fit_s": fit, "mllib_recommend_all_s": rec,
            "mllib_ndcg10": ndcg_at_k(folder, users, items, uf, itf)}


GROUPS = {"train": group_train, "topk": group_topk, "mllib": group_mllib}


# ---------------------------------------------------------------- driver

def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_group(name: str, args) -> dict:
    """Run one group in a child process; return its JSON plus peak RSS of its tree."""
    import psutil

    out = CACHE / args.scenario / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--scenario", args.scenario, "--group", name,
           "--factors", str(args.factors), "--iterations", str(args.iterations),
           "--regularization", str(args.regularization), "--alpha", str(args.alpha),
           "--driver-memory", args.driver_memory, "--rounds", str(args.rounds)]
    print(f"[bench] {args.scenario}: {name} ...", flush=True)
    t = time.perf_counter()
    child = subprocess.Popen(cmd)
    proc, peak, done = psutil.Process(child.pid), 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = child.wait()
    done.set()
    th.join()
    if rc != 0 or not out.is_file():
        raise SystemExit(f"[bench] group {name} failed with exit code {rc}")
    res = json.loads(out.read_text())
    res[f"{name}_peak_rss_gb"] = round(peak / 2**30, 2)
    print(f"[bench] {args.scenario}: {name} done in {time.perf_counter() - t:.0f} s: "
          + ", ".join(f"{k}={v:.3f}" for k, v in res.items() if isinstance(v, float)),
          flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=list(SCENARIOS), required=True)
    ap.add_argument("--group", choices=list(GROUPS), help=argparse.SUPPRESS)
    ap.add_argument("--groups", default="train,topk,mllib")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats (medians)")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--regularization", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    folder = CACHE / args.scenario
    if args.group:
        res = GROUPS[args.group](folder, args)
        (folder / f"{args.group}.json").write_text(json.dumps(res))
        return 0
    meta = prepare(args.scenario)
    print(f"[bench] {args.scenario}: {meta}", flush=True)
    path = args.out / f"cf_{args.scenario}.json"
    res: dict = {}
    if path.is_file() and args.groups != "train,topk,mllib":  # a partial rerun updates its groups
        res = json.loads(path.read_text()).get("results", {})
    for g in args.groups.split(","):
        res.update(run_group(g, args))
    ratios = {}
    if {"vrec_train_s", "implicit_fit_s"} <= res.keys():
        ratios["vrec_train / implicit_fit"] = res["vrec_train_s"] / res["implicit_fit_s"]
    if {"mllib_fit_s", "vrec_train_s"} <= res.keys():
        ratios["mllib_fit / vrec_train"] = res["mllib_fit_s"] / res["vrec_train_s"]
    if {"vrec_topk_s", "numpy_product_s"} <= res.keys():
        ratios["vrec_topk / numpy_product"] = res["vrec_topk_s"] / res["numpy_product_s"]
        ratios["numpy_argpartition / numpy_product"] = res["numpy_argpartition_topk_s"] / res["numpy_product_s"]
    if {"mllib_recommend_all_s", "vrec_topk_s"} <= res.keys():
        ratios["mllib_recommend_all / vrec_topk"] = res["mllib_recommend_all_s"] / res["vrec_topk_s"]
    record = {"scenario": f"cf-{args.scenario}", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
              "params": {"factors": args.factors, "iterations": args.iterations,
                         "regularization": args.regularization, "alpha": args.alpha, "k": K},
              "data": meta, "results": res, "ratios": ratios}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps({"ratios": ratios}, indent=2))
    print(f"[bench] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark scenarios `cf-*`: vrec's CF, candidates and ranking stages against peers.

Same matrix, same rank / iterations / regularization / alpha, same run, same machine:

  train       raw ``implicit`` fit on a prebuilt CSR (the peer; fit only) and vrec's
              fit_cf (engine ``implicit``: read the Parquet pairs, build the CSR, fit),
              interleaved --rounds times in one process with a Spark session up; medians
              Spark MLlib ``ALS(implicitPrefs=True)`` fit (ids indexed by StringIndexer)
  candidates  the candidates stage's work: the item space (with synthetic clustered
              1280-d image vectors, so the visual and new-arrival sources and the ridge
              map do real work), then every user's CF, visual and new-arrival top-N
              (N = 50) in Spark, written as the stage writes them (since issue 32's sixth
              pass; before, to the ``noop`` sink); the first, cold call reported apart,
              medians of the warm calls, interleaved with the numpy roofline: the CF and
              the visual matrix products of the same shapes in one process (no
              selection, no output); numpy CF product + argpartition top-K once
              MLlib ``recommendForAllUsers`` (CF only, no exclusion), to the ``noop`` sink
  rank        build_recs' ranking of the staged candidates in Spark (cold, then warm
              medians) against the same ranker in one process over all users (the peer)
  quality     NDCG@10 of every fitted model on a time holdout, scored the same way (train
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
import shutil
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


START = pd.Timestamp("2026-01-01", tz="UTC")


def aggregate(ev: pd.DataFrame) -> pd.DataFrame:
    """vrec's default event weights (view 1, click 2, cart 4, purchase 8) summed per pair,
    with the pair's last event time and its event types (as build_interactions writes)."""
    w = ev["event_type"].map({"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0})
    bit = ev["event_type"].map({t: 1 << j for j, t in enumerate(EVENT_P)})
    out = (ev.assign(weight=w, bit=bit).groupby(["user_id", "item_id"], as_index=False)
           .agg(weight=("weight", "sum"), n_events=("weight", "size"), day=("day", "max")))
    bits = (ev.assign(bit=bit).drop_duplicates(["user_id", "item_id", "bit"])
            .groupby(["user_id", "item_id"])["bit"].sum())
    names = {m: [t for j, t in enumerate(EVENT_P) if m >> j & 1] for m in range(1 << len(EVENT_P))}
    out["event_types"] = bits.reindex(pd.MultiIndex.from_frame(out[["user_id", "item_id"]])) \
        .map(names).to_numpy()
    out["last_ts"] = START + pd.to_timedelta(out.pop("day"), unit="D")
    return out


def prepare(scenario: str) -> dict:
    """Write train.parquet (user_id, item_id, weight, n_events, last_ts, event_types) and
    test.parquet."""
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
                              "n_events": 1,
                              "last_ts": pd.to_datetime(tr["timestamp"], unit="s", utc=True),
                              "event_types": [["rating"]] * len(tr)})
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
    train["last_ts"] = train["last_ts"].astype("datetime64[us, UTC]")  # Spark reads micros
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


def seen_csr(folder: Path, user_ids, item_ids):
    """users x items CSR of the training pairs (all of them count as seen)."""
    from vrec.core.topk import seen_matrix

    train = pd.read_parquet(folder / "train.parquet", columns=["user_id", "item_id"])
    uix, iix = pd.Index(np.asarray(user_ids, dtype=str)), pd.Index(np.asarray(item_ids, dtype=str))
    u, i = uix.get_indexer(train["user_id"]), iix.get_indexer(train["item_id"])
    ok = (u >= 0) & (i >= 0)
    return seen_matrix(u[ok], i[ok], len(uix), len(iix))


def ndcg_at_k(folder: Path, user_ids, item_ids, uf, itf, k: int = K) -> float:
    """Mean NDCG@k over test users; train items excluded; binary relevance."""
    from vrec.core.topk import topk_blocked

    test = pd.read_parquet(folder / "test.parquet")
    uix, iix = pd.Index(np.asarray(user_ids, dtype=str)), pd.Index(np.asarray(item_ids, dtype=str))
    seen = seen_csr(folder, user_ids, item_ids)
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
    """Raw implicit fit on a prebuilt CSR vs vrec's fit_cf from the Parquet pairs,
    interleaved ``--rounds`` times in one process with a Spark session up (as in the
    stage); medians reported."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from vrec.core.cf import build_matrix
    from vrec.spark.cf import fit_cf

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
            model = fit_cf(folder / "train.parquet", cf_settings(args), spark=spark,
                           ds="2026-01-01")
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


DIM = 1280  # EfficientNet-Lite0's pooled features
N_CANDIDATES = 50


def synthetic_vectors(item_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (64 clusters) standing in for CNN features, one per item."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, DIM)).astype(np.float32)
    emb = centres[rng.integers(0, 64, len(item_ids))] + 0.6 * rng.normal(
        size=(len(item_ids), DIM)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def group_candidates(folder: Path, args) -> dict:
    """The candidates stage's work (item space, then every user's three top-N in Spark),
    cold once then warm, interleaved with the numpy roofline of its two products."""
    from vrec.config import RecsSettings, VisualSettings
    from vrec.core.cf import CFModel
    from vrec.core.itemspace import build_item_space, gate_new_arrivals
    from vrec.io import warehouse as W
    from vrec.spark.candidates import PAIR_COLUMNS, user_frames, write_candidates

    m = CFModel.load(folder / "vrec_model")
    uf, itf = np.asarray(m.user_factors), np.asarray(m.item_factors)
    pairs = pd.read_parquet(folder / "train.parquet")
    catalog_ids = np.asarray(sorted(set(pairs["item_id"].astype(str))), dtype=object)
    emb = synthetic_vectors(catalog_ids)
    catalog = pd.DataFrame({"item_id": catalog_ids, "category": [f"c{j % 40}" for j in
                                                                 range(len(catalog_ids))]})
    vectors = pd.DataFrame({"item_id": catalog_ids, "embedding": list(emb)})
    trending = pairs.groupby("item_id")["user_id"].nunique().sort_values(ascending=False)
    recs = RecsSettings(candidates=N_CANDIDATES, cold_item_max_users=2)
    t = time.perf_counter()
    visual = VisualSettings()
    space, quality = build_item_space(m, catalog, vectors, pairs, trending.index.tolist(), recs,
                                      visual=visual)
    space, _ = gate_new_arrivals(space, quality, recs.new_arrival_min_auc)
    space_s = time.perf_counter() - t
    space_dir = space.save(folder / "space")
    end = pd.to_datetime(pairs["last_ts"], utc=True).max() + pd.Timedelta(seconds=1)
    spark = spark_session(args)
    # the pairs as the candidates stage reads them: sorted by user and item, in row groups
    staged = folder / "interactions"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    pairs.assign(user_id=pairs["user_id"].astype(str), item_id=pairs["item_id"].astype(str)) \
        .sort_values(["user_id", "item_id"]).to_parquet(staged / "part-00000.parquet",
                                                        index=False, row_group_size=1 << 17)

    def vrec_once() -> float:
        shutil.rmtree(folder / "candidates", ignore_errors=True)
        t = time.perf_counter()
        write_candidates(spark, staged, folder / "candidates", space_dir=space_dir,
                         model_dir=folder / "vrec_model", recs=recs, visual=visual, end=end)
        return time.perf_counter() - t

    seen = seen_csr(folder, m.user_ids, space.item_ids)
    hist = seen.astype(np.float32)  # the profile product's shape (weights do not matter here)

    def product_once() -> float:
        t = time.perf_counter()
        for s in range(0, len(uf), 1024):
            _ = uf[s:s + 1024] @ itf.T
            p = hist[s:s + 1024] @ space.emb
            _ = np.asarray(p, dtype=np.float32) @ space.emb.T
        return time.perf_counter() - t

    def rows_once() -> float:  # reading and regrouping the pairs per user alone (one core)
        t = time.perf_counter()
        shares = W.row_group_shares(staged, 4)
        for i in range(len(shares)):
            for _ in user_frames(W.read_keyed_share(shares, i, "user_id", PAIR_COLUMNS)):
                pass
        return time.perf_counter() - t

    try:
        cold = vrec_once()
        warm, prod = [], []
        for _ in range(args.rounds):
            prod.append(product_once())
            warm.append(vrec_once())
        rows_s = rows_once()
        stored = spark.read.parquet(str(folder / "candidates"))
        rows = stored.count()
        cands = stored.selectExpr("sum(size(items))").first()[0]
    finally:
        spark.stop()
    seen_cf = seen_csr(folder, m.user_ids, m.item_ids)
    t = time.perf_counter()
    for s in range(0, len(uf), 1024):
        blk = uf[s:s + 1024] @ itf.T
        sub = seen_cf[s:s + 1024]
        blk[np.repeat(np.arange(len(blk)), np.diff(sub.indptr)), sub.indices] = -np.inf
        part = np.argpartition(-blk, K - 1, axis=1)[:, :K]
        ps = np.take_along_axis(blk, part, axis=1)
        _ = np.take_along_axis(part, np.argsort(-ps, axis=1), axis=1)
    argp = time.perf_counter() - t
    return {"item_space_s": space_s, "candidates_cold_s": cold, "candidates_s": _median(warm),
            "candidates_runs": warm, "user_rows_s": rows_s, "numpy_products_s": _median(prod),
            "numpy_products_runs": prod, "numpy_cf_argpartition_topk_s": argp,
            "candidate_users": int(rows), "candidates_per_user": round(cands / max(1, rows), 1),
            "new_arrivals": int(space.new.sum()), "map_auc": quality.get("auc_mapped")}


def group_rank(folder: Path, args) -> dict:
    """build_recs' ranking in Spark (cold, then warm medians) vs the same ranker in one
    process over the same candidates."""
    from vrec.config import RecsSettings
    from vrec.core.itemspace import ItemSpace
    from vrec.core.ranking import rank
    from vrec.core.retrieval import RankInput
    from vrec.spark.ranking import rank_all

    policy = RecsSettings()
    space_dir = folder / "space"
    spark = spark_session(args)

    def vrec_once() -> float:
        t = time.perf_counter()
        rank_all(spark, folder / "candidates", space_dir=space_dir,
                 policy=policy, model_version="bench").write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    try:
        cold = vrec_once()
        warm = [vrec_once() for _ in range(args.rounds)]
    finally:
        spark.stop()
    space = ItemSpace.load(space_dir)
    frame = pd.read_parquet(folder / "candidates")
    t = time.perf_counter()
    for s in range(0, len(frame), 256):
        rank(RankInput.from_frame(frame.iloc[s:s + 256]), space, policy)
    one = time.perf_counter() - t
    return {"rank_cold_s": cold, "rank_s": _median(warm), "rank_runs": warm,
            "rank_one_process_s": one, "ranked_users": int(len(frame))}


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


GROUPS = {"train": group_train, "candidates": group_candidates, "rank": group_rank,
          "mllib": group_mllib}


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
    ap.add_argument("--groups", default="train,candidates,rank,mllib")
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
    if path.is_file() and args.groups != "train,candidates,rank,mllib":  # a partial rerun updates its groups
        old = json.loads(path.read_text())
        res = old.get("results", {})
        # the score_users stage (CF-only top-K) was replaced by the candidates stage: keep its
        # last figures apart, labelled, for the before/after comparison
        stale = {k: res.pop(k) for k in list(res) if k.startswith(
            ("vrec_topk", "numpy_product_s", "numpy_product_runs", "numpy_argpartition", "topk_peak"))}
        if stale:
            res["removed_score_users"] = {"measured": old.get("date"), **stale}
    for g in args.groups.split(","):
        res.update(run_group(g, args))
    ratios = {}
    if {"vrec_train_s", "implicit_fit_s"} <= res.keys():
        ratios["vrec_train / implicit_fit"] = res["vrec_train_s"] / res["implicit_fit_s"]
    if {"mllib_fit_s", "vrec_train_s"} <= res.keys():
        ratios["mllib_fit / vrec_train"] = res["mllib_fit_s"] / res["vrec_train_s"]
    if {"candidates_s", "numpy_products_s"} <= res.keys():
        ratios["candidates / numpy_products"] = res["candidates_s"] / res["numpy_products_s"]
    if {"rank_s", "rank_one_process_s"} <= res.keys():
        ratios["rank (Spark) / rank (one process)"] = res["rank_s"] / res["rank_one_process_s"]
    if {"mllib_recommend_all_s", "candidates_s"} <= res.keys():
        ratios["mllib_recommend_all (CF only) / candidates (3 sources)"] = \
            res["mllib_recommend_all_s"] / res["candidates_s"]
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

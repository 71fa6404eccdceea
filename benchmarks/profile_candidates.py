"""Where the candidates stage's time goes, per source, on a sample of a night's users.

Runs the stage's retrieval (vrec.spark.candidates.candidates_partition, one process,
one BLAS thread as in each Spark task) on the staged item space and model of a night
(``make bench-scale``'s 10M warehouse by default) for a hash sample of its users, and
reports the seconds of each candidate source's top-k search, of building the sources'
search indexes (once per Spark worker, not scaled), and of the rest (the per-user
scoring of the union, the preference fits, the batches).

    python benchmarks/profile_candidates.py [--warehouse W] [--ds D] [--share 0.02]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", default=str(HERE / ".cache" / "scale-10m" / "warehouse"))
    ap.add_argument("--ds", default="2026-11-20")
    ap.add_argument("--share", type=float, default=0.02)
    ap.add_argument("--config", default=str(HERE / ".cache" / "scale-10m" / "vrec.yaml"))
    args = ap.parse_args(argv)

    import zlib

    import pandas as pd

    from vrec.config import load_settings
    from vrec.core import retrieval
    from vrec.core.users import pairs_by_user
    from vrec.dates import end_of_ds
    from vrec.io import warehouse as W
    from vrec.spark.candidates import PAIR_COLUMNS, _load, candidates_partition

    s = load_settings(args.config)
    run = Path(args.warehouse) / "_runs" / args.ds
    pairs = W.read_folder(run / "interactions", PAIR_COLUMNS)
    users = pd.unique(pairs["user_id"].astype(str))
    n_all = len(users)
    cut = int(args.share * 10_000)  # a stable hash sample of the users
    sample = [u for u in users if zlib.crc32(u.encode()) % 10_000 < cut]
    rows = pairs_by_user(pairs[pairs["user_id"].astype(str).isin(set(sample))])
    del pairs
    blend = json.loads((run / "blend.json").read_text())
    space, *_ = _load(str(run / "item_space"), str(run / "model"))
    from vrec.core.itemspace import ranking_policy

    policy = ranking_policy(s.recs, blend, None)
    times: dict[int, float] = {}
    build = {"seconds": 0.0}
    top = retrieval.Source.top

    def timed(self, *a, **k):
        t0, before = time.perf_counter(), build["seconds"]
        try:
            return top(self, *a, **k)
        finally:  # less the index build, counted apart
            times[id(self)] = times.get(id(self), 0.0) + time.perf_counter() - t0 - (
                build["seconds"] - before)

    retrieval.Source.top = timed
    make = retrieval.TopK

    def timed_index(*a, **k):  # a source builds its index on its first search
        t0 = time.perf_counter()
        try:
            return make(*a, **k)
        finally:
            build["seconds"] += time.perf_counter() - t0

    retrieval.TopK = timed_index
    t0 = time.perf_counter()
    n = sum(len(f) for f in candidates_partition(
        iter([rows]), space_dir=str(run / "item_space"), model_dir=str(run / "model"),
        recs=s.recs, visual=s.visual, end=pd.Timestamp(end_of_ds(args.ds)),
        profile=retrieval.profile_source(policy), extra=s.ranker.enabled))
    total = time.perf_counter() - t0
    names = {id(v): k for k, v in space.cache.items()}
    text = space.text_only()
    if text is not None:
        names.update({id(v): f"text {k}" for k, v in text.cache.items()})
    per = {names.get(k, str(k)): round(v, 2) for k, v in sorted(times.items(), key=lambda x: -x[1])}
    scale = n_all / max(1, n)
    out = {"users": n, "all_users": n_all, "seconds": round(total, 2),
           "sources_seconds": per, "index_build_seconds": round(build["seconds"], 2),
           "rest_seconds": round(total - sum(times.values()) - build["seconds"], 2),
           "scaled_to_all_users_one_core": round((total - build["seconds"]) * scale, 1)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

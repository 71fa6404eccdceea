"""Real-data quality of the hybrid ranker: MovieLens-small + posters and fashion-small with
simulated shoppers, through the nightly run's own tuning (CF model, then blend) and
ranker. Prints one line per data set (or taste variant) and writes
benchmarks/results/hybrid_<dataset>.json.

    .venv/bin/python benchmarks/eval_hybrid.py --dataset movielens
    .venv/bin/python benchmarks/eval_hybrid.py --dataset fashion             # + taste mixes
    .venv/bin/python benchmarks/eval_hybrid.py --dataset fashion --variants default

``--als-grid`` also scores plain ALS at every point of the CF grid on the test items and
reports the best one in hindsight (a stronger peer than any tuning can reach).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import harness  # noqa: E402
from realdata_embeddings import DATASETS, dataset_embeddings  # noqa: E402

# Shopper taste mixes (vrec.data.fashion.simulate_shoppers keywords): the weight of article
# type vs colour vs usage in a shopper's choice, and how many of each a shopper likes.
TASTES = {
    "default": {},
    "colour-heavy": {"type_weight": 0.5, "colour_weight": 1.0},
    "usage-heavy": {"type_weight": 0.5, "usage_weight": 1.0},
    "3 tastes": {"n_types": 3, "n_colours": 3},
    "4 tastes": {"n_types": 4, "n_usages": 2},
}


def summary(name: str, r: dict) -> str:
    """One line: the models' NDCG@10 and the hybrid's paired gains."""
    n, v = r["ndcg_all"], r["hybrid_vs"]
    peers = [p for p in ("als_configured", "als_tuned", "als_best_in_hindsight") if p in n]
    gains = " ".join(f"{p} {n['hybrid'] / n[p]:.3f}x ({v[p]['diff']:+.5f}±{v[p]['stderr']:.5f})"
                     for p in peers if n[p] > 0)
    models = " ".join(f"{m} {n[m]:.5f}" for m in
                      ("popularity", "als_configured", "als_tuned", "als_best_in_hindsight",
                       "visual", "visual_pref", "cf", "hybrid") if m in n)
    return (f"{name}: {models} | hybrid vs {gains} | cf {r['cf_tuning']['chosen']} "
            f"blend {r['tuning']['chosen']} | slot hit {r['slot']['hit_rate']} "
            f"({r['slot']['hits']}/{r['slot']['filled']}"
            f"{', dropped by the tuning' if r['slot']['dropped_by_tuning'] else ''}) "
            f"| {r['seconds']:.0f}s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["movielens", "fashion"], required=True)
    ap.add_argument("--variants", nargs="*", choices=list(TASTES), default=None,
                    help="fashion taste mixes to run (default: all)")
    ap.add_argument("--als-grid", action="store_true",
                    help="also score plain ALS over the CF grid in hindsight")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    vec = dataset_embeddings(a.dataset)
    out = a.out or REPO / "benchmarks" / "results" / f"hybrid_{a.dataset}.json"
    if a.dataset == "movielens":
        res = harness.run_movielens(DATASETS / "movielens-small", vec, als_grid=a.als_grid)
        print(summary("movielens", res), flush=True)
    else:
        res = {}
        for name in a.variants or list(TASTES):
            t0 = time.perf_counter()
            res[name] = harness.run_fashion(DATASETS / "fashion-small", vec, taste=TASTES[name],
                                            als_grid=a.als_grid)
            res[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(summary(name, res[name]), flush=True)
            out.write_text(json.dumps(res, indent=2, default=str))
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

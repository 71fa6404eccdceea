"""Real-data quality of the hybrid ranker (issue 5): MovieLens-small + posters and
fashion-small with simulated shoppers. Prints the tables and writes
benchmarks/results/hybrid_<dataset>.json.

    .venv/bin/python benchmarks/eval_hybrid.py --dataset movielens
    .venv/bin/python benchmarks/eval_hybrid.py --dataset fashion
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import harness as evaluation  # noqa: E402
from realdata_embeddings import DATASETS, dataset_embeddings  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", choices=["movielens", "fashion"], required=True)
    a = ap.parse_args(argv)
    vec = dataset_embeddings(a.dataset)
    if a.dataset == "movielens":
        res = evaluation.run_movielens(DATASETS / "movielens-small", vec)
    else:
        res = evaluation.run_fashion(DATASETS / "fashion-small", vec)
    out = REPO / "benchmarks" / "results" / f"hybrid_{a.dataset}.json"
    out.write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

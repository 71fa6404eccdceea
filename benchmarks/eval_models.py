"""The nightly offline evaluation on real data: every model of the evaluate stage
(popularity, ALS, visual profile, content preference, text, hybrid) through the
production ranker on MovieLens-small (posters, titles, genres, tags), per slice and K,
with the per-user split and the tunings per user inside the training part
(MovieLens has no shared time axis: benchmarks/harness.py, movielens_tuning).
Prints a Markdown table and writes benchmarks/results/eval_movielens_user.json.

    .venv/bin/python benchmarks/eval_models.py
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

from vrec.core.evaluation import SLICES  # noqa: E402
from vrec.core.models import MODELS  # noqa: E402

COLS = ["users", "precision", "recall", "f1", "ndcg", "ndcg_se", "map", "hit_rate",
        "coverage", "novelty"]


def markdown(frame) -> str:
    """One row per (slice, K, model), one column per metric."""
    pv = frame.pivot_table(index=["slice", "k", "model"], columns="metric", values="value")
    lines = ["| slice | K | model | " + " | ".join(COLS) + " |",
             "|---|---|---|" + "---|" * len(COLS)]
    keys = [(sl, k, m) for sl in SLICES for k in sorted(frame["k"].unique())
            for m in MODELS if (sl, k, m) in pv.index]
    for sl, k, model in keys:
        row = pv.loc[(sl, k, model)]
        if row.get("users", 0) == 0:
            continue
        vals = [f"{int(row[c])}" if c == "users" else f"{row[c]:.4f}" for c in COLS]
        lines.append(f"| {sl} | {k} | {model} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    vec = dataset_embeddings("movielens")
    frame, info = evaluation.run_movielens_models(DATASETS / "movielens-small", vec)
    out = REPO / "benchmarks" / "results" / "eval_movielens_user.json"
    out.write_text(json.dumps({"info": info, "metrics": frame.to_dict(orient="records")},
                              indent=1, default=str))
    print(json.dumps({k: v for k, v in info.items() if k != "map_quality"}, default=str))
    print(markdown(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the CF tuning choose as well when it screens its grid with fewer ALS sweeps?

For each data set (MovieLens-small, and simulated fashion shoppers in each generative
form of vrec.data.fashion), the CF tuning runs twice on the same forward tuning window,
as train_cf runs it (the image prior over the content features included): once fitting
every grid point with all ``cf.iterations`` sweeps (``cf.tune_iterations`` null, the
tuning before screening) and once screening with ``cf.tune_iterations``. Each run's
chosen settings are then fit with all sweeps on the holdout's features and scored on the
holdout (plain CF lists, NDCG@k, per user): the paired per-user difference screened -
full ± SE. Also the seconds of each tuning, measured in the same process one after the
other.

    .venv/bin/python benchmarks/eval_cf_screening.py [--users 10000] [--screen 5]

Writes ``benchmarks/results/cf_screening.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000, help="simulated fashion shoppers")
    ap.add_argument("--screen", type=int, default=5, help="the screening sweeps")
    ap.add_argument("--forms", default="all", help="fashion forms (comma list) or all")
    ap.add_argument("--no-movielens", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "cf_screening.json"))
    args = ap.parse_args(argv)

    from harness import (
        _paired,
        fashion_windows,
        movielens_holdout,
        movielens_tuning,
        plain_cf_ndcg,
        tuned,
    )
    from realdata_embeddings import DATASETS, dataset_embeddings

    from vrec import columns as C
    from vrec.config import CFSettings, ContentSettings, RecsSettings, VisualSettings
    from vrec.core.visual import content_features
    from vrec.core.window import Window
    from vrec.data.fashion import FORMS, load_styles, simulate_shoppers

    recs = RecsSettings()
    base = CFSettings()
    results: dict[str, dict] = {}

    def compare(name: str, tuning: Window, holdout: Window, catalog, vectors) -> None:
        feats = content_features(vectors, catalog, VisualSettings(), ContentSettings())
        out: dict = {"tuning_users": int(len(tuning.users)),
                     "holdout_users": int(len(holdout.users))}
        chosen = {}
        for label, screen in (("full", None), ("screened", args.screen)):
            t = time.perf_counter()
            cf_t, rec = tuned(tuning, base.model_copy(update={"tune_iterations": screen}),
                              recs, feats)
            out[label] = {"seconds": round(time.perf_counter() - t, 1),
                          "chosen": rec.get("chosen"), "chosen_ndcg": rec.get("chosen_ndcg"),
                          "chosen_full_ndcg": rec.get("chosen_full_ndcg"),
                          "grid": rec.get("grid")}
            chosen[label] = cf_t
        out["same_choice"] = out["full"]["chosen"] == out["screened"]["chosen"]
        out["seconds_ratio"] = round(out["screened"]["seconds"] / out["full"]["seconds"], 3)
        full_v = plain_cf_ndcg(holdout, chosen["full"], recs, feats)
        scr_v = full_v if out["same_choice"] else \
            plain_cf_ndcg(holdout, chosen["screened"], recs, feats)
        out["holdout_ndcg"] = {"full": round(float(full_v.mean()), 5),
                               "screened": round(float(scr_v.mean()), 5),
                               "screened_minus_full": _paired(scr_v, full_v)}
        results[name] = out
        print(f"[cf-screening] {name}: full {out['full']['chosen']} "
              f"{out['full']['seconds']} s; screened {out['screened']['chosen']} "
              f"{out['screened']['seconds']} s; holdout {out['holdout_ndcg']}", flush=True)
        Path(args.out).write_text(json.dumps({"screen_iterations": args.screen,
                                              "iterations": base.iterations,
                                              "results": results}, indent=1))

    if not args.no_movielens:
        holdout, catalog = movielens_holdout(DATASETS / "movielens-small")
        compare("movielens", movielens_tuning(holdout.train, recs), holdout, catalog,
                dataset_embeddings("movielens"))

    vectors = dataset_embeddings("fashion")
    styles = load_styles(DATASETS / "fashion-small", set(vectors[C.ITEM_ID].astype(str)))
    forms = FORMS if args.forms == "all" else tuple(args.forms.split(","))
    for form in forms:
        events = simulate_shoppers(styles, n_users=args.users, days=60, seed=0, form=form,
                                   titles="shop")
        holdout, tuning, _, catalog = fashion_windows(events, days=60, test_days=7,
                                                      window_days=7, recs=recs)
        compare(f"fashion-{form}", tuning, holdout, catalog, vectors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

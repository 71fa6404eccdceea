"""The CF tuning at 10M, every grid point with all ALS sweeps and then screened.

Builds the tunings' forward window of the saved 10M night 1 (``make bench-scale``'s
``night1`` warehouse, ds 2026-11-19, tunings as of 2026-11-18) once, as train_cf builds
it, then runs the CF tuning on it with ``cf.tune_iterations`` null and with ``--screen``
sweeps, one after the other in one process, with the night's image features (the prior's
points included). Prints and writes each tuning's record with its wall seconds.

    .venv/bin/python benchmarks/tune_cf_10m.py [--screen 5] [--modes full,screened] [--out F]

Writes ``benchmarks/results/cf_tuning_10m.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
CACHE = HERE / ".cache" / "scale-10m"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screen", type=int, default=5)
    ap.add_argument("--modes", default="full,screened", help="which tunings, in order")
    ap.add_argument("--ds", default="2026-11-19")
    ap.add_argument("--as-of", default="2026-11-18")
    ap.add_argument("--out", default=str(HERE / "results" / "cf_tuning_10m.json"))
    ap.add_argument("--cache", default=str(CACHE), help="make bench-scale's 10M folder")
    args = ap.parse_args(argv)

    from vrec.config import load_settings
    from vrec.core.tuning import tune_cf
    from vrec.core.visual import load_features
    from vrec.dates import shift_ds
    from vrec.spark.cf import fit_cf
    from vrec.spark.session import build_session
    from vrec.spark.windows import forward_window_at

    run = Path(args.cache) / "night1" / "warehouse" / "_runs" / args.ds
    s = load_settings(Path(args.cache) / "vrec.yaml")
    spark = build_session(s.model_copy(update={"spark": s.spark.for_stage("train_cf")}),
                          "vrec-tune-cf-10m")
    t = time.perf_counter()
    w = forward_window_at(spark, run / "events", s,
                          shift_ds(args.as_of, -s.recs.window_days), args.as_of)
    w = w.sampled(s.recs.tune_max_users)
    print(f"[tune-cf-10m] window: {len(w.train)} pairs, {time.perf_counter() - t:.1f} s",
          flush=True)
    content = load_features(run / "content.npz")
    out = {}
    for label in args.modes.split(","):
        screen = {"full": None, "screened": args.screen}[label]
        cf = s.cf.model_copy(update={"tune_iterations": screen})
        t = time.perf_counter()
        rec = tune_cf(w, cf, s.recs, lambda c: (lambda p: fit_cf(
            p, c, spark=spark, ds=args.ds, images=content)), label=f"CF tuning ({label})")
        rec["wall_s"] = round(time.perf_counter() - t, 1)
        out[label] = rec
        print(f"[tune-cf-10m] {label}: " + json.dumps({k: rec.get(k) for k in (
            "chosen", "chosen_ndcg", "chosen_full_ndcg", "configured_ndcg", "wall_s",
            "screen_iterations")}), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

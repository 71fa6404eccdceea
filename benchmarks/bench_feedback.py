"""Feedback over many nights: does exposure rotation stop the same unengaged items from
being shown night after night, and do dismissed items stay away?

The sample shop (vrec.data.sample) runs ``--nights`` nights through the real stages,
in-process on one Spark session; after each night the simulated front end
(vrec.data.frontend) lands the next day's impressions of the lists just published, the
clicks on them and a few dismisses. Two arms on the same data, each with its own copy of
the raw zone and its own warehouse:

* ``rotation``: the product defaults (``feedback.max_unengaged_shows`` 2, ``rest_days`` 7);
* ``no_rotation``: the same with ``feedback.max_unengaged_shows`` 0 (what vrec did before
  impressions existed). Dismissals are on in both arms.

Measured from what the front end landed (not from the pipeline's own records):

* the share of shown (user, item) pairs that were shown on 3 or more consecutive list
  nights with no engagement with the item from the first of those lists until the day
  the third was seen;
* dismissed items that came back to the same user within ``feedback.dismiss_days``;
* the realised one-day metrics of the lists (published realised_metrics).

``eval.enabled`` is off in both arms (the offline holdout does not change the lists).
Results: ``benchmarks/results/feedback.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vrec import columns as C  # noqa: E402
from vrec.config import load_settings  # noqa: E402
from vrec.data.frontend import simulate_front_end  # noqa: E402
from vrec.data.sample import SampleSpec, generate_sample  # noqa: E402
from vrec.io import warehouse as W  # noqa: E402
from vrec.io.rawio import list_partitions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "feedback.json"
ENGAGEMENT = set(C.ENGAGEMENT_TYPES)


def _config(tmp: Path, raw: Path, wh: Path, max_shows: int | None) -> Path:
    cfg = tmp / f"vrec-{wh.name}.yaml"
    extra = f"feedback:\n  max_unengaged_shows: {max_shows}\n" if max_shows is not None else ""
    cfg.write_text(
        f"paths:\n  raw_root: {raw}\n  image_root: {raw}\n  warehouse_root: {wh}\n"
        "spark:\n  master: local[2]\n  quick_jit: true\n  conf:\n"
        "    spark.sql.shuffle.partitions: '4'\n    spark.ui.enabled: 'false'\n"
        "    spark.driver.memory: 3g\n"
        "eval:\n  enabled: false\n" + extra)
    return cfg


def run_arm(spark, tmp: Path, sample: Path, name: str, max_shows: int | None,
            nights: list[str]) -> dict:
    """The nights of one arm; per night its seconds and the front end's counts."""
    from vrec.executor import run_stage
    from vrec.stages import NAMES

    raw, wh = tmp / f"raw-{name}", tmp / f"wh-{name}"
    shutil.copytree(sample, raw, symlinks=True)
    s = load_settings(_config(tmp, raw, wh, max_shows), environ={})
    out = []
    for ds in nights:
        t = time.perf_counter()
        for stage in NAMES:
            run_stage(s, stage, ds, spark=spark, params={"override_gate": True,
                                                         "override_reason": "benchmark"})
        fe = simulate_front_end(raw, wh, ds, seed=11, base_ctr=0.08) \
            if ds != nights[-1] else {}
        out.append({"ds": ds, "seconds": round(time.perf_counter() - t, 1), **fe})
        print(f"[bench] {name} {ds}: {out[-1]}", flush=True)
    return {"raw": raw, "wh": wh, "settings": s, "nights": out}


def consecutive_unengaged(raw: Path, nights: list[str], run: int = 3) -> dict:
    """Shown (user, item) pairs, and those shown on ``run`` or more consecutive list
    nights with no engagement from the end of the first list through the day the last
    one was seen (from the landed events alone)."""
    files = [f for d in list_partitions(raw, "events")
             for f in sorted((raw / "events" / f"ds={d}").glob("*.parquet"))]
    ev = pd.concat([pd.read_parquet(f, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS,
                                                C.LIST_DS]) for f in files], ignore_index=True)
    ev[C.TS] = pd.to_datetime(ev[C.TS], utc=True)
    imp = ev[(ev[C.EVENT_TYPE] == C.IMPRESSION) & ev[C.LIST_DS].isin(nights)]
    shows = imp.groupby([C.USER_ID, C.ITEM_ID])[C.LIST_DS].agg(lambda x: sorted(set(x)))
    eng = ev[ev[C.EVENT_TYPE].isin(ENGAGEMENT)].groupby([C.USER_ID, C.ITEM_ID])[C.TS].agg(list)
    day = dt.timedelta(days=1)
    hit = 0
    for key, days in shows.items():
        when = eng.get(key, [])
        d = [dt.date.fromisoformat(x) for x in days]
        for i in range(len(d) - run + 1):
            if (d[i + run - 1] - d[i]).days != run - 1:
                continue
            lo = pd.Timestamp(d[i] + day, tz="UTC")           # the first list published
            hi = pd.Timestamp(d[i + run - 1] + 2 * day, tz="UTC")  # the last one seen
            if not any(lo <= t < hi for t in when):
                hit += 1
                break
    return {"shown_pairs": int(len(shows)), "consecutive_unengaged": hit,
            "share": round(hit / max(1, len(shows)), 5)}


def dismissed_returns(arm: dict) -> dict:
    """Dismissed (user, item) pairs listed again to that user within the dismiss window."""
    raw, wh, s = arm["raw"], arm["wh"], arm["settings"]
    files = [f for d in list_partitions(raw, "events")
             for f in sorted((raw / "events" / f"ds={d}").glob("*.parquet"))]
    ev = pd.concat([pd.read_parquet(f, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS])
                    for f in files], ignore_index=True)
    dis = ev[ev[C.EVENT_TYPE] == C.DISMISS]
    back = 0
    for n in arm["nights"]:
        recs = W.read_table(wh, "user_recs", n["ds"])
        end = pd.Timestamp(n["ds"], tz="UTC") + pd.Timedelta(days=1)
        live = dis[(pd.to_datetime(dis[C.TS], utc=True) < end)
                   & (pd.to_datetime(dis[C.TS], utc=True)
                      >= end - pd.Timedelta(days=s.feedback.dismiss_days))]
        back += len(set(zip(live[C.USER_ID], live[C.ITEM_ID]))
                    & set(zip(recs[C.USER_ID], recs[C.ITEM_ID])))
    return {"dismisses": int(len(dis)), "listed_again_within_window": back}


def realised(arm: dict) -> dict:
    """Mean one-day realised metrics (slice all) over the measured lists."""
    rows = pd.concat([W.read_table(arm["wh"], "realised_metrics", n["ds"])
                      for n in arm["nights"]], ignore_index=True)
    one = rows[(rows["horizon_days"] == 1) & (rows["slice"] == "all")]
    return {m: round(float(g["value"].mean()), 5) for m, g in one.groupby("metric")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=8)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--history-days", type=int, default=10)
    ap.add_argument("--work", default="/tmp/vrec-bench-feedback")
    args = ap.parse_args(argv)
    from vrec.config import Settings
    from vrec.spark.session import build_session

    tmp = Path(args.work)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    spec = SampleSpec(n_users=args.users, n_items=args.items,
                      days=args.history_days + args.nights, seed=23, image_size=96)
    sample = tmp / "sample"
    stats = generate_sample(sample, spec)
    nights = list_partitions(sample, "events")[-args.nights:]
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = build_session(Settings(spark={"master": "local[2]", "conf": {
        "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false",
        "spark.driver.memory": "3g"}}), "vrec-bench-feedback")
    t0 = time.perf_counter()
    arms = {name: run_arm(spark, tmp, sample, name, shows, nights)
            for name, shows in (("no_rotation", 0), ("rotation", None))}
    out = {"sample": stats, "nights": nights, "seconds": round(time.perf_counter() - t0, 1),
           "arms": {}}
    for name, arm in arms.items():
        out["arms"][name] = {
            "max_unengaged_shows": arm["settings"].feedback.max_unengaged_shows,
            "rest_days": arm["settings"].feedback.rest_days,
            "nights": arm["nights"],
            "three_consecutive_unengaged": consecutive_unengaged(arm["raw"], nights),
            "dismissed": dismissed_returns(arm), "realised_one_day": realised(arm)}
    spark.stop()
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    for name, a in out["arms"].items():
        print(f"{name}: {a['three_consecutive_unengaged']}; dismissed {a['dismissed']}; "
              f"realised {a['realised_one_day']}")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: sample data if absent, embedded Airflow, the nightly DAG for the last
three logical dates through Airflow (after each night but the last, the simulated front
end lands the next day's impressions, clicks and dismisses of the lists just published:
vrec.data.frontend), then a summary."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pandas as pd

from vrec import columns as C
from vrec.airflow.env import DEFAULT_HOME, REPO, airflow_env, dags_test, migrate
from vrec.config import load_settings
from vrec.core.models import MODELS
from vrec.data.frontend import simulate_front_end
from vrec.data.sample import SampleSpec, generate_sample
from vrec.io import warehouse as W
from vrec.io.rawio import list_partitions
from vrec.io.validation import docs_index
from vrec.report import report_path
from vrec.stages import NAMES as STAGE_ORDER

_VREC_LINE = re.compile(r"(\[vrec\].*?)(\s+\[airflow\.[^\]]*\].*)?$")


def _progress(line: str) -> None:
    m = _VREC_LINE.search(line)
    if m:
        print("   " + m.group(1), flush=True)
    elif "Task instance state updated" in line and "new_state=failed" in line:
        print("   !! a task failed: " + line[:200], flush=True)
    elif "FAILED" in line or "Traceback" in line:
        print("   " + line[:300], flush=True)


def validation_lines(warehouse: Path, ds: str) -> str:
    """One line per validated suite of ``ds``: rows, success, failed and warned checks."""
    lines = [f"\nValidation for {ds} (Data Docs: {docs_index(warehouse)}):"]
    for stage in ("validate_inputs", "validate_outputs"):
        rec = json.loads(W.read_table(warehouse, "run_stats", ds).set_index("stage")
                         .loc[stage, "details"])
        for suite, r in rec.get("validation", {}).items():
            lines.append(f"  {suite:<16} rows={r['rows']} {'ok' if r['success'] else 'FAILED'}"
                         f" warnings={len(r['warnings'])} {', '.join(r['warnings'])[:90]}")
    return "\n".join(lines)


def evaluation_lines(warehouse: Path, ds: str) -> str:
    """The offline metrics of every model (all users) and the quality gate of ``ds``."""
    m = W.read_table(warehouse, "eval_metrics", ds)
    gate = W.manifest(warehouse, ds).get("quality_gate") or {}
    lines = [f"\nOffline evaluation for {ds} (all test users; the report has every slice):"]
    part = m[(m["slice"] == "all") & m["metric"].isin(["users", "precision", "recall", "ndcg",
                                                       "map", "hit_rate", "coverage"])]
    if part.empty:
        lines.append("  nothing measured")
    for k, g in part.groupby("k"):
        pv = g.pivot_table(index="model", columns="metric", values="value")
        pv = pv.reindex([x for x in MODELS if x in pv.index])
        lines.append(f"  K={k}\n" + pv.round(4).to_string())
    lines.append(f"Quality gate: {gate.get('status')}: {gate.get('message')}")
    return "\n".join(lines)


def reason_examples(warehouse: Path, ds: str) -> dict[str, str | None]:
    """For each reason a list can give, the user whose list on ``ds`` holds the most rows
    of it (ties: the smaller id; a user shows one reason only), or None when no list has it."""
    from vrec.io.query import run_query

    counts = run_query(warehouse, """SELECT reason, user_id, count(*) AS n FROM user_recs
                                     GROUP BY 1, 2 ORDER BY n DESC, user_id""", ds)
    out: dict[str, str | None] = {}
    for reason in C.REASONS:
        cand = counts[(counts["reason"] == reason) & ~counts["user_id"].isin(list(out.values()))]
        out[reason] = str(cand["user_id"].iloc[0]) if len(cand) else None
    return out


def realised_lines(warehouse: Path, dates: list[str]) -> str:
    """Each night's realised metrics of the lists before it, and one user whose list
    rotated (an item shown without engagement, left out of the last night's list)."""
    lines = ["\nHow the published lists did (realised_metrics: the events after each list; "
             "impressions and clicks from the simulated front end):"]
    for d in dates:
        r = W.read_table(warehouse, "realised_metrics", d)
        r = r[r["slice"] == "all"].pivot_table(index=[C.LIST_DS, "horizon_days"],
                                               columns="metric", values="value")
        if r.empty:
            lines.append(f"  {d}: no earlier list to measure")
        for (lds, h), row in r.iterrows():
            ctr = (f", {int(row['impressions'])} impressions, click-through {row['ctr']:.3f}"
                   if "impressions" in row and pd.notna(row.get("impressions")) else "")
            lines.append(f"  {d}: lists of {lds} after {int(h)} day(s): {int(row['users'])} "
                         f"active users, hit rate {row['hit_rate']:.3f}, NDCG "
                         f"{row['ndcg']:.4f}{ctr}")
    stats = W.read_stage_stats(warehouse, dates[-1]).set_index("stage")
    left = stats.loc["candidates", "left_out"] if "left_out" in stats.columns else None
    ex = left.get("rested_example") if isinstance(left, dict) else None
    if not ex:
        return "\n".join(lines + [f"No list rotated on {dates[-1]} (no item reached "
                                   "feedback.max_unengaged_shows unengaged shows)."])
    lines.append(f"Rotation on {dates[-1]}: {left['rested_pairs']} (user, item) pairs rested, "
                 f"{left['dismissed_pairs']} dismissed, {left['near_duplicate_pairs']} "
                 f"near-duplicates of dismissed items. User {ex['user_id']}, item "
                 f"{ex['item_id']} ({ex['shows']} unengaged shows):")
    for d in dates:
        recs = W.read_table(warehouse, "user_recs", d)
        items = recs[recs[C.USER_ID] == ex["user_id"]].sort_values("rank")[C.ITEM_ID].tolist()
        mark = "in the list" if ex["item_id"] in items else "left out"
        lines.append(f"  {d}: {mark}: {' '.join(items)}")
    return "\n".join(lines)


def summarize(warehouse: Path, dates: list[str]) -> str:
    """Human summary of the published runs for ``dates``."""
    from vrec.io.query import run_query

    out: list[str] = []
    stats = pd.concat([W.read_table(warehouse, "run_stats", d) for d in dates], ignore_index=True)
    pivot = stats.pivot_table(index="stage", columns="ds", values="seconds", aggfunc="sum")
    order = list(STAGE_ORDER)
    pivot = pivot.reindex([s for s in order if s in pivot.index])
    out.append("Per-stage seconds (inside the stage; spark-submit start-up not included):")
    out.append(pivot.round(1).to_string())
    last = stats[stats["ds"] == dates[-1]].set_index("stage")
    out.append(f"\nRows for {dates[-1]} (in -> out, quarantined):")
    for s in pivot.index:
        r = last.loc[s]
        out.append(f"  {s:<20} {int(r.rows_in):>8} -> {int(r.rows_out):<8} q={int(r.rows_quarantined)}")
    out.append(validation_lines(warehouse, dates[-1]))
    out.append(evaluation_lines(warehouse, dates[-1]))
    out.append(realised_lines(warehouse, dates))
    out.append("\nIncremental embedding (new images embedded / reused from cache):")
    for d in dates:
        rec = W.read_stage_stats(warehouse, d).set_index("stage")
        if "embed_items" in rec.index:
            out.append(f"  {d}: {int(rec.loc['embed_items', 'embedded_new'])} new, "
                       f"{int(rec.loc['embed_items', 'reused'])} reused")
    last_ds = dates[-1]  # not "latest": a reused warehouse may hold later dates
    q = run_query(warehouse, "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY 2 DESC",
                  last_ds)
    if len(q):
        out.append("\nQuarantined on the last run: " + ", ".join(f"{r.reason}={r.n}" for r in q.itertuples()))
    out.append(f"\nOne list per reason ({dates[-1]}; the user whose list holds the most rows "
               "of that reason):")
    for reason, user in reason_examples(warehouse, last_ds).items():
        if user is None:
            out.append(f"\n[{reason}] no list has this reason on {dates[-1]}")
            continue
        recs = run_query(warehouse, f"""
            SELECT r.rank, r.item_id, i.title, round(r.score, 3) AS score, r.reason,
                   coalesce(h.title, '') AS because_of
            FROM user_recs r JOIN items i USING (item_id)
            LEFT JOIN items h ON h.item_id = r.reason_item_id
            WHERE r.user_id = '{user}' ORDER BY r.rank""", last_ds)
        out.append(f"\n[{reason}] recommendations for {user}:")
        out.append(recs.to_string(index=False))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns an exit code."""
    t0 = time.perf_counter()
    config = Path(REPO / "vrec.yaml")
    settings = load_settings(config)
    raw, wh = settings.paths.raw_root, settings.paths.warehouse_root
    if not list_partitions(raw, "events"):
        print(f"[demo] generating the sample shop into {raw} ...", flush=True)
        stats = generate_sample(raw, SampleSpec())
        print(f"[demo] sample: {stats}", flush=True)
    else:
        print(f"[demo] reusing sample data in {raw}", flush=True)
    dates = list_partitions(raw, "events")[-3:]
    env = airflow_env(DEFAULT_HOME, config=config)
    print(f"[demo] Airflow home {DEFAULT_HOME} (SQLite); migrating metadata DB ...", flush=True)
    migrate(env)
    timings = {}
    for i, ds in enumerate(dates, 1):
        print(f"[demo] ({i}/{len(dates)}) airflow dags test vrec_nightly {ds}", flush=True)
        t = time.perf_counter()
        log = DEFAULT_HOME / "demo-logs" / f"vrec_nightly_{ds}.log"
        rc = dags_test(ds, env, log_path=log, on_line=_progress)
        timings[ds] = time.perf_counter() - t
        if rc != 0:
            print(f"[demo] the DAG run for {ds} FAILED (exit {rc}); full log: {log}", file=sys.stderr)
            return 1
        if ds not in W.published_ds(wh):
            print(f"[demo] the DAG run for {ds} ran but published nothing (is {ds} before "
                  f"VREC_START_DATE?); log: {log}", file=sys.stderr)
            return 1
        print(f"[demo] {ds} published in {timings[ds]:.0f}s (log: {log})", flush=True)
        if i < len(dates):  # the shop's front end shows the lists and lands what users did
            fe = simulate_front_end(raw, wh, ds)
            print(f"[demo] front end: {fe['impressions']} impressions of the lists of {ds} "
                  f"to {fe['users_shown']} users, {fe['clicks']} clicks, {fe['dismisses']} "
                  f"dismisses, landed in events/ds={fe['landed_ds']}", flush=True)
    print("\n" + "=" * 78)
    print(summarize(wh, dates))
    print("\n" + "=" * 78)
    print("DAG run wall time: " + ", ".join(f"{d} {s:.0f}s" for d, s in timings.items())
          + f"; demo total {time.perf_counter() - t0:.0f}s")
    print(f"Tables:   {wh}/<table>/ds=<ds>/ (Parquet; latest ds in {wh}/_manifests/latest.json)")
    print(f"Logs:     {DEFAULT_HOME / 'demo-logs'} and {DEFAULT_HOME / 'logs'}")
    print(f"Checks:   {docs_index(wh)} (Great Expectations Data Docs, every validation run)")
    print(f"Report:   {report_path(wh, dates[-1])} (run report: pipeline, metrics, gallery; "
          "opens from disk)")
    print('Query:    .venv/bin/vrec query "SELECT * FROM user_recs LIMIT 10"')
    print(f"DuckDB:   duckdb -c \"SELECT * FROM read_parquet('{wh}/user_recs/*/*.parquet', "
          "hive_partitioning=true) LIMIT 5\"")
    print("Airflow:  make airflow   (UI on http://localhost:8089, same DAGs and home)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

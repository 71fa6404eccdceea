"""The ``vrec`` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path


def _date(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {s!r}") from exc


def _cmd_generate(a: argparse.Namespace) -> int:
    from vrec.data.sample import SampleSpec, generate_sample

    spec = SampleSpec(n_users=a.n_users, n_items=a.n_items, days=a.days, end_date=a.end_date,
                      seed=a.seed)
    print(json.dumps(generate_sample(a.out, spec, catalog_dir=a.catalog_dir), indent=2))
    return 0


def _cmd_movielens(a: argparse.Namespace) -> int:
    from vrec.config import load_settings
    from vrec.data.movielens import adapt_movielens

    s = load_settings(a.config)
    stats = adapt_movielens(a.ml_dir, a.out, posters_dir=a.posters, bulk_until=a.bulk_until,
                            since=a.since, rated_only=a.rated_only, weights=s.weights,
                            fallback_encoding=s.landing.fallback_encoding)
    print(json.dumps(stats, indent=2, default=str))
    return 0


def _cmd_land(a: argparse.Namespace) -> int:
    from vrec.config import load_settings
    from vrec.data.land import land_files

    s = load_settings(a.config)
    stats = land_files(a.source, a.files, a.out or s.paths.raw_root, a.ds, weights=s.weights,
                       fmt=a.format, fallback=s.landing.fallback_encoding)
    print(json.dumps(stats, indent=2, default=str))
    return 0


def _cmd_query(a: argparse.Namespace) -> int:
    import duckdb
    import pandas as pd

    from vrec.config import load_settings
    from vrec.io.query import run_query

    wh = a.warehouse or load_settings(a.config).paths.warehouse_root
    try:
        df = run_query(wh, a.sql, a.ds)
    except duckdb.PermissionException as exc:
        print(f"vrec query: refused: {str(exc).splitlines()[0]} (only files under the "
              f"warehouse {wh} can be read)", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"vrec query: SQL error: {exc}", file=sys.stderr)
        return 2
    if a.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif a.format == "json":
        print(df.to_json(orient="records", date_format="iso"))
    else:
        with pd.option_context("display.max_rows", a.max_rows, "display.width", 200,
                               "display.max_columns", 50):
            print(df.to_string(index=False, max_rows=a.max_rows))
    return 0


def _cmd_run_stage(a: argparse.Namespace) -> int:
    from vrec.executor import main

    argv = [a.stage, "--ds", a.ds] + (["--config", a.config] if a.config else []) + \
        (["--run-id", a.run_id] if a.run_id else [])
    if a.override_quality_gate:
        argv += ["--override-quality-gate", "--override-reason", a.override_reason]
    if a.retune:
        argv.append("--retune")
    return main(argv)


def _cmd_status(a: argparse.Namespace) -> int:
    from vrec.config import load_settings
    from vrec.status import parse_age, render, status, to_json

    try:
        max_age = parse_age(a.max_age) if a.max_age else None
        now = dt.datetime.fromisoformat(a.now) if a.now else None
    except ValueError as exc:
        print(f"vrec status: error: {exc}", file=sys.stderr)
        return 2
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    wh = a.warehouse or load_settings(a.config).paths.warehouse_root
    st = status(wh, runs=a.runs, max_age=max_age, now=now)
    print(to_json(st) if a.json else render(st))
    return st["exit_code"]


def _cmd_demo(a: argparse.Namespace) -> int:
    from vrec.demo import main as demo_main

    return demo_main([])


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for all subcommands."""
    p = argparse.ArgumentParser(prog="vrec", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate-sample", help="write a deterministic sample raw landing zone")
    g.add_argument("--out", type=Path, required=True, help="raw root to write")
    g.add_argument("--n-users", type=int, default=400)
    g.add_argument("--n-items", type=int, default=600)
    g.add_argument("--days", type=int, default=30)
    g.add_argument("--end-date", type=_date, default=dt.date(2026, 11, 20))
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--catalog-dir", type=Path, default=None,
                   help="real catalog: folder with styles.csv and images/{id}.jpg")
    g.set_defaults(fn=_cmd_generate)

    m = sub.add_parser("movielens", help="convert an ml-latest-small folder to the raw zone")
    m.add_argument("--ml-dir", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--posters", type=Path, default=None, help="folder of {movieId}.jpg")
    m.add_argument("--bulk-until", type=_date, default=None,
                   help="ratings before this date land in one history partition")
    m.add_argument("--since", type=_date, default=None, help="drop ratings before this date")
    m.add_argument("--rated-only", action="store_true",
                   help="catalog = only movies rated in the kept window")
    m.add_argument("--config", default=None,
                   help="vrec.yaml for the rating scale and the fallback encoding")
    m.set_defaults(fn=_cmd_movielens)

    la = sub.add_parser("land", help="land CSV or JSON-lines files as one day's raw events "
                                     "or catalog snapshot (bad rows rejected with reasons)")
    la.add_argument("source", choices=["events", "catalog"])
    la.add_argument("files", nargs="+", type=Path, help="CSV (header row) or JSON-lines files")
    la.add_argument("--ds", type=_date, required=True, help="the partition to (re)write")
    la.add_argument("--out", type=Path, default=None,
                    help="raw root (default: paths.raw_root of the configuration)")
    la.add_argument("--format", choices=["csv", "jsonl"], default=None,
                    help="default: from the file suffix (.csv; .jsonl, .ndjson, .json)")
    la.add_argument("--config", default=None)
    la.set_defaults(fn=_cmd_land)

    q = sub.add_parser("query", help="run SQL (DuckDB) over the published tables")
    q.add_argument("sql")
    q.add_argument("--ds", default=None, help="partition the plain views show (default: latest)")
    q.add_argument("--warehouse", type=Path, default=None)
    q.add_argument("--config", default=None)
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--max-rows", type=int, default=100)
    q.set_defaults(fn=_cmd_query)

    from vrec.stages import NAMES

    r = sub.add_parser("run-stage", help="run one stage for one day without Airflow "
                                         f"({', '.join(NAMES)})")
    r.add_argument("stage")
    r.add_argument("--ds", required=True)
    r.add_argument("--config", default=None)
    r.add_argument("--override-quality-gate", action="store_true",
                   help="publish only: publish even when the quality gate refuses (logged)")
    r.add_argument("--override-reason", default="", help="publish only: why")
    r.add_argument("--retune", action="store_true",
                   help="train_cf and evaluate: tune afresh instead of taking the tuning this "
                        "day used before")
    r.add_argument("--run-id", default=None,
                   help="the run this stage belongs to (default: the day's current run)")
    r.set_defaults(fn=_cmd_run_stage)

    st = sub.add_parser("status", help="what is published and did the last nights work "
                                       "(exit 1: newest night failed; 3: stale)")
    st.add_argument("--warehouse", type=Path, default=None)
    st.add_argument("--config", default=None)
    st.add_argument("--runs", type=int, default=7, help="nights shown (newest first)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--max-age", default=None,
                    help="exit 3 when the latest published day ended longer ago than this "
                         "(36h, 2d, 1d12h)")
    st.add_argument("--now", default=None,
                    help="judge as of this ISO time instead of now (UTC when no offset)")
    st.set_defaults(fn=_cmd_status)

    d = sub.add_parser("demo", help="the end-to-end demo (what `make demo` runs)")
    d.set_defaults(fn=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vrec`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"vrec {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

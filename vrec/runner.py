"""Running one registered stage from a command line: ``jobs/stage.py`` (what Airflow's
SparkSubmitOperator submits), the DAG's local tasks and ``vrec run-stage``."""

from __future__ import annotations

import argparse
import sys
import traceback

from vrec import stages as registry
from vrec.io.warehouse import check_ds


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``<stage> --ds YYYY-MM-DD [--config FILE] [--override-quality-gate --override-reason R]``."""
    p = argparse.ArgumentParser(prog="stage", description="run one vrec stage for one day")
    p.add_argument("stage", help=f"one of: {', '.join(registry.NAMES)}")
    p.add_argument("--ds", required=True, help="the day to process, YYYY-MM-DD")
    p.add_argument("--config", default=None, help="vrec YAML config (default: $VREC_CONFIG)")
    p.add_argument("--override-quality-gate", action="store_true",
                   help="publish only: publish even when the quality gate refuses (logged)")
    p.add_argument("--override-reason", default="", help="publish only: why")
    p.add_argument("--run-id", default=None,
                   help="the run this stage belongs to (Airflow passes its run id; default: "
                        "$VREC_RUN_ID, else the day's current run, else a new manual run)")
    args = p.parse_args(argv)
    try:
        check_ds(args.ds)
    except ValueError:
        p.error(f"--ds must be YYYY-MM-DD, got {args.ds!r}")
    if args.stage not in registry.NAMES:
        p.error(f"unknown stage {args.stage!r}; stages: {', '.join(registry.NAMES)}")
    return args


def run_stage(settings, stage: str, ds: str, *, params: dict | None = None,
              run_id: str | None = None) -> dict:
    """Run one stage in this process, with a Spark session for Spark stages."""
    import os
    from pathlib import Path

    from vrec.stages.layout import RunLayout, check_inputs, default_run_id, run

    st = registry.get(stage)
    layout = RunLayout(Path(settings.paths.warehouse_root), ds)
    run_id = run_id or os.environ.get("VREC_RUN_ID") or default_run_id(layout)
    if st.name != registry.NAMES[0]:
        check_inputs(st, layout)  # before Spark starts (run() checks again, under the lock)
    if st.engine != "spark":
        return run(stage, settings, ds, params=params, run_id=run_id)
    from vrec.spark.session import build_session

    spark = build_session(settings, f"vrec-{stage}-{ds}")
    try:
        return run(stage, settings, ds, spark=spark, params=params, run_id=run_id)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    """Exit code: 0 done, 1 failed (the error is printed), 2 bad usage."""
    from vrec.config import load_settings

    args = parse_args(sys.argv[1:] if argv is None else argv)
    params = {"override_gate": args.override_quality_gate,
              "override_reason": args.override_reason}
    from vrec.stages.layout import StageInputError

    try:
        result = run_stage(load_settings(args.config), args.stage, args.ds, params=params,
                           run_id=args.run_id)
    except StageInputError as exc:  # out of order, or a stale input: the message says what to run
        print(f"[vrec] {args.ds} {args.stage} cannot run: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # report and fail the task
        if not getattr(exc, "input_problem", False):  # bad input is said, not traced
            traceback.print_exc()
        print(f"[vrec] {args.ds} {args.stage} FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"[vrec] {args.ds} {args.stage} done: {result}", flush=True)
    return 0

"""Shared entrypoint logic for ``jobs/*.py`` (spark-submit) and ``vrec run-stage``."""

from __future__ import annotations

import argparse
import sys
import traceback

from vrec.io.warehouse import check_ds

SPARK_STAGES = ("validate_inputs", "build_interactions", "embed_items", "train_cf",
                "score_users", "build_recs", "evaluate", "validate_outputs")
LOCAL_STAGES = ("publish", "report")


def parse_args(argv: list[str], stage: str) -> argparse.Namespace:
    """--ds YYYY-MM-DD [--config FILE]."""
    p = argparse.ArgumentParser(prog=stage, description=f"vrec stage {stage}")
    p.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    p.add_argument("--config", default=None, help="vrec YAML config (default: $VREC_CONFIG)")
    if stage == "publish":
        p.add_argument("--override-quality-gate", action="store_true",
                       help="publish even when the quality gate refuses (logged, recorded)")
        p.add_argument("--override-reason", default="", help="why the gate is overridden")
    args = p.parse_args(argv)
    try:
        check_ds(args.ds)
    except ValueError:
        p.error(f"--ds must be YYYY-MM-DD, got {args.ds!r}")
    return args


def run_stage(stage: str, argv: list[str]) -> int:
    """Run one stage; returns a process exit code (0 ok, 1 failed, 2 bad usage)."""
    from vrec import pipeline
    from vrec.config import load_settings

    if stage not in SPARK_STAGES + LOCAL_STAGES:
        print(f"unknown stage {stage!r}", file=sys.stderr)
        return 2
    args = parse_args(argv, stage)
    settings = load_settings(args.config)
    fn = getattr(pipeline, stage)
    try:
        if stage in SPARK_STAGES:
            from vrec.spark.session import build_session

            spark = build_session(settings, f"vrec-{stage}-{args.ds}")
            try:
                result = fn(spark, settings, args.ds)
            finally:
                spark.stop()
        elif stage == "publish":
            result = fn(settings, args.ds, override_gate=args.override_quality_gate,
                        override_reason=args.override_reason)
        else:
            result = fn(settings, args.ds)
    except Exception as exc:  # report and fail the task
        traceback.print_exc()
        print(f"[vrec] {args.ds} {stage} FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"[vrec] {args.ds} {stage} done: {result}", flush=True)
    return 0

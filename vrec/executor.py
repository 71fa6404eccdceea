"""The executor: how every stage runs, whoever starts it (``jobs/stage.py``, which
Airflow's SparkSubmitOperator submits; the DAG's local tasks; ``vrec run-stage``; the
tests), through one function, :func:`run_stage`.

Every staged path of a run is here (:data:`ARTIFACTS`, relative to
``<warehouse>/_runs/<ds>/``); nothing else builds paths into a run's staging area. Besides
artifacts, a run holds bookkeeping: ``stats/<stage>.json`` (each stage's record: status,
rows, seconds, facts, which outputs it wrote) and ``quarantine/<source>.parquet`` (rows a
stage set aside, with reasons); publish turns both into the ``run_stats`` and
``quarantine`` tables.

:func:`run_stage` checks the stage's inputs before a Spark session starts (a stage run out
of order fails in a second, not after the JVM's start-up), starts the session for a Spark
stage unless given one, then takes the ds's stage lock (one stage of a ds at a time; a
second fails at once naming the holder), checks that the run owns the ds's staging (the
first stage takes it over; a later stage of another run is refused), checks again that
each declared input comes from a stage of the same run that succeeded for this ds (and
each required stage succeeded), clears the stage's declared outputs, records ``running``,
calls ``run(ctx)``, checks every tabular output it wrote against :mod:`vrec.schemas`, and
records ``succeeded`` (with the outputs actually written) or ``failed`` (with the error).
Every record carries the run id.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrec import schemas as S
from vrec import stages as registry
from vrec.config import Settings
from vrec.dates import check_ds
from vrec.io import faults
from vrec.io import warehouse as W
from vrec.io.locks import hold, holder_note

ARTIFACTS: dict[str, str] = {
    # build_interactions
    "events": "events",                    # cleaned events as of ds (the time holdout splits them)
    "catalog": "catalog",                  # the catalog snapshot the run uses (published as items)
    "interactions": "interactions",        # weighted (user, item) pairs
    "item_popularity": "item_popularity",
    "user_profile": "user_profile",
    "feedback": "feedback",                # impressions and dismisses (never signal)
    # embed_items
    "item_vectors": "item_vectors",        # the run's item embeddings
    "image_duplicates": "image_duplicates",
    "content": "content.npz",              # content features (image PCA, text LSA) of the run
    # train_cf
    "model": "model",                      # CF factors and ids (.npy) + model.json
    "blend": "blend.json",                 # the blend used by build_recs (tuned or configured)
    "ranker": "ranker.json",               # the learned ranker's record and model (or why none)
    # candidates
    "item_space": "item_space",            # catalog-indexed arrays the ranker uses (.npy)
    "candidates": "candidates",            # per user: candidates with raw scores
    # build_recs
    "user_recs": "user_recs",              # ranked lists with clear user ids
    "item_similar": "item_similar",
    "user_recs_pseudonymized": "pseudonymized/user_recs",      # privacy.pseudonymize only
    "user_profile_pseudonymized": "pseudonymized/user_profile",
    # evaluate
    "eval_metrics": "eval_metrics",
    "realised_metrics": "realised_metrics",  # how the lists of the last nights did
    # publish
    "run_stats": "publish/run_stats",
    "quarantine_table": "publish/quarantine",
    "published_model": "publish/model",    # the model as published (pseudonymised ids when on)
}
BOOKKEEPING = ("stats", "quarantine", ".lock", "owner.json")
STAGE_LOCK, OWNER = ".lock", "owner.json"


class StageInputError(RuntimeError):
    """A stage's input is missing, or comes from a stage that has not succeeded."""


class RunOwnershipError(StageInputError):
    """The ds's staging belongs to another run."""


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run's staging area."""

    warehouse: Path
    ds: str

    @property
    def root(self) -> Path:
        return W.run_dir(self.warehouse, self.ds)

    def path(self, artifact: str) -> Path:
        """Where ``artifact`` is staged."""
        if artifact not in ARTIFACTS:
            raise KeyError(f"unknown artifact {artifact!r}")
        return self.root / ARTIFACTS[artifact]

    def record(self, stage: str) -> dict:
        """The stage's record for this ds ({} when it never ran)."""
        return W.stage_records(self.warehouse, self.ds).get(stage, {})


@dataclass
class StageContext:
    """What a stage's ``run(ctx)`` gets: settings, ds, the Spark session (Spark stages),
    parameters (e.g. publish's gate override), and checked access to its paths."""

    stage: registry.Stage
    settings: Settings
    ds: str
    spark: Any = None
    params: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    run_id: str | None = None
    phases: dict = field(default_factory=dict)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.settings.paths.warehouse_root), self.ds)

    @property
    def warehouse(self) -> Path:
        return Path(self.settings.paths.warehouse_root)

    def input(self, artifact: str) -> Path:
        """The path of a declared input that its producer wrote for this ds."""
        if artifact not in self.stage.inputs:
            raise StageInputError(f"stage {self.stage.name} does not declare {artifact!r} as "
                                  "an input (vrec/stages/__init__.py)")
        if not self.has(artifact):
            raise StageInputError(f"{artifact} was not written for ds={self.ds} by "
                                  f"{registry.producer(artifact).name}")
        return self.layout.path(artifact)

    def has(self, artifact: str) -> bool:
        """Whether a declared input was written by its (succeeded) producer."""
        return _written(self.layout, artifact)

    def earlier(self, artifact: str, ds: str) -> Path | None:
        """A declared input as the run of another ``ds`` staged it, when its producer
        succeeded for that ds and wrote it (and the staging is still there), else None:
        the evaluation replays the night of its cutoff (docs/evaluation.md)."""
        if artifact not in self.stage.inputs:
            raise StageInputError(f"stage {self.stage.name} does not declare {artifact!r} as "
                                  "an input (vrec/stages/__init__.py)")
        layout = RunLayout(self.warehouse, check_ds(ds))
        path = layout.path(artifact)
        return path if _written(layout, artifact) and path.exists() else None

    def output(self, artifact: str) -> Path:
        """The path of a declared output (cleared before the stage ran)."""
        if artifact not in self.stage.outputs:
            raise StageInputError(f"stage {self.stage.name} does not declare {artifact!r} as "
                                  "an output (vrec/stages/__init__.py)")
        path = self.layout.path(artifact)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def check_output(self, artifact: str) -> None:
        """Check a written output against its declaration in :mod:`vrec.schemas` (raises
        :class:`vrec.schemas.SchemaMismatch` naming the artifact and the column). The
        executor checks every output when the stage ends; publish checks its own before
        its commit point."""
        S.check_output(artifact, self.output(artifact))

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a part of the stage: its seconds (summed when a name repeats) go into the
        stage record's ``phases``, and a ``[vrec]`` line says them when it ends."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sec = time.perf_counter() - t0
            self.phases[name] = round(self.phases.get(name, 0.0) + sec, 3)
            print(f"[vrec] {self.ds} {self.stage.name}: {name} {sec:.1f} s", flush=True)

    def record(self, rows_in: int, rows_out: int, rows_quarantined: int = 0, **extra) -> None:
        """The stage's row counts and facts (written into its record when it ends)."""
        self.stats = {"rows_in": int(rows_in), "rows_out": int(rows_out),
                      "rows_quarantined": int(rows_quarantined), **extra}
        print(f"[vrec] {self.ds} {self.stage.name}: in={rows_in} out={rows_out} "
              f"quarantined={rows_quarantined}", flush=True)


def _written(layout: RunLayout, artifact: str) -> bool:
    """Whether ``artifact``'s producer succeeded for the layout's ds and wrote it."""
    rec = layout.record(registry.producer(artifact).name)
    return rec.get("status") == "succeeded" and artifact in rec.get("outputs_written", [])


def needed(stage: registry.Stage) -> list[str]:
    """The stages that must have succeeded before ``stage``: the producers of its inputs
    and its ``requires``, in pipeline order."""
    names = {registry.producer(a).name for a in stage.inputs} | set(stage.requires)
    return [s.name for s in registry.STAGES if s.name in names]


def check_inputs(stage: registry.Stage, layout: RunLayout, run_id: str | None = None) -> None:
    """Raise :class:`StageInputError` unless every stage ``stage`` needs (transitively)
    succeeded for this ds, each after the stages it needs, and (with ``run_id``) in the
    same run: a stage re-run after one that read its outputs makes that reader stale
    (e.g. build_recs re-run after validate_outputs: publish refuses until
    validate_outputs runs again), and publish needs this run's validate_outputs."""
    records = W.stage_records(layout.warehouse, layout.ds)
    order = " -> ".join(registry.NAMES)

    def check(name: str, reader: str, reader_started: int | None) -> None:
        rec = records.get(name, {})
        status = rec.get("status")
        if status != "succeeded":
            raise StageInputError(
                f"{stage.name} for ds={layout.ds} needs {name} to have succeeded for that ds "
                f"first (its record says {status or 'never ran'}); run the stages in order: "
                f"{order}")
        if run_id is not None and rec.get("run_id") not in (None, run_id):
            raise StageInputError(
                f"{stage.name} of run {run_id} for ds={layout.ds} needs {name} from the same "
                f"run, but its record is from run {rec['run_id']}: run {name} again")
        if reader_started is not None and rec.get("finished_seq", 0) > reader_started:
            raise StageInputError(
                f"{stage.name} for ds={layout.ds}: {reader} ran before the latest run of "
                f"{name}, so it read older outputs; run {reader} again (order: {order})")
        for dep in needed(registry.get(name)):
            check(dep, name, rec.get("started_seq", 0))

    for name in needed(stage):
        check(name, stage.name, None)


def _next_seq(layout: RunLayout) -> int:
    """A counter over the records of one ds: orders stage starts and ends without clocks."""
    recs = W.stage_records(layout.warehouse, layout.ds).values()
    return 1 + max([int(r.get(k, 0)) for r in recs for k in ("started_seq", "finished_seq")],
                   default=0)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def owner(layout: RunLayout) -> dict:
    """The run that owns the ds's staging ({} when none yet)."""
    import json

    p = layout.root / OWNER
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}


def default_run_id(layout: RunLayout) -> str:
    """The run a stage joins when none is named: the ds's current run, else a new manual one."""
    return owner(layout).get("run_id") or \
        "manual__" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def claim(stage: registry.Stage, layout: RunLayout, run_id: str) -> None:
    """Make ``run_id`` the owner of the ds's staging: the first stage takes it over from
    any earlier run; a later stage of another run is refused (:class:`RunOwnershipError`)."""
    current = owner(layout)
    if current.get("run_id") == run_id:
        return
    if current and stage.name != registry.NAMES[0]:
        raise RunOwnershipError(
            f"the staging of ds={layout.ds} belongs to run {current['run_id']} (since "
            f"{current.get('since')}); {stage.name} of run {run_id} cannot use it. Start "
            f"this run from {registry.NAMES[0]} (that takes the day over) or continue run "
            f"{current['run_id']} (vrec run-stage --run-id {current['run_id']})")
    if current:
        print(f"[vrec] {layout.ds}: run {run_id} takes the day over from run "
              f"{current['run_id']}", flush=True)
    W.write_json(layout.root / OWNER, {"run_id": run_id, "since": _now(), "by": stage.name})


def run_stage(settings: Settings, stage: str, ds: str, *, spark=None,
              params: dict | None = None, run_id: str | None = None) -> dict:
    """Run one stage for ``ds`` under the contract (module doc) as part of run ``run_id``
    (default: ``$VREC_RUN_ID``, else the ds's current run, else a new manual one), in a
    Spark session for a Spark stage (``spark``, else one started here and stopped after);
    returns its summary."""
    st = registry.get(stage)
    check_ds(ds)
    layout = RunLayout(Path(settings.paths.warehouse_root), ds)
    layout.root.mkdir(parents=True, exist_ok=True)
    run_id = run_id or os.environ.get("VREC_RUN_ID") or default_run_id(layout)
    if st.name != registry.NAMES[0]:
        check_inputs(st, layout)  # before Spark starts (checked again under the lock)
    own = st.engine == "spark" and spark is None
    if st.name in registry.GX_STAGES:  # its 5-7 s of imports overlap the JVM's start
        from vrec.io.gxcontext import prewarm

        prewarm()
    if own:
        from vrec.spark.session import build_session

        spark = build_session(settings.model_copy(update={"spark": settings.spark.for_stage(
            st.name)}), f"vrec-{st.name}-{ds}")
    try:
        note = holder_note(f"stage {st.name} of ds={ds}", run_id=run_id)
        with hold(layout.root / STAGE_LOCK, note, what=f"the staging area of ds={ds}"):
            claim(st, layout, run_id)
            check_inputs(st, layout, run_id)
            faults.point(f"stage:{st.name}")
            return _run_locked(st, settings, layout, spark if st.engine == "spark" else None,
                               params, run_id)
    finally:
        if own:
            spark.stop()


def _run_locked(stage: registry.Stage, settings: Settings, layout: RunLayout, spark,
                params: dict | None, run_id: str) -> dict:
    ds = layout.ds
    for artifact in stage.outputs:
        path = layout.path(artifact)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    base = {"stage": stage.name, "engine": stage.engine, "run_id": run_id,
            "started_at": _now(), "started_seq": _next_seq(layout)}
    W.write_stage_record(layout.warehouse, ds, stage.name, {**base, "status": "running"})
    ctx = StageContext(stage, settings, ds, spark=spark, params=dict(params or {}),
                       run_id=run_id)
    t0 = time.perf_counter()
    try:
        summary = stage.function()(ctx)
        for artifact in stage.outputs:  # what it wrote, against vrec/schemas.py
            if layout.path(artifact).exists():
                ctx.check_output(artifact)
    except BaseException as exc:
        W.write_stage_record(layout.warehouse, ds, stage.name, {
            **base, **ctx.stats, "phases": ctx.phases, "status": "failed",
            "finished_at": _now(),
            "finished_seq": _next_seq(layout),
            "seconds": round(time.perf_counter() - t0, 3),
            "error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    written = [a for a in stage.outputs if layout.path(a).exists()]
    W.write_stage_record(layout.warehouse, ds, stage.name, {
        **base, "rows_in": 0, "rows_out": 0, "rows_quarantined": 0, **ctx.stats,
        "phases": ctx.phases, "status": "succeeded", "finished_at": _now(), "finished_seq": _next_seq(layout),
        "seconds": round(time.perf_counter() - t0, 3), "outputs_written": written})
    return summary


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str]) -> argparse.Namespace:
    """``<stage> --ds YYYY-MM-DD [--config FILE] [--run-id R] [--retune [true|false]]
    [--override-quality-gate --override-reason R]``."""
    p = argparse.ArgumentParser(prog="stage", description="run one vrec stage for one day")
    p.add_argument("stage", help=f"one of: {', '.join(registry.NAMES)}")
    p.add_argument("--ds", required=True, help="the day to process, YYYY-MM-DD")
    p.add_argument("--config", default=None, help="vrec YAML config (default: $VREC_CONFIG)")
    p.add_argument("--override-quality-gate", action="store_true",
                   help="publish only: publish even when the quality gate refuses (logged)")
    p.add_argument("--override-reason", default="", help="publish only: why")
    p.add_argument("--retune", nargs="?", const="true", default="false",
                   help="train_cf and evaluate: tune afresh instead of taking the tuning "
                        "this day used before (or a reusable earlier one); a value: true or "
                        "false (what the DAG's retune param renders to)")
    p.add_argument("--run-id", default=None,
                   help="the run this stage belongs to (Airflow passes its run id; default: "
                        "$VREC_RUN_ID, else the day's current run, else a new manual run)")
    args = p.parse_args(argv)
    try:
        check_ds(args.ds)
    except ValueError:
        p.error(f"--ds must be YYYY-MM-DD, got {args.ds!r}")
    if str(args.retune).lower() not in ("true", "false"):
        p.error(f"--retune takes true or false, got {args.retune!r}")
    args.retune = str(args.retune).lower() == "true"
    if args.stage not in registry.NAMES:
        p.error(f"unknown stage {args.stage!r}; stages: {', '.join(registry.NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit code: 0 done, 1 failed (the error is printed), 2 bad usage."""
    from vrec.config import load_settings

    args = parse_args(sys.argv[1:] if argv is None else argv)
    params = {"override_gate": args.override_quality_gate,
              "override_reason": args.override_reason, "retune": args.retune}
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

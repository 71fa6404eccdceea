"""Which day a run processes, asked of Airflow's own arithmetic: the DAG as the scheduler
sees it (serialized and read back through the plugin), its next run after a given
instant, the templates rendered for that run, and the runs a backfill creates."""

from __future__ import annotations

import copy
import datetime as dt
import types
from pathlib import Path

import pendulum
import pytest

from vrec.airflow import schedule as S
from vrec.stages import NAMES, STAGES

DAGS = Path(__file__).resolve().parent.parent / "dags"
UTC = pendulum.UTC
TASKS = ["wait_for_events", *NAMES]


def _dag(monkeypatch, **env):
    """The vrec_nightly DAG parsed by a DagBag under ``env`` (VREC_* variables)."""
    from airflow.dag_processing.dagbag import DagBag

    for key in ("VREC_RUN_AT", "VREC_START_DATE", "VREC_CATCHUP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["vrec_nightly"]


def _serialized(dag):
    """The DAG the way the scheduler holds it (needs the timetable plugin)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def _rendered_ds(dag, logical_date, run_after) -> dict[str, str]:
    """The ds each task gets once its templates are rendered for a run."""
    run = types.SimpleNamespace(logical_date=logical_date, run_after=run_after)
    out = {}
    for task_id in TASKS:
        task = copy.copy(dag.get_task(task_id))
        task.render_template_fields({"dag_run": run, "params": dag.params.dump(),
                                     "run_id": "a-run"}, jinja_env=dag.get_template_env())
        if task_id == "wait_for_events":
            out[task_id] = task.ds
        elif task_id in {s.name for s in STAGES if s.engine == "local"}:
            out[task_id] = task.op_args[1]
        else:
            args = task.application_args
            out[task_id] = args[args.index("--ds") + 1]
            assert args[args.index("--retune") + 1] == "false"  # the param's default
    return out


@pytest.mark.parametrize("now, expected", [
    (pendulum.datetime(2026, 11, 23, 0, 0, 1, tz=UTC), "2026-11-22"),    # the night of the bug
    (pendulum.datetime(2026, 11, 23, 2, 30, tz=UTC), "2026-11-22"),      # after the run hour
    (pendulum.datetime(2026, 11, 22, 23, 59, tz=UTC), "2026-11-21"),     # before midnight
    (pendulum.datetime(2027, 1, 1, 0, 0, 0, tz=UTC), "2026-12-31"),      # across a year
])
def test_the_next_scheduled_run_processes_the_day_that_ended(monkeypatch, now, expected):
    dag = _dag(monkeypatch)
    monkeypatch.setattr(S, "_utcnow", lambda: now)
    info = _serialized(dag).next_dagrun_info(last_automated_run_info=None)
    day = pendulum.parse(expected)
    assert info.logical_date == day
    assert info.data_interval.start == day and info.data_interval.end == day + dt.timedelta(days=1)
    assert info.run_after == day + dt.timedelta(days=1, hours=2)   # 02:00 UTC the next day
    assert (info.run_after.date() - dt.timedelta(days=1)).isoformat() == expected
    rendered = _rendered_ds(dag, info.logical_date, info.run_after)
    assert rendered == {t: expected for t in TASKS}


def test_after_a_run_the_next_night_processes_the_next_day(monkeypatch):
    dag = _serialized(_dag(monkeypatch))
    monkeypatch.setattr(S, "_utcnow", lambda: pendulum.datetime(2026, 11, 23, 3, tz=UTC))
    first = dag.next_dagrun_info(last_automated_run_info=None)
    second = dag.next_dagrun_info(last_automated_run_info=first)
    assert second.logical_date == pendulum.datetime(2026, 11, 23, tz=UTC)
    assert second.run_after == pendulum.datetime(2026, 11, 24, 2, tz=UTC)


def test_the_run_hour_is_configurable_and_checked(monkeypatch):
    dag = _dag(monkeypatch, VREC_RUN_AT="05:30")
    monkeypatch.setattr(S, "_utcnow", lambda: pendulum.datetime(2026, 11, 23, 1, tz=UTC))
    info = _serialized(dag).next_dagrun_info(last_automated_run_info=None)
    assert info.logical_date == pendulum.datetime(2026, 11, 22, tz=UTC)
    assert info.run_after == pendulum.datetime(2026, 11, 23, 5, 30, tz=UTC)
    assert "05:30" in dag.timetable.summary

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VREC_RUN_AT", "25:00")
    errors = DagBag(dag_folder=str(DAGS)).import_errors
    assert any("VREC_RUN_AT must be HH:MM" in e for e in errors.values()), errors


def _infos(dag, n):
    out, info = [], None
    for _ in range(n):
        info = dag.next_dagrun_info(last_automated_run_info=info)
        if info is None:
            break
        out.append(info)
    return out


def test_catchup_and_start_date_follow_the_environment(monkeypatch):
    now = pendulum.datetime(2026, 11, 23, 1, tz=UTC)
    monkeypatch.setattr(S, "_utcnow", lambda: now)
    # catchup on: every day from the start date, the last one due at today's run hour
    dag = _serialized(_dag(monkeypatch, VREC_CATCHUP="true", VREC_START_DATE="2026-11-18"))
    infos = _infos(dag, 5)
    assert [i.logical_date.date().isoformat() for i in infos] == [
        "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"]
    assert [i.run_after <= now for i in infos] == [True, True, True, True, False]
    # catchup off (the default): only the last complete day, whatever the start date
    dag = _serialized(_dag(monkeypatch, VREC_START_DATE="2026-11-18"))
    assert dag.next_dagrun_info(last_automated_run_info=None).logical_date == \
        pendulum.datetime(2026, 11, 22, tz=UTC)
    # a start date in the future: nothing runs before it
    dag = _serialized(_dag(monkeypatch, VREC_START_DATE="2026-12-01"))
    assert dag.next_dagrun_info(last_automated_run_info=None).logical_date == \
        pendulum.datetime(2026, 12, 1, tz=UTC)


@pytest.mark.parametrize("from_time, to_time", [((0, 0), (0, 0)), ((9, 30), (18, 0))])
def test_a_backfill_from_d1_to_d2_runs_exactly_those_days(monkeypatch, from_time, to_time):
    """Airflow's own backfill planner (what the UI dialog and POST /api/v2/backfills use)."""
    from airflow.models.backfill import _get_info_list

    dag = _dag(monkeypatch)
    sd = _serialized(dag)
    infos = _get_info_list(from_date=pendulum.datetime(2026, 11, 10, *from_time, tz=UTC),
                           to_date=pendulum.datetime(2026, 11, 16, *to_time, tz=UTC),
                           reverse=False, dag=sd)
    days = [f"2026-11-{d}" for d in range(10, 17)]
    assert [i.logical_date.date().isoformat() for i in infos] == days
    assert [_rendered_ds(dag, i.logical_date, i.run_after)["validate_inputs"] for i in infos] == days


def test_a_backfill_never_runs_a_day_that_has_not_ended(monkeypatch):
    from airflow.models.backfill import _get_info_list

    today = pendulum.now(UTC).start_of("day")
    infos = _get_info_list(from_date=today - dt.timedelta(days=2), to_date=today, reverse=False,
                           dag=_serialized(_dag(monkeypatch)))
    assert [i.logical_date for i in infos] == [today - dt.timedelta(days=2),
                                               today - dt.timedelta(days=1)]


def test_manual_runs_and_cleared_runs_keep_their_day(monkeypatch):
    dag = _dag(monkeypatch)
    # a manual run (UI, REST, `airflow dags test`) with a logical date: that date's day
    logical = pendulum.datetime(2026, 11, 16, tz=UTC)
    assert set(_rendered_ds(dag, logical, pendulum.datetime(2026, 11, 23, 9, tz=UTC)).values()) \
        == {"2026-11-16"}
    # ... at any time of that day, in any time zone
    assert S.run_ds(pendulum.datetime(2026, 11, 16, 23, 30, tz="Europe/Berlin"), None) == "2026-11-16"
    # without a logical date (allowed in Airflow 3): the day before it started
    assert set(_rendered_ds(dag, None, pendulum.datetime(2026, 11, 23, 9, tz=UTC)).values()) \
        == {"2026-11-22"}
    # the manual data interval covers the logical date's day
    interval = dag.timetable.infer_manual_data_interval(run_after=logical)
    assert (interval.start, interval.end) == (logical, logical + dt.timedelta(days=1))
    with pytest.raises(ValueError, match="neither"):
        S.run_ds(None, None)


def test_the_plugin_registers_the_timetable_for_the_scheduler():
    from airflow import plugins_manager
    from airflow.utils.types import DagRunType

    assert plugins_manager.get_timetables_plugins()["vrec.airflow.schedule.NightlyTimetable"] is \
        S.NightlyTimetable
    t = S.NightlyTimetable("07:05")
    assert S.NightlyTimetable.deserialize(t.serialize()) == t
    run_id = t.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=pendulum.datetime(2026, 11, 23, 7, 5, tz=UTC),
                               data_interval=t.info_for_day(
                                   pendulum.datetime(2026, 11, 22, tz=UTC)).data_interval)
    assert run_id == "scheduled__2026-11-22T00:00:00+00:00"

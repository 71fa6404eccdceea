"""When the nightly DAG runs and which day a run processes: the one mapping, in one place.

A vrec run processes one UTC day, its ``ds``. The timetable gives the run for day D
the data interval [D 00:00, D+1 00:00) UTC and the logical date D 00:00, and lets the
scheduler start it at D+1 plus the run hour (``VREC_RUN_AT``, default 02:00 UTC), so a
scheduled night always processes the day that has just ended. The stages get
``ds = run_ds(logical date, run after)``:

- a scheduled, backfilled or cleared run, or a manual one with a logical date: the UTC
  day of its logical date (a backfill from D1 to D2 makes exactly the runs D1..D2);
- a manual run without a logical date (allowed by Airflow 3): the day before it started.

Airflow 3's default for a cron schedule (``CronTriggerTimetable``) would instead put the
logical date at the moment of the run, so midnight's run would name the day that just
began. The timetable is registered with Airflow by the plugin below (entry point
``airflow.plugins`` in pyproject.toml), which the scheduler needs to deserialize it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from airflow.utils.types import DagRunType

DAY = dt.timedelta(days=1)
UTC = pendulum.UTC
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_run_at(text: str) -> dt.timedelta:
    """``"02:00"`` -> 2 h: the run hour (UTC) as an offset after midnight."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ValueError(f"VREC_RUN_AT must be HH:MM (UTC, 00:00-23:59), got {text!r}")
    return dt.timedelta(hours=int(m[1]), minutes=int(m[2]))


def day_start(t: dt.datetime) -> pendulum.DateTime:
    """Midnight UTC of the UTC day that contains ``t`` (an aware datetime)."""
    t = pendulum.instance(t).in_timezone(UTC)
    return pendulum.datetime(t.year, t.month, t.day, tz=UTC)


def run_ds(logical_date: dt.datetime | None, run_after: dt.datetime | None) -> str:
    """The ds a DAG run processes (YYYY-MM-DD): the UTC day of its logical date, or for a
    run without one, the day before ``run_after`` (the last complete day)."""
    if logical_date is not None:
        return day_start(logical_date).date().isoformat()
    if run_after is None:
        raise ValueError("a DAG run has neither a logical date nor a run_after time")
    return (day_start(run_after) - DAY).date().isoformat()


def _utcnow() -> pendulum.DateTime:
    return pendulum.now(UTC)


class NightlyTimetable(Timetable):
    """One run per UTC day D: data interval [D, D+1), logical date D 00:00, started at
    D+1 + ``run_at``. With catchup off the first run is the last complete day; with
    catchup on every day from the day of ``start_date``."""

    periodic = True
    can_be_scheduled = True

    def __init__(self, run_at: str = "02:00") -> None:
        self._delay = parse_run_at(run_at)
        self.run_at = f"{self._delay.seconds // 3600:02d}:{self._delay.seconds % 3600 // 60:02d}"
        self.description = (f"Every day at {self.run_at} UTC, for the UTC day that ended "
                            f"{self.run_at} before (ds = the logical date's day)")

    @property
    def summary(self) -> str:
        return f"daily {self.run_at} UTC, previous day"

    def serialize(self) -> dict[str, Any]:
        return {"run_at": self.run_at}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyTimetable:
        return cls(data["run_at"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NightlyTimetable) and other.run_at == self.run_at

    def __hash__(self) -> int:
        return hash(("NightlyTimetable", self.run_at))

    def info_for_day(self, day: dt.datetime) -> DagRunInfo:
        """The run of the UTC day containing ``day``."""
        start = day_start(day)
        return DagRunInfo(run_after=start + DAY + self._delay,
                          data_interval=DataInterval(start=start, end=start + DAY))

    def infer_manual_data_interval(self, *, run_after: pendulum.DateTime) -> DataInterval:
        # a manual run with logical date L covers L's day (Airflow calls this with L)
        start = day_start(run_after)
        return DataInterval(start=start, end=start + DAY)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        earliest = restriction.earliest
        if last_automated_data_interval is not None:
            start = day_start(last_automated_data_interval.start) + DAY
        elif earliest is None:
            return None  # no start_date: nothing to schedule
        else:
            start = day_start(earliest)
        if earliest is not None:
            start = max(start, day_start(earliest))
        if not restriction.catchup:
            # skip to the last complete day (its run is due today at run_at)
            start = max(start, day_start(_utcnow()) - DAY)
        if restriction.latest is not None and start > restriction.latest:
            return None
        return self.info_for_day(start)

    def generate_run_id(self, *, run_type: DagRunType, run_after: pendulum.DateTime,
                        data_interval: DataInterval | None, **extra) -> str:
        # name scheduled and backfill runs after the day they process, not when they start
        from airflow.utils.types import DagRunType

        if data_interval is not None and run_type in (DagRunType.SCHEDULED,
                                                      DagRunType.BACKFILL_JOB):
            return run_type.generate_run_id(suffix=data_interval.start.isoformat())
        return run_type.generate_run_id(suffix=run_after.isoformat())


class VrecPlugin(AirflowPlugin):
    """Registers vrec's timetable with Airflow (scheduler, DAG processor, API server)."""

    name = "vrec"
    timetables = [NightlyTimetable]

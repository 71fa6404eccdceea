"""The Airflow side of ``vrec.io.landing``: a deferrable sensor that waits for the day's
events partition without holding a worker slot (the triggerer checks the folder), and
fails with the path it expected when the wait runs out."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout
from airflow.triggers.base import BaseTrigger, TriggerEvent

from vrec.io.landing import partition_status, timeout_message


class LandingTrigger(BaseTrigger):
    """Checks a partition folder every ``poke_seconds`` until it is complete or
    ``deadline`` (POSIX time) passes; fires once either way."""

    def __init__(self, folder: str, quiet_minutes: float | None, poke_seconds: float,
                 started: float, deadline: float) -> None:
        super().__init__()
        self.folder, self.quiet_minutes, self.poke_seconds = folder, quiet_minutes, poke_seconds
        self.started, self.deadline = started, deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("vrec.airflow.sensors.LandingTrigger", {
            "folder": self.folder, "quiet_minutes": self.quiet_minutes,
            "poke_seconds": self.poke_seconds, "started": self.started, "deadline": self.deadline})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            status = await asyncio.to_thread(partition_status, self.folder,
                                             quiet_minutes=self.quiet_minutes)
            now = time.time()
            if status.complete or now >= self.deadline:
                yield TriggerEvent({"complete": status.complete, "why": status.why,
                                    "waited": now - self.started})
                return
            self.log.info("[vrec] waiting for events: %s", status.describe())
            await asyncio.sleep(max(0.05, min(self.poke_seconds, self.deadline - now)))


class LandingSensor(BaseSensorOperator):
    """Waits until ``raw/events/ds=<ds>`` is complete (its ``_SUCCESS`` marker, or data
    files quiet for ``landing.quiet_minutes``), deferring to the triggerer in between.
    Timeout and check interval come from the vrec config's ``landing`` section, read when
    the task runs (not when the scheduler parses the DAG)."""

    template_fields = ("ds",)
    ui_color = "#e8f4ea"

    def __init__(self, *, ds: str, config: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ds, self.config = ds, config

    def _target(self) -> tuple[Path, Any]:
        from vrec.config import load_settings
        from vrec.dates import check_ds
        from vrec.io.rawio import partition_dir

        settings = load_settings(self.config)
        check_ds(self.ds)
        return partition_dir(settings.paths.raw_root, "events", self.ds), settings.landing

    def poke(self, context: Any) -> bool:
        folder, landing = self._target()
        return partition_status(folder, quiet_minutes=landing.quiet_minutes).complete

    def execute(self, context: Any) -> str:
        folder, landing = self._target()
        status = partition_status(folder, quiet_minutes=landing.quiet_minutes)
        self.log.info("[vrec] %s events: %s", self.ds, status.describe())
        if status.complete:
            return status.why
        now = time.time()
        wait = dt.timedelta(minutes=landing.wait_timeout_minutes)
        self.log.info("[vrec] waiting up to %s for %s/_SUCCESS (checked every %gs in the "
                      "triggerer)", wait, folder, landing.poke_seconds)
        self.defer(trigger=LandingTrigger(str(folder), landing.quiet_minutes, landing.poke_seconds,
                                          started=now, deadline=now + wait.total_seconds()),
                   method_name="execute_complete",
                   # the trigger fires at its own deadline; this is only a backstop
                   timeout=wait + dt.timedelta(minutes=10))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        folder, _ = self._target()
        if event.get("complete"):
            self.log.info("[vrec] %s events complete after %.0fs: %s", self.ds,
                          event.get("waited", 0), event.get("why"))
            return str(event.get("why"))
        msg = timeout_message(folder, str(event.get("why")),
                              dt.timedelta(seconds=float(event.get("waited", 0))))
        self.log.error("[vrec] %s", msg)
        raise AirflowSensorTimeout(msg)

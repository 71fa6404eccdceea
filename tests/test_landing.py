"""The landing convention (``_SUCCESS`` or quiet data files), the writers that follow it,
and the deferrable sensor and trigger that wait for it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time

import pandas as pd
import pytest

from vrec.io import landing as L
from vrec.io.rawio import write_events_partition

EVENTS = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_type": ["view"],
                       "value": [None], "ts": pd.to_datetime(["2026-11-20 10:00"], utc=True)})


def _age(path, minutes):
    t = time.time() - minutes * 60
    os.utime(path, (t, t))


def test_partition_status_cases(tmp_path):
    folder = tmp_path / "ds=2026-11-20"
    s = L.partition_status(folder, quiet_minutes=30)
    assert not s.complete and "does not exist" in s.why
    folder.mkdir()
    (folder / ".tmp-123.parquet").write_bytes(b"x")  # an in-flight file is not data
    (folder / "_committed_1").write_bytes(b"x")
    s = L.partition_status(folder, quiet_minutes=30)
    assert not s.complete and s.data_files == 0 and "no data files" in s.why
    data = folder / "part-0.parquet"
    data.write_bytes(b"x")
    s = L.partition_status(folder, quiet_minutes=30)
    assert not s.complete and s.data_files == 1 and "complete after 30 quiet min" in s.why
    _age(data, 31)
    s = L.partition_status(folder, quiet_minutes=30)
    assert s.complete and not s.marker and "untouched for 31 min" in s.why
    # the marker is required when quiet_minutes is null, however old the files
    s = L.partition_status(folder, quiet_minutes=None)
    assert not s.complete and "marker is required" in s.why
    L.write_marker(folder)
    s = L.partition_status(folder, quiet_minutes=None)
    assert s.complete and s.marker and s.data_files == 1


def test_writers_put_the_marker_last_and_take_it_away_first(tmp_path, monkeypatch):
    import vrec.io.rawio as R

    part = write_events_partition(tmp_path, "2026-11-20", EVENTS).parent
    assert (part / L.MARKER).is_file()
    assert L.partition_status(part, quiet_minutes=None).complete
    # a rewrite that dies midway leaves the partition without its marker (readers wait)
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(R.pq, "write_table", boom)
    with pytest.raises(OSError):
        write_events_partition(tmp_path, "2026-11-20", EVENTS)
    assert not (part / L.MARKER).exists()
    assert not L.partition_status(part, quiet_minutes=None).complete


def test_the_sample_generator_marks_every_partition(tiny_raw):
    for source in ("events", "catalog"):
        parts = sorted((tiny_raw / source).iterdir())
        assert parts and all((p / L.MARKER).is_file() for p in parts), source


def test_timeout_message_names_the_expected_path(tmp_path):
    msg = L.timeout_message(tmp_path / "events" / "ds=2026-11-22", "the folder does not exist yet",
                            dt.timedelta(hours=6))
    assert f"{tmp_path}/events/ds=2026-11-22/_SUCCESS" in msg
    assert "waited 6.0 h" in msg and "the folder does not exist yet" in msg


def _events(trigger):
    async def collect():
        return [e async for e in trigger.run()]

    return asyncio.run(collect())


def test_trigger_fires_when_the_marker_lands(tmp_path):
    from vrec.airflow.sensors import LandingTrigger

    folder = tmp_path / "events" / "ds=2026-11-20"
    now = time.time()
    trigger = LandingTrigger(str(folder), None, 0.1, started=now, deadline=now + 30)

    async def land_while_waiting():
        async def land_later():
            await asyncio.sleep(0.3)
            write_events_partition(tmp_path, "2026-11-20", EVENTS)

        task = asyncio.create_task(land_later())
        events = [e async for e in trigger.run()]
        await task
        return events

    events = asyncio.run(land_while_waiting())
    assert len(events) == 1 and events[0].payload["complete"] is True
    assert "_SUCCESS present" in events[0].payload["why"] and events[0].payload["waited"] >= 0.3
    # round trip through the triggerer's serialisation
    cls, kwargs = trigger.serialize()
    assert cls == "vrec.airflow.sensors.LandingTrigger" and LandingTrigger(**kwargs).folder == str(folder)


def test_trigger_gives_up_at_its_deadline(tmp_path):
    from vrec.airflow.sensors import LandingTrigger

    now = time.time()
    events = _events(LandingTrigger(str(tmp_path / "nope"), 30, 0.05, started=now, deadline=now + 0.3))
    assert len(events) == 1 and events[0].payload["complete"] is False
    assert events[0].payload["waited"] >= 0.3 and "does not exist" in events[0].payload["why"]


def test_sensor_passes_a_complete_day_defers_an_incomplete_one_and_fails_naming_the_path(tmp_path):
    from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

    from vrec.airflow.sensors import LandingSensor

    raw = tmp_path / "raw"
    cfg = tmp_path / "vrec.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, warehouse_root: {tmp_path / 'wh'}}}\n"
                   "landing: {wait_timeout_minutes: 90, poke_seconds: 30, quiet_minutes: null}\n")
    write_events_partition(raw, "2026-11-20", EVENTS)
    ok = LandingSensor(task_id="wait_ok", ds="2026-11-20", config=str(cfg))
    assert "_SUCCESS present" in ok.execute({})

    waiting = LandingSensor(task_id="wait", ds="2026-11-21", config=str(cfg))
    t0 = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute({})
    trig = deferred.value.trigger
    assert trig.folder == str(raw / "events" / "ds=2026-11-21") and trig.poke_seconds == 30
    assert t0 + 90 * 60 - 5 <= trig.deadline <= time.time() + 90 * 60
    assert deferred.value.timeout > dt.timedelta(minutes=90)  # a backstop behind the trigger's own

    with pytest.raises(AirflowSensorTimeout) as failed:
        waiting.execute_complete({}, {"complete": False, "why": "the folder does not exist yet",
                                      "waited": 5400.0})
    assert f"{raw}/events/ds=2026-11-21/_SUCCESS" in str(failed.value)
    assert "waited 90 min" in str(failed.value)
    assert "landed" in waiting.execute_complete({}, {"complete": True, "why": "landed", "waited": 3})

"""Crash safety of publish and retention, and the warehouse lock: a process killed with
SIGKILL at each named point (vrec.io.faults) leaves every published ds complete and
consistent with ``latest`` right, and the next publish converges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from vrec.io import warehouse as W
from vrec.io.locks import LockHeld, hold, holder_note

TABLES = ("user_recs", "item_similar", "run_stats")
D1, D2 = "2026-11-01", "2026-11-02"

PUBLISH = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pandas as pd
    from vrec.io import warehouse as W
    wh, ds, tag, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    staged = {}
    for t in TABLES_HERE:
        f = wh.parent / "staged" / ds / tag / t
        W.write_table_folder(pd.DataFrame({"tag": [tag] * n, "table": t}), f)
        staged[t] = f
    model = wh.parent / "staged" / ds / tag / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.json").write_text('{"tag": "' + tag + '"}')
    W.publish(wh, ds, staged, model=model, run_id="run-" + tag)
""").replace("TABLES_HERE", repr(TABLES))


def _publish(wh: Path, ds: str, tag: str, n: int, fault: str | None = None) -> int:
    env = {**os.environ, "VREC_FAULT": fault or ""}
    return subprocess.run([sys.executable, "-c", PUBLISH, str(wh), ds, tag, str(n)], env=env,
                          timeout=120).returncode


def _state(wh: Path) -> dict:
    """{ds: tag} of every published ds, after checking it is complete and consistent:
    every table and the model read through the same committed version, rows as the
    manifest says, plain DuckDB globs see exactly the committed partitions."""
    out = {}
    for ds in W.published_ds(wh):
        m = W.manifest(wh, ds)
        tags = set()
        for t in TABLES:
            link = wh / t / f"ds={ds}"
            assert m["version"] in str(link.resolve()), (ds, t)
            df = W.read_table(wh, t, ds)
            assert len(df) == m["tables"][t]["rows"]
            tags |= set(df["tag"])
        model = json.loads((wh / "models" / f"ds={ds}" / "model.json").read_text())
        tags.add(model["tag"])
        assert len(tags) == 1, (ds, tags)  # one publish, never a mix
        out[ds] = tags.pop()
    glob = duckdb.sql(f"SELECT DISTINCT ds FROM read_parquet('{wh}/user_recs/*/*.parquet', "
                      "hive_partitioning=true, hive_types={'ds': VARCHAR}) ORDER BY 1").fetchall()
    assert [g[0] for g in glob] == sorted(out)
    assert W.latest_ds(wh) == (max(out) if out else None)
    return out


def _leftovers(wh: Path) -> list[str]:
    """Versions beyond the kept ones, versions of uncommitted ds, dangling links."""
    bad = []
    for folder in (wh / "_versions").glob("ds=*"):
        n = len(list(folder.iterdir()))
        if folder.name[3:] not in W.published_ds(wh) or n > W.KEEP_VERSIONS:
            bad.append(f"{folder}: {n} versions")
    bad += [str(p) for p in wh.glob("*/ds=*") if p.is_symlink() and not p.exists()]
    bad += [str(p) for p in wh.glob("*/.ds=*")]
    return bad


POINTS = ["publish:after_copy", "publish:after_links", "publish:after_commit",
          "publish:after_latest"]


@pytest.mark.parametrize("point", POINTS)
def test_a_republish_killed_at_any_point_leaves_old_or_new_whole_and_a_rerun_converges(
        point, tmp_path):
    wh = tmp_path / "wh"
    assert _publish(wh, D1, "old", 3) == 0
    assert _publish(wh, D2, "day2", 2) == 0
    rc = _publish(wh, D1, "new", 5, fault=point)
    assert rc == -signal.SIGKILL
    state = _state(wh)
    committed = point in ("publish:after_commit", "publish:after_latest")
    assert state == {D1: "new" if committed else "old", D2: "day2"}
    assert _publish(wh, D1, "again", 4) == 0
    assert _state(wh) == {D1: "again", D2: "day2"}
    assert _leftovers(wh) == []


@pytest.mark.parametrize("point", ["publish:after_copy", "publish:after_links"])
def test_a_first_publish_killed_before_its_commit_is_invisible_and_collected(point, tmp_path):
    wh = tmp_path / "wh"
    assert _publish(wh, D1, "one", 3) == 0
    assert _publish(wh, D2, "two", 2, fault=point) == -signal.SIGKILL
    assert _state(wh) == {D1: "one"}  # D2 shows nowhere, not even in the *_all globs
    from vrec.io.query import run_query

    assert run_query(wh, "SELECT DISTINCT ds FROM user_recs_all")["ds"].tolist() == [D1]
    assert _publish(wh, D1, "one-b", 3) == 0  # any later publish collects D2's leftovers
    assert _leftovers(wh) == [] and not (wh / "_versions" / f"ds={D2}").exists()


def test_retention_killed_after_the_commit_point_is_gone_converges(tmp_path):
    wh = tmp_path / "wh"
    for ds, tag in [("2026-10-01", "a"), ("2026-10-20", "b"), ("2026-11-01", "c")]:
        assert _publish(wh, ds, tag, 2) == 0
    code = ("import sys; from vrec.io import warehouse as W; "
            "W.apply_retention(sys.argv[1], '2026-11-01', 10)")
    res = subprocess.run([sys.executable, "-c", code, str(wh)], timeout=120,
                         env={**os.environ, "VREC_FAULT": "retention:after_pointer"})
    assert res.returncode == -signal.SIGKILL
    assert _state(wh) == {"2026-10-20": "b", "2026-11-01": "c"}  # 10-01: gone, not torn
    assert W.apply_retention(wh, "2026-11-01", 10) == ["2026-10-20"]
    assert _state(wh) == {"2026-11-01": "c"} and _leftovers(wh) == []


def test_concurrent_publishes_are_serialised_and_latest_never_moves_back(tmp_path):
    wh = tmp_path / "wh"
    env = {**os.environ, "VREC_FAULT": ""}
    procs = [subprocess.Popen([sys.executable, "-c", PUBLISH, str(wh), ds, f"t{i}", "3"], env=env)
             for i, ds in enumerate([D2, D1, D2, D1, D1])]
    assert [p.wait(timeout=120) for p in procs] == [0] * 5
    state = _state(wh)
    assert sorted(state) == [D1, D2] and _leftovers(wh) == []
    assert json.loads((wh / "_manifests" / "latest.json").read_text())["ds"] == D2


HOLD = textwrap.dedent("""
    import sys, time
    from vrec.io.locks import hold, holder_note
    with hold(sys.argv[1], holder_note("a test holder", run_id="r-1")):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_held_lock_names_its_holder_and_a_dead_holders_lock_is_taken_at_once(tmp_path):
    lock = tmp_path / "_locks" / "publish.lock"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=rf"held by a test holder run r-1 \(pid {p.pid} on "):
            with hold(lock, holder_note("me"), wait_seconds=0.5, what="the lock"):
                pass
        assert time.monotonic() - t0 < 5
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        with hold(lock, holder_note("me"), what="the lock") as stale:
            assert stale["pid"] == p.pid  # the dead holder's note, reported
    finally:
        p.kill()


def test_a_warehouse_of_the_older_layout_is_migrated_on_the_next_publish(tmp_path):
    """Per-table version links and _manifests/ds=*.json (what earlier vrec wrote) become
    committed versions; the data, the model and the manifest stay readable."""
    wh = tmp_path / "wh"
    for t in TABLES:
        v = wh / "_versions" / t / f"ds={D1}" / "v1"
        W.write_table_folder(pd.DataFrame({"tag": ["old"] * 3, "table": t}), v)
        (wh / t).mkdir(parents=True)
        os.symlink(os.path.relpath(v, wh / t), wh / t / f"ds={D1}")
    (wh / "models" / f"ds={D1}").mkdir(parents=True)
    (wh / "models" / f"ds={D1}" / "model.json").write_text('{"tag": "old"}')
    W.write_json(wh / "_manifests" / f"ds={D1}.json", {
        "ds": D1, "version": "v1", "tables": {t: {"rows": 3} for t in TABLES}})
    assert _publish(wh, D2, "new", 2) == 0
    assert _state(wh) == {D1: "old", D2: "new"} and _leftovers(wh) == []
    assert not list((wh / "_manifests").glob("ds=*.json"))
    assert not (wh / "_versions" / TABLES[0]).exists()


# ---------------------------------------------------------------- one run per ds at a time

def test_a_second_run_of_a_day_fails_at_once_naming_the_holder_and_takes_over_when_free(
        spark, tiny_raw, tmp_path):
    """Run A's validate_inputs is stopped mid-stage (it holds the day's stage lock); a
    stage of run B fails at once naming it. Once A is killed, B's first stage takes the
    day over, and A's next stage is refused, naming B."""
    from vrec.executor import RunLayout, RunOwnershipError, owner, run_stage

    from .conftest import settings_for

    ds = "2026-11-20"
    s = settings_for(tiny_raw, tmp_path / "wh", tmp_path)
    env = {**os.environ, "VREC_FAULT": "stage:validate_inputs=hang"}
    a = subprocess.Popen([sys.executable, "-m", "vrec.cli", "run-stage", "validate_inputs",
                          "--ds", ds, "--config", str(tmp_path / "vrec.yaml"),
                          "--run-id", "run-A"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in a.stdout:  # wait until A is inside the stage
            if "hanging at stage:validate_inputs" in line:
                break
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=r"staging area of ds=2026-11-20 is held by stage "
                                           r"validate_inputs of ds=2026-11-20 run run-A \(pid "):
            run_stage(s, "validate_inputs", ds, spark=spark, run_id="run-B")
        assert time.monotonic() - t0 < 5  # at once, not after a wait
    finally:
        a.kill()
        a.wait(timeout=30)
    layout = RunLayout(s.paths.warehouse_root, ds)
    assert owner(layout)["run_id"] == "run-A"
    run_stage(s, "validate_inputs", ds, spark=spark, run_id="run-B")  # takes the day over
    assert owner(layout)["run_id"] == "run-B"
    assert layout.record("validate_inputs")["run_id"] == "run-B"
    with pytest.raises(RunOwnershipError, match="belongs to run run-B"):
        run_stage(s, "build_interactions", ds, spark=spark, run_id="run-A")


def test_a_stage_needs_its_inputs_from_its_own_run(tmp_path):
    """Publish of run B refuses validate_outputs' verdict from run A."""
    from vrec.executor import RunLayout, StageInputError, check_inputs
    from vrec.stages import get

    layout = RunLayout(tmp_path / "wh", "2026-11-20")
    seq = iter(range(1, 100))
    for name in ("validate_inputs", "build_interactions", "embed_items", "train_cf",
                 "candidates", "build_recs", "evaluate", "validate_outputs"):
        run = "run-A" if name == "validate_outputs" else "run-B"
        W.write_stage_record(layout.warehouse, layout.ds, name, {
            "stage": name, "status": "succeeded", "run_id": run,
            "started_seq": next(seq), "finished_seq": next(seq)})
    check_inputs(get("publish"), layout)  # the order alone is fine
    with pytest.raises(StageInputError, match="needs validate_outputs from the same run, but "
                                              "its record is from run run-A"):
        check_inputs(get("publish"), layout, "run-B")
    check_inputs(get("validate_outputs"), layout, "run-B")

"""The whole nightly DAG at scale, through Airflow on local Spark (``make bench-scale``).

For each scale (``1m``: 20k users x 5k items x 1M events; ``10m``: 200k x 50k x 10M, both
over 30 days, pictures for every item: the fashion-small photos first, drawn pictures for
the rest) it generates the raw zone once (kept under ``benchmarks/.cache/scale-<name>/``),
then runs ``airflow dags test vrec_nightly`` for two nights on a fresh warehouse:

* night 1, the day before the last: every picture is new (a cold image cache);
* night 2, the last day: the cache is warm and 1% of the catalog is new that day.

It records per stage the seconds inside the stage (run_stats), the task's wall time (the
spark-submit process tree's life) and the peak RSS of that process tree (sampled every
0.5 s with psutil, the JVM and its Python workers included), the peak RSS of all
processes together, and the rows of every published table. Results go to
``benchmarks/results/e2e_10m.json`` (one entry per scale; the other entries are kept) and
a Markdown table is printed for ``benchmarks/README.md``.

    python benchmarks/bench_scale.py --scale 1m --scale 10m

**Warm nights from a saved night 1.** After night 1 the warehouse and the Airflow home
are saved under ``benchmarks/.cache/scale-<name>/night1/`` (with the commit that ran
it). ``--warm`` restores that copy and runs night 2 only, so a before/after of the warm
night costs one warm night each (about half an hour at 10M) instead of two hours:

    python benchmarks/bench_scale.py --scale 10m --nights 1   # once: night 1, saved
    python benchmarks/bench_scale.py --scale 10m --warm       # night 2 from the copy

A warm result goes to ``warm`` in the results file, next to the code that ran it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from vrec.airflow.env import airflow_env, dags_test, migrate  # noqa: E402
from vrec.data.scale import ScaleSpec, generate_scale  # noqa: E402
from vrec.io import warehouse as W  # noqa: E402
from vrec.stages import STAGES  # noqa: E402

sys.path.insert(0, str(HERE))
from stage_rss import pss_of  # noqa: E402

SCALES = {
    "1m": ScaleSpec(n_users=20_000, n_items=5_000, n_events=1_000_000),
    "10m": ScaleSpec(),
}
# real product photos for the first items (VREC_BENCH_PHOTOS overrides; absent: all drawn)
PHOTOS = Path(os.environ.get("VREC_BENCH_PHOTOS",
                             REPO.parent / "shared" / "datasets" / "fashion-small"))
RESULTS = HERE / "results" / "e2e_10m.json"
GB = 1024 ** 3


MEMORY_TARGET_GB = 8.0  # the 10M night's target for every stage's process tree


def process_kind(cmd: list[str]) -> str:
    """Which part of a stage a process is: ``jvm`` (spark-submit's Java: the driver JVM
    and, in local mode, the executors), ``workers`` (Spark's Python workers and their
    daemon), ``driver`` (the stage's Python driver, ``jobs/stage.py``), else ``other``."""
    exe = os.path.basename(cmd[0]) if cmd else ""
    if exe == "java":
        return "jvm"
    if any(c in ("pyspark.daemon", "pyspark.worker") or c.endswith(("daemon.py", "worker.py"))
           for c in cmd):
        return "workers"
    if exe.startswith("python") and any(c.endswith("jobs/stage.py") for c in cmd):
        return "driver"
    return "other"


class TreeSampler(threading.Thread):
    """Peak RSS of this process's descendants, per stage (the process tree under the
    ``jobs/stage.py <stage>`` spark-submit) and per kind of process within it
    (:func:`process_kind`), and all together, every ``every`` seconds; and the peak PSS
    of each stage's tree (proportional set size: a page shared by n processes counts
    1/n in each). The summed RSS counts a shared page once per process that maps it, so
    a stage that forks (evaluate's model lists, ``eval.workers``; Spark's Python
    workers) sums to more than the memory it holds; the PSS sum is that memory."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.stop_flag = every, threading.Event()
        self.peak_total = self.peak_total_pss = 0
        self.stages: dict[str, dict] = {}
        self._stage_of: dict[tuple[int, float], str | None] = {}

    def _stage(self, p: psutil.Process) -> tuple[str | None, str]:
        """The stage a process works for (cached) and its kind (asked each time:
        spark-submit's shell becomes the JVM by exec, under the same pid)."""
        key = (p.pid, p.create_time())
        if key not in self._stage_of:
            stage = None
            for q in [p, *p.parents()]:
                cmd = q.cmdline()
                if any(c.endswith("jobs/stage.py") for c in cmd):
                    stage = cmd[[c.endswith("jobs/stage.py") for c in cmd].index(True) + 1]
                    break
            self._stage_of[key] = stage
        return self._stage_of[key], process_kind(p.cmdline())

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_flag.is_set():
            total, total_pss, per, per_pss, kinds = 0, 0, {}, {}, {}
            for p in me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                    stage, kind = self._stage(p)
                except psutil.Error:
                    continue
                pss = pss_of(p, rss)
                stage = stage or "airflow"
                total, total_pss = total + rss, total_pss + pss
                per[stage] = per.get(stage, 0) + rss
                per_pss[stage] = per_pss.get(stage, 0) + pss
                kinds.setdefault(stage, {})[kind] = kinds.get(stage, {}).get(kind, 0) + rss
            self.peak_total = max(self.peak_total, total)
            self.peak_total_pss = max(self.peak_total_pss, total_pss)
            for stage, rss in per.items():
                s = self.stages.setdefault(stage, {"peak_rss": 0, "peak_pss": 0, "by_kind": {}})
                s["peak_rss"] = max(s["peak_rss"], rss)
                s["peak_pss"] = max(s["peak_pss"], per_pss[stage])
                for kind, k_rss in kinds[stage].items():
                    s["by_kind"][kind] = max(s["by_kind"].get(kind, 0), k_rss)
            self.stop_flag.wait(self.every)


def write_config(root: Path, raw: Path, warehouse: Path) -> Path:
    """The run's settings: the shipped defaults, with this run's paths."""
    cfg = root / "vrec.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, image_root: {raw}, warehouse_root: {warehouse}}}\n"
                   "spark: {master: 'local[*]'}\n")
    return cfg


def task_seconds(home: Path, ds: str) -> dict[str, float]:
    """Each task's duration in the last DAG run for ``ds``, from Airflow's metadata database."""
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as con:
        rows = con.execute(
            "SELECT task_id, start_date, end_date FROM task_instance WHERE run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = 'vrec_nightly' AND logical_date LIKE ? "
            "ORDER BY id DESC LIMIT 1)", (f"{ds}%",)).fetchall()
    out = {}
    for task, start, end in rows:
        if start and end:
            out[task] = round((dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start))
                              .total_seconds(), 1)
    return out


def run_night(ds: str, env: dict, warehouse: Path, log: Path) -> dict:
    """One night through Airflow, with its per-stage seconds, wall time and peak RSS."""
    sampler = TreeSampler()
    sampler.start()
    t0 = time.time()
    rc = dags_test(ds, env, log_path=log, on_line=lambda line: (
        print("   " + line[line.index("[vrec]"):][:160], flush=True) if "[vrec]" in line else None))
    wall = time.time() - t0
    sampler.stop_flag.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"the night for {ds} failed (rc {rc}); log: {log}")
    stats = W.read_table(warehouse, "run_stats", ds).set_index("stage")
    records = W.stage_records(warehouse, ds)
    tasks = task_seconds(Path(env["AIRFLOW_HOME"]), ds)
    stages = {}
    for s in STAGES:
        seen = sampler.stages.get(s.name, {})
        row = stats.loc[s.name] if s.name in stats.index else None
        peak = round(seen["peak_rss"] / GB, 2) if seen else None
        pss = round(seen["peak_pss"] / GB, 2) if seen else None
        stages[s.name] = {
            "seconds": None if row is None else round(float(row["seconds"]), 1),
            "task_wall_s": tasks.get(s.name),
            "peak_rss_gb": peak,
            "peak_pss_gb": pss,
            "peak_rss_by_kind_gb": {k: round(v / GB, 2)
                                    for k, v in sorted(seen.get("by_kind", {}).items())},
            # both counts: the summed RSS is the target's measure, the PSS what is held
            "over_memory_target": bool(peak and peak > MEMORY_TARGET_GB),
            "pss_over_memory_target": bool(pss and pss > MEMORY_TARGET_GB),
            "phases": records.get(s.name, {}).get("phases", {}),
            "rows_in": None if row is None else int(row["rows_in"]),
            "rows_out": None if row is None else int(row["rows_out"]),
        }
        if stages[s.name]["over_memory_target"]:
            print(f"[bench-scale] MEMORY: {s.name} peaked at {peak} GB summed RSS "
                  f"(> {MEMORY_TARGET_GB:g} GB): {stages[s.name]['peak_rss_by_kind_gb']}; "
                  f"PSS {pss} GB" + (" (also over)" if stages[s.name]["pss_over_memory_target"]
                                     else " (the memory held is under the target)"),
                  flush=True)
    manifest = W.manifest(warehouse, ds)
    return {"ds": ds, "wall_s": round(wall, 1), "wait_for_events_s": tasks.get("wait_for_events"), "peak_rss_all_gb": round(sampler.peak_total / GB, 2),
            "peak_pss_all_gb": round(sampler.peak_total_pss / GB, 2),
            "airflow_peak_rss_gb": round(sampler.stages.get("airflow", {}).get("peak_rss", 0) / GB, 2),
            "stages": stages,
            "rows": {t: v["rows"] for t, v in manifest.get("tables", {}).items()},
            "version": manifest.get("version")}


def commit() -> str:
    """The checked-out commit (``+dirty`` with uncommitted changes to tracked files)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    return git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if dirty else "")


def overrides() -> dict[str, str]:
    """The settings this run overrides through the environment (``VREC__<SECTION>__<KEY>``,
    vrec.config), e.g. ``VREC__EVAL__WORKERS=1``: recorded with the night."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("VREC__")}


def save_night1(root: Path, warehouse: Path, home: Path, ds: str) -> Path:
    """Copy the warehouse and the Airflow home after night 1 to ``root/night1``."""
    snap = root / "night1"
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(warehouse, snap / "warehouse", symlinks=True)
    shutil.copytree(home, snap / "airflow", symlinks=True, ignore=shutil.ignore_patterns("logs"))
    (snap / "night1.json").write_text(json.dumps({"ds": ds, "commit": commit(),
                                                  "saved": dt.datetime.now(dt.UTC).isoformat()}))
    return snap


def restore_night1(root: Path, warehouse: Path, home: Path) -> dict:
    """Put the saved night-1 warehouse and Airflow home back in place."""
    snap = root / "night1"
    if not (snap / "night1.json").is_file():
        raise SystemExit(f"no saved night 1 under {snap}: run `python benchmarks/bench_scale.py "
                         f"--scale {root.name.split('-', 1)[1]} --nights 1` first")
    for dst, src in ((warehouse, snap / "warehouse"), (home, snap / "airflow")):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, symlinks=True)
    return json.loads((snap / "night1.json").read_text())


def run_warm(name: str) -> dict:
    """Night 2 of one scale from the saved night 1 (module doc)."""
    spec = SCALES[name]
    root = HERE / ".cache" / f"scale-{name}"
    raw, warehouse = root / "raw", root / "warehouse"
    saved = restore_night1(root, warehouse, root / "airflow")
    env = airflow_env(root / "airflow", config=write_config(root, raw, warehouse),
                      spark_master="local[*]")
    migrate(env)
    day = spec.end_date
    print(f"[bench-scale] {name}: warm night {day} from the night 1 of {saved['ds']} "
          f"(commit {saved['commit']})", flush=True)
    night = run_night(day.isoformat(), env, warehouse, root / f"night-{day}-warm.log")
    night.update(label="warm cache, 1% new items, from the saved night 1", code=commit(),
                 night1=saved, overrides=overrides())
    print(f"[bench-scale] {name}: warm night {day} took {night['wall_s'] / 60:.1f} min, "
          f"peak RSS (all processes) {night['peak_rss_all_gb']} GB", flush=True)
    return night


def run_scale(name: str, *, nights: int = 2, keep_warehouse: bool = False,
              save=lambda partial: None) -> dict:
    """Both nights of one scale; ``save`` gets the partial result after each night, so a
    long run that is cut off keeps the nights it finished. Night 1 is saved for
    :func:`run_warm`."""
    spec = SCALES[name]
    root = HERE / ".cache" / f"scale-{name}"
    raw, warehouse = root / "raw", root / "warehouse"
    stamp = raw / "_generated.json"
    if not stamp.exists():
        print(f"[bench-scale] {name}: generating {spec.n_events:,} events, {spec.n_users:,} users, "
              f"{spec.n_items:,} items with pictures under {raw}", flush=True)
        shutil.rmtree(raw, ignore_errors=True)
        if not PHOTOS.is_dir():
            print(f"[bench-scale] no photos at {PHOTOS}: every picture is drawn", flush=True)
        gen = generate_scale(raw, spec, photos=PHOTOS if PHOTOS.is_dir() else None)
        stamp.write_text(json.dumps(gen))
    gen = json.loads(stamp.read_text())
    if not keep_warehouse:
        shutil.rmtree(warehouse, ignore_errors=True)
        shutil.rmtree(root / "airflow", ignore_errors=True)
    env = airflow_env(root / "airflow", config=write_config(root, raw, warehouse),
                      spark_master="local[*]")
    migrate(env)
    last = spec.end_date
    done = []
    for label, day in (("cold image cache", last - dt.timedelta(days=1)),
                       ("warm cache, 1% new items", last))[:nights]:
        print(f"[bench-scale] {name}: night {day} ({label})", flush=True)
        night = run_night(day.isoformat(), env, warehouse, root / f"night-{day}.log")
        night.update(label=label, code=commit(), overrides=overrides())
        if not done:
            save_night1(root, warehouse, root / "airflow", day.isoformat())
        print(f"[bench-scale] {name}: night {day} took {night['wall_s'] / 60:.1f} min, "
              f"peak RSS (all processes) {night['peak_rss_all_gb']} GB", flush=True)
        done.append(night)
        save({"spec": {k: str(v) for k, v in vars(spec).items()}, "generated": gen, "nights": done})
    return {"spec": {k: str(v) for k, v in vars(spec).items()}, "generated": gen, "nights": done}


def markdown(results: dict) -> str:
    """The per-stage table for benchmarks/README.md: seconds and peak RSS per night and scale."""
    cols = [(scale, i) for scale in ("1m", "10m") if scale in results["scales"]
            for i in range(len(results["scales"][scale]["nights"]))]
    head = "| stage | " + " | ".join(
        f"{s} night {i + 1} s (peak GB)" for s, i in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for st in [s.name for s in STAGES]:
        cells = []
        for s, i in cols:
            v = results["scales"][s]["nights"][i]["stages"][st]
            wall = v["task_wall_s"] if v["task_wall_s"] is not None else v["seconds"]
            cells.append(f"{wall} ({v['peak_rss_gb'] if v['peak_rss_gb'] is not None else '-'})")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    cells = [f"**{results['scales'][s]['nights'][i]['wall_s']}** "
             f"({results['scales'][s]['nights'][i]['peak_rss_all_gb']})" for s, i in cols]
    lines.append("| whole night (all processes) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def night_table(night: dict) -> str:
    """One night per stage for benchmarks/README.md: the task's seconds, the peak RSS of
    its process tree and by kind of process (driver Python, JVM, Python workers; ``!``
    past the memory target), and its phases (the stage record's ``phases``)."""
    lines = ["| task | seconds | peak RSS GB (driver · JVM · workers · other) | peak PSS GB "
             "| phases, s |", "|---|---|---|---|---|"]
    for st, v in night["stages"].items():
        k = v.get("peak_rss_by_kind_gb") or {}
        mem = "-" if v["peak_rss_gb"] is None else (
            f"{v['peak_rss_gb']}{' !' if v.get('over_memory_target') else ''} "
            f"({k.get('driver', 0)} · {k.get('jvm', 0)} · {k.get('workers', 0)} · "
            f"{k.get('other', 0)})")
        pss = "-" if v.get("peak_pss_gb") is None else (
            f"{v['peak_pss_gb']}{' !' if v.get('pss_over_memory_target') else ''}")
        phases = ", ".join(f"{p} {sec:.0f}" for p, sec in (v.get("phases") or {}).items())
        lines.append(f"| {st} | {v['task_wall_s'] or v['seconds']} | {mem} | {pss} "
                     f"| {phases or '-'} |")
    lines.append(f"| **whole night** | **{night['wall_s']}** | {night['peak_rss_all_gb']} "
                 f"(all processes) | {night.get('peak_pss_all_gb', '-')} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", action="append", choices=sorted(SCALES),
                    help="scales to run (repeatable; default: 1m and 10m)")
    ap.add_argument("--nights", type=int, default=2, choices=(1, 2),
                    help="1: only the cold first night (saved for --warm)")
    ap.add_argument("--warm", action="store_true",
                    help="only night 2, from the saved night 1 (module doc)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench-scale] %(message)s")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("scales", {})
    results["machine"] = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / GB, 1),
                          "python": platform.python_version(), "when": dt.date.today().isoformat()}
    def save(name: str, partial: dict) -> None:
        # a night-1-only run (made to seed --warm) must not replace a recorded two-night run
        if args.nights == 1:
            results.setdefault("night1", {})[name] = partial
        else:
            results["scales"][name] = partial
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))

    if args.warm:
        for name in args.scale or ["10m"]:
            night = run_warm(name)
            results.setdefault("warm", {}).setdefault(name, []).append(night)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2))
            print(night_table(night))
        print(f"[bench-scale] results in {RESULTS}")
        return 0
    for name in args.scale or ["1m", "10m"]:
        save(name, run_scale(name, nights=args.nights,
                             save=lambda partial, name=name: save(name, partial)))
        if {"1m", "10m"} <= results["scales"].keys() and all(
                len(results["scales"][s]["nights"]) == 2 for s in ("1m", "10m")):
            a, b = (results["scales"][s]["nights"][1] for s in ("1m", "10m"))
            results["ratio_10m_over_1m_night2"] = {
                "whole_night": round(b["wall_s"] / a["wall_s"], 2),
                **{st: round(b["stages"][st]["task_wall_s"] / a["stages"][st]["task_wall_s"], 2)
                   for st in b["stages"] if b["stages"][st]["task_wall_s"] and a["stages"][st]["task_wall_s"]}}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"[bench-scale] results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

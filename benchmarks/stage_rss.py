"""Peak RSS of one stage, per process: ``vrec run-stage`` sampled every 0.5 s.

Splits the stage's process tree into the driver's Python, the driver JVM and Spark's
Python workers, and reports each one's peak and the split at the moment the whole tree
peaked (benchmarks/README.md, "Where the memory goes"). The tree's proportional set size
(PSS: each shared page divided among the processes that map it) is sampled too: RSS
counts a page once per process, so forked processes that share their parent's pages
(evaluate's model lists, ``eval.workers``) sum to more than the memory in use.

    python benchmarks/stage_rss.py candidates --ds 2026-11-20 --config benchmarks/.cache/scale-10m/vrec.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

GB = 1024 ** 3


def kind(p: psutil.Process, root: psutil.Process) -> str:
    """driver_python, jvm, worker or other."""
    if p.pid == root.pid:
        return "driver_python"
    if "java" in p.name():
        return "jvm"
    return "worker" if "pyspark.daemon" in " ".join(p.cmdline()) else "other"


def pss_of(p: psutil.Process, rss: int) -> int:
    """The process's PSS (``/proc/<pid>/smaps_rollup``); its RSS when that cannot be
    read (the process is gone, or the platform has no PSS)."""
    try:
        return p.memory_full_info().pss
    except (psutil.Error, AttributeError):
        return rss


def sample(cmd: list[str], every: float = 0.5) -> dict:
    """Run ``cmd``; peak RSS per process kind, the split at the tree's peak, and the
    tree's peak PSS."""
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak: dict[str, int] = {}
    best_total, best_split, best_pss = 0, {}, 0
    while proc.poll() is None:
        split: dict[str, int] = {}
        pss = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in procs:
            try:
                k, rss = kind(p, root), p.memory_info().rss
            except psutil.Error:
                continue
            split[k] = split.get(k, 0) + rss
            peak[k] = max(peak.get(k, 0), rss)
            pss += pss_of(p, rss)
        best_pss = max(best_pss, pss)
        if sum(split.values()) > best_total:
            best_total, best_split = sum(split.values()), split
        time.sleep(every)
    return {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1),
            "peak_total_gb": round(best_total / GB, 2),
            "peak_total_pss_gb": round(best_pss / GB, 2),
            "at_peak_gb": {k: round(v / GB, 2) for k, v in best_split.items()},
            "per_process_peak_gb": {k: round(v / GB, 2) for k, v in peak.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage")
    ap.add_argument("--ds", required=True)
    ap.add_argument("--config", required=True)
    a = ap.parse_args(argv)
    vrec = str(Path(sys.executable).with_name("vrec"))
    res = sample([vrec, "run-stage", a.stage, "--ds", a.ds, "--config", a.config])
    print(json.dumps(res, indent=1))
    return res["rc"]


if __name__ == "__main__":
    raise SystemExit(main())

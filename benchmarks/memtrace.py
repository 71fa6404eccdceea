"""Peak memory of one command's process tree (used for train_cf run alone at 10M).

    python benchmarks/memtrace.py TRACE.csv -- vrec run-stage train_cf --ds D --config C

Runs the command, samples the summed RSS of its process tree every 0.5 s (all of it, the
Python processes and the JVM apart), writes the timeline to ``TRACE.csv`` and prints the
peak. ``make bench-scale`` measures every stage inside the DAG; this measures one stage
outside it (``benchmarks/results/train_cf_memory_10m.json``).
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

GB = 2**30


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        raise SystemExit(__doc__)
    out, cmd = argv[0], argv[2:]
    t0 = time.time()
    child = subprocess.Popen(cmd)
    proc = psutil.Process(child.pid)
    peak = (0.0, 0.0, 0.0, 0.0)
    with open(out, "w") as f:
        f.write("t,total_gb,python_gb,java_gb\n")
        while child.poll() is None:
            total = py = java = 0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    rss, name = p.memory_info().rss, p.name()
                except psutil.Error:
                    continue
                total += rss
                if name.startswith("java"):
                    java += rss
                elif name.startswith("python") or name == "vrec":
                    py += rss
            row = (round(time.time() - t0, 1), total / GB, py / GB, java / GB)
            f.write(f"{row[0]:.1f},{row[1]:.3f},{row[2]:.3f},{row[3]:.3f}\n")
            f.flush()
            if row[1] > peak[1]:
                peak = row
            time.sleep(0.5)
    print(f"[memtrace] rc={child.returncode} wall={time.time() - t0:.1f}s peak {peak[1]:.2f} GB "
          f"at t={peak[0]}s (python {peak[2]:.2f}, java {peak[3]:.2f})", flush=True)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

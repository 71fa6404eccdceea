"""What one Spark stage's start-up costs, and what the start-up options buy (``make
bench-startup``; docs/operations.md, "Start-up").

Runs the same minimal job through ``spark-submit`` as the DAG starts a stage (local[*],
the venv's Python, 4 GB driver): build the session, count a small Parquet folder twice,
stop. Three variants, alternating, ``--repeat`` times each: no start-up options (the
peer), the class archive ``make venv`` builds, and the archive with the first JIT tier
only (``spark.quick_jit``). Prints the median wall time of each and its ratio to the
peer, and the job's own split (session, first count, second count, stop); writes
``results/startup.json``.

    python benchmarks/bench_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from vrec.spark.jvm import JAVA_OPTIONS, default_archive  # noqa: E402

JOB = '''
import json, sys, time
t0 = time.time()
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
t1 = time.time()
spark.read.parquet(sys.argv[1]).count()
t2 = time.time()
spark.read.parquet(sys.argv[1]).count()
t3 = time.time()
spark.stop()
print("SPLIT " + json.dumps({"session": t1 - t0, "first_count": t2 - t1,
                             "second_count": t3 - t2, "stop": time.time() - t3}))
'''


def run_once(options: str, data: Path, job: Path) -> dict:
    submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(submit), "--master", "local[*]", "--conf", "spark.driver.memory=4g",
           "--conf", f"spark.pyspark.python={sys.executable}",
           "--conf", f"spark.pyspark.driver.python={sys.executable}"]
    if options:
        cmd += ["--conf", f"{JAVA_OPTIONS}={options}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [str(job), str(data)], capture_output=True, text=True,
                         env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    split = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("SPLIT "))[6:])
    return {"wall": wall, **split}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    archive = default_archive()
    if not archive.is_file():
        raise SystemExit(f"no class archive at {archive}: make venv builds it")
    variants = {"no options (peer)": "",
                "class archive": f"-XX:SharedArchiveFile={archive}",
                "class archive + quick JIT": f"-XX:SharedArchiveFile={archive} "
                                             "-XX:TieredStopAtLevel=1"}
    with tempfile.TemporaryDirectory() as tmp:
        import pandas as pd

        data = Path(tmp) / "data"
        data.mkdir()
        pd.DataFrame({"a": range(1000), "b": [str(i) for i in range(1000)]}).to_parquet(
            data / "part-0.parquet")
        job = Path(tmp) / "job.py"
        job.write_text(JOB)
        runs: dict[str, list[dict]] = {k: [] for k in variants}
        for _ in range(args.repeat):
            for name, opts in variants.items():
                runs[name].append(run_once(opts, data, job))
    med = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
           for name, rs in runs.items()}
    peer = med["no options (peer)"]["wall"]
    out = HERE / "results" / "startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "cpus": os.cpu_count(),
                               "median": med, "runs": runs}, indent=2) + "\n")
    print(f"| variant | wall s (median of {args.repeat}) | vs peer | session s | first count s |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['wall']:.2f} | {m['wall'] / peer:.2f}x | {m['session']:.2f} | "
              f"{m['first_count']:.2f} |")
    print(f"[bench] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

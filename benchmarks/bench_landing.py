"""Landing 10M events from CSV (``vrec land``): the native reader (vrec.data.bulk) against
record by record, on the same file, in the same run.

The file is the scale data set's 10M events (``make bench-scale`` generates them as
Parquet under ``benchmarks/.cache/scale-10m/raw``) written as one CSV file, with the
time as epoch seconds (``--ts epoch``) or ISO 8601 text (``--ts iso``), and 1,000 dirty
lines spread through it (every kind of reject, a stray quote, cp1252 text, blank lines,
short and long lines). Each arm runs ``land_files`` in its own process (its own peak
RSS); the two partitions and their rejects must be identical.

    python benchmarks/bench_landing.py [--ts epoch|iso] [--rows N]

Target: ≤ 60 s for 10M rows with the same rejects. Results: ``results/landing_10m.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

RESULTS = HERE / "results" / "landing_10m.json"
SCALE_RAW = HERE / ".cache" / "scale-10m" / "raw"
CACHE = HERE / ".cache" / "landing"
DS = dt.date(2026, 11, 20)
DIRTY = [b",i1,view,1763596800,", b"u1,,view,1763596800,", b"u1,i1,teleport,1763596800,",
         b"u1,i1,view,,", b"u1,i1,view,yesterday,", b"u1,i1,view,1795305600,",
         b"u1,i1,view,2026-11-21T00:00:00Z,", b"u1,i1,view,1763596800,abc",
         b"u1,i1,rating,1763596800,", b'u1,"i1,view,1763596800,', b"caf\xe9,i1,view,1763596800,",
         b"u1,i1,view", b"u1,i1,view,1,2,3", b"", b"u\x01x,i1,view,1763596800,",
         b'u1,"i,1",view,1763596800,', b"u1,i1,view,2026-13-45T10:00,", b"  u8 , i8 ,view,1763596800,"]


def make_csv(ts: str, rows: int) -> Path:
    """The benchmark's CSV file (made once per time format and size)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.dataset as pds

    path = CACHE / f"events-{rows}-{ts}.csv"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    table = pds.dataset(str(SCALE_RAW / "events"), format="parquet").to_table(
        columns=["user_id", "item_id", "event_type", "ts", "value"]).slice(0, rows)
    t = table["ts"]
    text = (pc.cast(pc.divide(pc.cast(t, pa.int64()), 1_000_000), pa.string()) if ts == "epoch"
            else pc.strftime(t, format="%Y-%m-%dT%H:%M:%SZ"))
    table = table.set_column(3, "ts", text)
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink, pcsv.WriteOptions(quoting_style="none"))
    lines = sink.getvalue().to_pybytes().split(b"\n")
    rng = np.random.default_rng(0)
    for k, at in enumerate(sorted(rng.choice(np.arange(1, len(lines) - 1), 1000, replace=False))):
        lines[at] = DIRTY[k % len(DIRTY)]
    path.write_bytes(b"\n".join(lines))
    return path


def arm(csv: str, out: str, native: bool) -> dict:
    """One landing in this process: its seconds, peak RSS and counts."""
    from vrec.data.land import land_files

    t0 = time.perf_counter()
    stats = land_files("events", [csv], out, DS, native=native)
    return {"seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **{k: stats[k] for k in ("landed", "rejected", "reasons")},
            "native": stats.get("native")}


def same_partitions(a: Path, b: Path) -> bool:
    """Whether two landed partitions hold the same rows in the same order and the same
    rejects."""
    import pyarrow.parquet as pq

    pa_, pb = (p / "events" / f"ds={DS}" for p in (a, b))
    return all(pq.read_table(pa_ / f).equals(pq.read_table(pb / f))
               for f in ("part-00000.parquet", "_rejects.parquet"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ts", choices=("epoch", "iso"), default="epoch")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--arm", choices=("native", "records"), help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(arm(args.csv, args.out, args.arm == "native")))
        return 0
    csv = make_csv(args.ts, args.rows)
    run = {"ts": args.ts, "rows": args.rows, "file_mb": round(csv.stat().st_size / 2**20),
           "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    for name in ("native", "records"):
        out = CACHE / f"raw-{name}"
        res = subprocess.run([sys.executable, __file__, "--arm", name, "--csv", str(csv),
                              "--out", str(out)], capture_output=True, text=True, check=True)
        run[name] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"[bench-landing] {name}: {run[name]['seconds']} s, peak RSS "
              f"{run[name]['peak_rss_gb']} GB, {run[name]['landed']:,} landed, "
              f"{run[name]['rejected']:,} rejected", flush=True)
    run["speedup"] = round(run["records"]["seconds"] / run["native"]["seconds"], 1)
    run["same_rows_and_rejects"] = same_partitions(CACHE / "raw-native", CACHE / "raw-records")
    print(f"[bench-landing] native {run['speedup']}x faster; same rows and rejects: "
          f"{run['same_rows_and_rejects']}", flush=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.ts}-{args.rows}"] = run
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return 0 if run["same_rows_and_rejects"] else 1


if __name__ == "__main__":
    sys.exit(main())

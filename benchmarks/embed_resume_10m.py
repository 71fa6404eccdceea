"""A killed embedding at 10M resumes: the retry embeds only what the killed run left.

On a night of ``make bench-scale``'s 10M warehouse, ``--images`` pictures are taken out
of the image cache (as if new), embed_items runs (``vrec run-stage``, its own Spark) and
its whole process tree is killed (SIGKILL) once ``--kill-after`` of its tasks are in the
cache; then the stage runs again. Reported: the images each attempt embedded, the
retry's seconds, and an uninterrupted run of the same images for comparison (they are
taken out again first).

    python benchmarks/embed_resume_10m.py [--images 2000] [--kill-after 6]

Results: ``results/embed_resume_10m.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

ROOT = HERE / ".cache" / "scale-10m"
RESULTS = HERE / "results" / "embed_resume_10m.json"


def take_out(cache: Path, hashes: set[str]) -> int:
    """Remove the rows of ``hashes`` from every cache file (rewritten in place)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    removed, wanted = 0, pa.array(sorted(hashes))
    for f in sorted(cache.glob("*.parquet")):
        t = pq.read_table(f)
        drop = pc.is_in(t["content_hash"], value_set=wanted)
        n = int(pc.sum(drop).as_py() or 0)
        if n:
            pq.write_table(t.filter(pc.invert(drop)), f)
            removed += n
    return removed


def stage(ds: str, config: Path, kill_after: int | None = None, cache: Path | None = None
          ) -> dict:
    """Run embed_items; with ``kill_after``, kill its process tree once that many task
    files of this attempt are in the cache."""
    before = set(cache.glob("*.parquet")) if cache else set()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vrec.cli", "run-stage", "embed_items",
                             "--ds", ds, "--config", str(config)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = False
    while proc.poll() is None:
        if kill_after and len(set(cache.glob(f"part-{ds}-*.parquet")) - before) >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait()
    from vrec.io import warehouse as W

    rec = W.stage_records(ROOT / "warehouse", ds).get("embed_items", {})
    return {"seconds": round(time.perf_counter() - t0, 1), "killed": killed,
            "returncode": proc.returncode,
            "embedded_new": None if killed else rec.get("embedded_new"),
            "stage_seconds": None if killed else rec.get("seconds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ds", default="2026-11-20")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--kill-after", type=int, default=6)
    args = ap.parse_args(argv)
    import pandas as pd

    cache, config = ROOT / "warehouse" / "item_embeddings", ROOT / "vrec.yaml"
    vectors = pd.read_parquet(ROOT / "warehouse" / "_runs" / args.ds / "item_vectors")
    hashes = set(vectors["content_hash"].sort_values().iloc[:args.images])
    out = {"images": args.images, "task_images": 128}
    out["taken_out"] = take_out(cache, hashes)
    out["whole"] = stage(args.ds, config)
    out["taken_out_again"] = take_out(cache, hashes)
    out["killed"] = stage(args.ds, config, kill_after=args.kill_after, cache=cache)
    kept = pd.concat([pd.read_parquet(f, columns=["content_hash"])
                      for f in cache.glob("*.parquet")])["content_hash"]
    out["kept_by_the_killed_run"] = int(kept.isin(hashes).sum())
    out["retry"] = stage(args.ds, config)
    out["retry_embeds_only_the_rest"] = (
        out["retry"]["embedded_new"] == out["whole"]["embedded_new"] - out["kept_by_the_killed_run"])
    print(json.dumps(out, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    return 0 if out["retry_embeds_only_the_rest"] else 1


if __name__ == "__main__":
    sys.exit(main())

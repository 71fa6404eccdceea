"""The feedback loop's added driver work at the 10M shape, on a warm night's warehouse
(``make bench-scale``'s ``benchmarks/.cache/scale-10m/warehouse`` after ``--warm``):

    python benchmarks/feedback_10m.py benchmarks/.cache/scale-10m/warehouse 2026-11-20

evaluate's realised metrics (read the lists of the last 7 published nights, read the
window's engagements, compute) and candidates' additions (the catalog's blocked ids, the
mask, the feedback leave-outs with no feedback landed, as at 10M). build_interactions'
additions run in Spark: measure them by running that stage at the commits before and
after (``vrec run-stage build_interactions``; benchmarks/README.md). Results:
``results/feedback_10m.json``."""
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vrec import columns as C
from vrec.config import FeedbackSettings
from vrec.core.feedback import drop_warning, realised_metrics
from vrec.core.itemspace import ItemSpace, block_items
from vrec.dates import end_of_ds, shift_ds
from vrec.io import warehouse as W
from vrec.stages.candidates import feedback_exclusions
from vrec.stages.evaluate import published_lists

wh, ds = Path(sys.argv[1]), sys.argv[2]
run = W.run_dir(wh, ds)
out = {}
t = time.perf_counter()
lists = published_lists(wh, [shift_ds(ds, -h) for h in range(1, 8)])
out["lists_rows"] = len(lists)
out["read_lists_s"] = round(time.perf_counter() - t, 2)
t = time.perf_counter()
eng = W.read_folder(run / "events", [C.USER_ID, C.ITEM_ID, C.TS],
                    since=end_of_ds(str(lists[C.LIST_DS].min())))
out["window_events"] = len(eng)
out["read_window_s"] = round(time.perf_counter() - t, 2)
t = time.perf_counter()
frame = realised_metrics(lists, eng, ds)
out["realised_metrics_s"] = round(time.perf_counter() - t, 2)
hist = pd.concat([W.read_recent(wh, "realised_metrics", ds, 8), frame.assign(ds=ds)], ignore_index=True)
drop_warning(hist, drop=0.5, min_users=30)
out["realised_rows"] = len(frame)
out["evaluate_added_s"] = round(out["read_lists_s"] + out["read_window_s"] + out["realised_metrics_s"], 2)
print(frame[frame.slice == "all"].to_string())
# candidates: the catalog's blocked ids, the item space's mask, the feedback leave-outs
space = ItemSpace.load(run / "item_space", mmap=False)  # in memory in the stage already
t = time.perf_counter()
cat = W.read_folder(run / "catalog", [C.ITEM_ID, C.CATEGORY])  # (item_id, blocked) in the stage
space2 = block_items(space, cat[C.ITEM_ID].astype(str).iloc[:0])
empty = Path(tempfile.mkdtemp())
ex, left = feedback_exclusions(FeedbackSettings(), ds, empty, run / "events", space2)
out["candidates_added_s"] = round(time.perf_counter() - t, 2)
print(json.dumps(out, indent=1))
(Path(__file__).resolve().parent / "results" / "feedback_10m.json").write_text(
    json.dumps(out, indent=2) + "\n")

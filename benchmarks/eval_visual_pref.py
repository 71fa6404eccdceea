"""The visual preference model alone on fashion-small (default simulated shoppers, the
same split as eval_hybrid.py): NDCG@10 over PCA dimensions x whitening x regularization x
alpha, and the fit's seconds for 2,000 users. Chooses the `visual.*` defaults; writes
benchmarks/results/visual_pref_fashion.json.

    .venv/bin/python benchmarks/eval_visual_pref.py
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from realdata_embeddings import DATASETS, dataset_embeddings  # noqa: E402

from vrec import columns as C  # noqa: E402
from vrec.core.metrics import ndcg_at_k  # noqa: E402
from vrec.core.topk import TopK  # noqa: E402
from vrec.core.visual import fit_preferences, gram, image_features  # noqa: E402
from vrec.data.fashion import load_styles, simulate_shoppers  # noqa: E402

vec = dataset_embeddings("fashion")
styles = load_styles(DATASETS / "fashion-small", set(vec[C.ITEM_ID].astype(str)))
events, items = simulate_shoppers(styles, n_users=2000, days=60, seed=0)
cut = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=53)
tr, te = events[events[C.TS] < cut], events[events[C.TS] >= cut]
train = tr.groupby([C.USER_ID, C.ITEM_ID], as_index=False).size().rename(columns={"size": "n"})
train["weight"] = 2.0 * train["n"]
seen = set(zip(train[C.USER_ID], train[C.ITEM_ID]))
te = te[[(u, i) not in seen for u, i in zip(te[C.USER_ID], te[C.ITEM_ID])]]
rel = te.groupby(C.USER_ID)[C.ITEM_ID].apply(set).to_dict()
users = sorted(rel)
ids = vec[C.ITEM_ID].astype(str).to_numpy()
pos = {v: j for j, v in enumerate(ids)}
urow = {u: r for r, u in enumerate(users)}
t = train[train[C.USER_ID].isin(urow) & train[C.ITEM_ID].isin(pos)]
W = sp.csr_matrix((t["weight"].to_numpy(), (t[C.USER_ID].map(urow), t[C.ITEM_ID].map(pos))), shape=(len(users), len(ids)))
seenm = (W > 0).astype(np.int8).tocsr()
res = {}
for d in (32, 64, 128, 256):
    for wh in (False, True):
        f = image_features(vec, d, whiten=wh)
        for reg in (1.0, 10.0, 100.0):
            for alpha in (2.0, 10.0):
                t0 = time.perf_counter()
                x, _ = fit_preferences(W, f.z, gram(f.z), regularization=reg, alpha=alpha)
                sec = time.perf_counter() - t0
                top, _ = TopK(f.z).search(x, 10, exclude=seenm)
                v = np.mean([ndcg_at_k([ids[j] for j in row if j >= 0], rel[u], 10) for u, row in zip(users, top)])
                res[f"d{d}/w{int(wh)}/r{reg:g}/a{alpha:g}"] = (round(float(v), 5), round(sec, 2))
                print(d, wh, reg, alpha, round(float(v), 5), f"{sec:.2f}s", flush=True)
best = max(res, key=lambda k: res[k][0])
print("best", best, res[best])
(REPO / "benchmarks" / "results" / "visual_pref_fashion.json").write_text(json.dumps(
    {"metric": "NDCG@10 of the preference model alone, [ndcg, fit seconds]", "best": best,
     "grid": res}, indent=1))

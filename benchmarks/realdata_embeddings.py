"""Cached image embeddings of the shared real datasets (for eval_hybrid and benchmarks).

Embeds every image of a dataset once with vrec's own ``embed_paths`` (same backbone,
same preprocessing as the embed stage) and keeps the result in the ignored
``benchmarks/.cache/embeddings/<dataset>-<backbone>.parquet`` (item_id, embedding).

    .venv/bin/python benchmarks/realdata_embeddings.py --dataset fashion
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
CACHE = REPO / "benchmarks" / ".cache" / "embeddings"
FOLDERS = {"movielens": DATASETS / "movielens-small" / "posters",
           "fashion": DATASETS / "fashion-small" / "images"}


def dataset_embeddings(dataset: str, backbone: str = "efficientnet_lite0",
                       batch_size: int = 32) -> pd.DataFrame:
    """(item_id, embedding) for every readable image of ``dataset``, cached on disk."""
    import torch

    from vrec.images.backbones import load_backbone
    from vrec.images.embed import embed_paths

    out = CACHE / f"{dataset}-{backbone}.parquet"
    if out.is_file():
        return pd.read_parquet(out)
    folder = FOLDERS[dataset]
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found: needs ../shared/datasets")
    paths = sorted(folder.glob("*.jpg"))
    torch.set_num_threads(os.cpu_count() or 1)
    bb = load_backbone(backbone)
    rows, t = [], time.perf_counter()
    for s in range(0, len(paths), 512):
        chunk = paths[s:s + 512]
        res = embed_paths([str(p) for p in chunk], bb, batch_size)
        for p, v in zip(chunk, res["embedding"]):
            if v is not None:
                rows.append((p.stem, np.asarray(v, dtype=np.float32)))
        done = s + len(chunk)
        print(f"[embeddings] {dataset}: {done}/{len(paths)} images, "
              f"{done / (time.perf_counter() - t):.1f} img/s", flush=True)
    df = pd.DataFrame({"item_id": [r[0] for r in rows], "embedding": [r[1] for r in rows]})
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out)
    return df


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", choices=sorted(FOLDERS), required=True)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    a = ap.parse_args()
    print(len(dataset_embeddings(a.dataset, a.backbone)), "embedded")

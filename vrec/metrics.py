"""Ranking metrics on plain Python lists (binary relevance)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def ndcg_at_k(recommended: Sequence, relevant: Iterable, k: int) -> float:
    """NDCG@k with binary gains: DCG = sum of 1/log2(rank + 1) over hits in the first k,
    divided by the DCG of an ideal list (min(|relevant|, k) hits on top); 0 without
    relevant items."""
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(list(recommended)[:k]) if r in rel)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / idcg


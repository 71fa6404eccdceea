"""Ranking metrics on plain Python lists (binary relevance).

Definitions follow Spark MLlib's ``RankingMetrics`` (checked by a parity test against
``RankingEvaluator``): precision@k divides by k even when a list is shorter; MAP over the
whole list divides by |relevant|; MAP@k divides by min(|relevant|, k).
"""

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


def precision_at_k(recommended: Sequence, relevant: Iterable, k: int) -> float:
    """Hits in the first k divided by k."""
    rel = set(relevant)
    return sum(1 for r in list(recommended)[:k] if r in rel) / k if rel else 0.0


def recall_at_k(recommended: Sequence, relevant: Iterable, k: int) -> float:
    """Hits in the first k divided by |relevant|."""
    rel = set(relevant)
    return sum(1 for r in list(recommended)[:k] if r in rel) / len(rel) if rel else 0.0


def average_precision(recommended: Sequence, relevant: Iterable, k: int | None = None) -> float:
    """Sum of precision@i at each hit i; over the whole list divided by |relevant|, or
    over the first k divided by min(|relevant|, k)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    recs = list(recommended) if k is None else list(recommended)[:k]
    hits, total = 0, 0.0
    for i, r in enumerate(recs):
        if r in rel:
            hits += 1
            total += hits / (i + 1)
    return total / (len(rel) if k is None else min(len(rel), k))

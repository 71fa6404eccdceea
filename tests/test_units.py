"""Pure-function tests: top-K and weighting math (no Spark); the ranker is in test_hybrid."""

import numpy as np
import pytest

from vrec import columns as C
from vrec.core.cf import build_matrix
from vrec.core.topk import topk_blocked


@pytest.mark.parametrize("block", [1, 3, 1000])
def test_topk_equals_brute_force(block):
    rng = np.random.default_rng(0)
    q, it = rng.normal(size=(17, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    exclude = [rng.choice(40, size=rng.integers(0, 6), replace=False) for _ in range(17)]
    idx, sc = topk_blocked(q, it, 5, exclude=exclude, block_size=block)
    full = q @ it.T
    for r in range(17):
        s = full[r].copy()
        s[exclude[r]] = -np.inf
        want = np.argsort(-s, kind="stable")[:5]
        assert list(idx[r]) == list(want)
        assert np.allclose(sc[r], s[want])
        assert not set(idx[r]) & set(exclude[r])


def test_topk_pads_when_too_few_items():
    q, it = np.ones((2, 2), np.float32), np.eye(2, dtype=np.float32)
    idx, sc = topk_blocked(q, it, 4, exclude=[np.array([0]), None])
    assert list(idx[0]) == [1, -1, -1, -1] and np.isneginf(sc[0, 1:]).all()
    assert sorted(idx[1][:2]) == [0, 1] and idx[1][2] == -1


def test_confidence_matrix_hand_example():
    import pandas as pd
    inter = pd.DataFrame({C.USER_ID: ["a", "a", "b", "c"], C.ITEM_ID: ["x", "y", "x", "z"],
                          "weight": [1.0, 3.0, 0.5, 0.0]})
    users, items, m = build_matrix(inter, alpha=2.0)
    assert list(users) == ["a", "b"] and list(items) == ["x", "y"]  # weight 0 is not trained on
    assert m.toarray().tolist() == [[3.0, 7.0], [2.0, 0.0]]  # 1 + 2 * weight


def test_confidence_matrix_same_for_sorted_and_shuffled_pairs():
    """Pairs sorted by (user, item) take the no-sort CSR path; any order gives the same matrix."""
    import pandas as pd
    rng = np.random.default_rng(0)
    df = pd.DataFrame({C.USER_ID: [f"u{x:03d}" for x in rng.integers(0, 50, 500)],
                       C.ITEM_ID: [f"i{x:03d}" for x in rng.integers(0, 80, 500)],
                       "weight": rng.random(500)})
    df = df.groupby([C.USER_ID, C.ITEM_ID], as_index=False)["weight"].sum()
    a, b = build_matrix(df, 2.0), build_matrix(df.sample(frac=1, random_state=1), 2.0)
    assert list(a[0]) == list(b[0]) and list(a[1]) == list(b[1])
    assert abs(a[2] - b[2]).max() == 0 and a[2].nnz == len(df)
    r = list(a[0]).index(df[C.USER_ID].iloc[7])
    c = list(a[1]).index(df[C.ITEM_ID].iloc[7])
    assert a[2][r, c] == pytest.approx(1 + 2.0 * df["weight"].iloc[7], rel=1e-6)


def test_a_frames_codes_are_found_once_for_every_alpha_while_fits_share(monkeypatch):
    """Within sharing_plain_fits (the CF tuning), build_matrix finds one pairs frame's id
    codes once and builds every alpha's matrix from them: the very matrices it builds
    outside, sorted rows (no-sort path) and shuffled rows with a weight-0 pair alike.
    Another frame, even an equal copy, is coded again; nothing is held outside."""
    import pandas as pd

    import vrec.core.cf as core_cf
    from vrec.core.cf import sharing_plain_fits

    rng = np.random.default_rng(3)
    df = pd.DataFrame({C.USER_ID: [f"u{x:03d}" for x in rng.integers(0, 40, 400)],
                       C.ITEM_ID: [f"i{x:03d}" for x in rng.integers(0, 60, 400)],
                       "weight": rng.random(400)})
    df = df.groupby([C.USER_ID, C.ITEM_ID], as_index=False)["weight"].sum()
    df.loc[5, "weight"] = 0.0
    frames = {"sorted": df[df["weight"] > 0].reset_index(drop=True),
              "shuffled": df.sample(frac=1, random_state=2)}
    alphas = (1.0, 2.0, 5.0)
    apart = {(k, a): build_matrix(f, a) for k, f in frames.items() for a in alphas}
    calls, real = [], core_cf._sorted_codes
    monkeypatch.setattr(core_cf, "_sorted_codes", lambda col: calls.append(col.name) or real(col))
    with sharing_plain_fits():
        for k, f in frames.items():
            calls.clear()
            for a in alphas:
                users, items, mat = build_matrix(f, a)
                want = apart[(k, a)]
                assert list(users) == list(want[0]) and list(items) == list(want[1])
                assert (mat.indptr == want[2].indptr).all() and (mat.indices == want[2].indices).all()
                assert (mat.data == want[2].data).all() and mat.nnz == len(df) - 1
            assert calls == [C.USER_ID, C.ITEM_ID]  # once for the three alphas
        calls.clear()
        build_matrix(frames["sorted"].copy(), 2.0)
        assert calls == [C.USER_ID, C.ITEM_ID]
    calls.clear()
    build_matrix(frames["sorted"], 2.0)
    build_matrix(frames["sorted"], 2.0)
    assert calls == [C.USER_ID, C.ITEM_ID] * 2


def test_matrix_for_more_than_32767_items_trains():
    """Regression: with > 32,767 items pandas' int32 codes are read-only views, which
    implicit's solver rejects ("buffer source array is read-only")."""
    import pandas as pd

    from vrec.config import CFSettings
    from vrec.core.cf import fit_implicit
    n = 40_000
    df = pd.DataFrame({C.USER_ID: [f"u{i % 300:03d}" for i in range(n)],
                       C.ITEM_ID: [f"i{i:05d}" for i in range(n)], "weight": 1.0})
    users, items, mat = build_matrix(df.sort_values([C.USER_ID, C.ITEM_ID]), 2.0)
    assert mat.shape == (300, n) and mat.indices.flags.writeable
    uf, itf, _ = fit_implicit(mat, CFSettings(factors=4, iterations=1, gpu="off"))
    assert itf.shape == (n, 4) and np.isfinite(itf).all()


def test_ranking_metrics_match_spark_ranking_evaluator(spark):
    """Parity with MLlib's RankingEvaluator on the same lists (within 1e-9)."""
    from pyspark.ml.evaluation import RankingEvaluator

    from vrec.core import metrics as M

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(200):
        pred = [float(x) for x in rng.choice(60, size=rng.integers(1, 15), replace=False)]
        label = [float(x) for x in rng.choice(60, size=rng.integers(1, 12), replace=False)]
        rows.append((pred, label))
    df = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    for k in (1, 5, 10):
        ours = {
            "precisionAtK": np.mean([M.precision_at_k(p, lab, k) for p, lab in rows]),
            "recallAtK": np.mean([M.recall_at_k(p, lab, k) for p, lab in rows]),
            "ndcgAtK": np.mean([M.ndcg_at_k(p, lab, k) for p, lab in rows]),
            "meanAveragePrecisionAtK": np.mean([M.average_precision(p, lab, k) for p, lab in rows]),
        }
        for name, value in ours.items():
            theirs = RankingEvaluator(metricName=name, k=k).evaluate(df)
            assert abs(value - theirs) < 1e-9, (name, k, value, theirs)
    theirs = RankingEvaluator(metricName="meanAveragePrecision").evaluate(df)
    assert abs(np.mean([M.average_precision(p, lab) for p, lab in rows]) - theirs) < 1e-9


def test_index_of_finds_each_id_by_its_text_and_marks_the_rest():
    """Item lookups by id (the item stats of 8.8M pairs at 10M): positions by the id's
    text, -1 for ids not in the catalog, the last position of a repeated id."""
    from vrec.core.itemspace import index_of

    assert index_of(np.array(["b", "x", "a"]), np.array(["a", "b", "c"])).tolist() == [1, -1, 0]
    assert index_of(np.array([3, 1], dtype=object), np.array(["1", "2", "3"])).tolist() == [2, 0]
    assert index_of(["1", "2"], np.array(["1", "2", "1"])).tolist() == [2, 1]
    assert index_of(np.array([], dtype=object), np.array(["a"])).tolist() == []


def test_auc_counts_every_positive_negative_pair_ties_half():
    """The cold-start map's AUC equals the pairwise definition (a positive above a
    negative counts 1, a tie 1/2), exactly, with and without ties; no pair is NaN."""
    from vrec.core.coldstart import auc

    rng = np.random.default_rng(4)
    for t in range(200):
        pos = rng.integers(0, 12, rng.integers(1, 30)).astype(float) if t % 2 else \
            rng.normal(size=rng.integers(1, 30))
        neg = rng.integers(0, 12, rng.integers(1, 400)).astype(float) if t % 2 else \
            rng.normal(size=rng.integers(1, 400))
        twice = int((2 * (pos[:, None] > neg[None, :]) + (pos[:, None] == neg[None, :])).sum())
        assert auc(pos, neg) == (twice / 2) / (len(pos) * len(neg))
    assert np.isnan(auc(np.array([]), np.array([1.0])))

"""retrieval_metrics: hand-computed cases (ties, self-matches, lone queries) and a brute force."""

import numpy as np
import pytest

from pairviz_jax.metrics import retrieval_metrics

# Exact cosines (0, +-1) so the ties are exact: items 0, 1 and 3 share a direction.
TOY_X = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [-1, 0], [0, 1]], np.float32)
TOY_Y = np.array([0, 1, 0, 0, 1, 2])  # label 2 is a lone query, left out


def test_leave_one_out_hand_case():
    # Rankings (ties by lower index), x = wrong label, v = right label, self excluded:
    # q0: 1x 3v 2v 5x 4x  R=2  first hit 2  AP@R = (1/2)/2
    # q1: 0x 3x 2x 5x 4v  R=1  first hit 5  AP@R = 0
    # q2: 5x 0v 1x 3v 4x  R=2  first hit 2  AP@R = (1/2)/2
    # q3: 0v 1x 2v 5x 4x  R=2  first hit 1  AP@R = 1/2
    # q4: 2x 5x 0x 1v 3x  R=1  first hit 4  AP@R = 0
    m = retrieval_metrics(TOY_X, TOY_Y, ks=(1, 2, 4, 5, 100))
    assert m["num_queries"] == 5
    assert m["recall@1"] == pytest.approx(1 / 5)
    assert m["recall@2"] == pytest.approx(3 / 5)
    assert m["recall@4"] == pytest.approx(4 / 5)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["recall@100"] == pytest.approx(1.0)  # clipped to the 5 candidates
    assert m["map@r"] == pytest.approx((0.25 + 0 + 0.25 + 0.5 + 0) / 5)
    assert m["r_precision"] == pytest.approx((0.5 + 0 + 0.5 + 0.5 + 0) / 5)


def test_self_match_never_counts():
    # Every item is its own nearest neighbour; with other labels nearer than the positives.
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    y = np.array([0, 1, 0, 1])
    m = retrieval_metrics(x, y, ks=(1,))
    assert m["recall@1"] == 0.0
    assert m["map@r"] == 0.0


def test_separate_gallery_hand_case():
    q = np.array([[1, 0]], np.float32)
    g = np.array([[2, 0], [3, 4], [0, 1], [-1, 0]], np.float32)  # cos 1, .6, 0, -1
    gl = np.array([0, 1, 0, 0])
    m = retrieval_metrics(q, np.array([0]), g, gl, ks=(1, 2))
    # Ranking v x v v, R = 3: AP@R = (1 + 2/3) / 3, R-precision 2/3.
    assert m["recall@1"] == 1.0
    assert m["map@r"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["r_precision"] == pytest.approx(2 / 3)
    # The gallery copy of the query is a legitimate match when the gallery is separate.
    m2 = retrieval_metrics(q, np.array([5]), q, np.array([5]))
    assert m2["recall@1"] == 1.0 and m2["map@r"] == 1.0


def _brute_force(q, ql, g, gl, same, ks):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ gn.T.astype(np.float64)
    hits = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(len(q)):
        cand = [j for j in range(len(g)) if not (same and j == i)]
        order = sorted(cand, key=lambda j: (-sims[i, j], j))
        rel = np.array([gl[j] == ql[i] for j in order])
        r = int(rel.sum())
        if r == 0:
            continue
        for k in ks:
            hits[k].append(rel[:k].any())
        top = rel[:r]
        prec = np.cumsum(top) / np.arange(1, r + 1)
        aps.append(np.sum(prec * top) / r)
        rps.append(top.mean())
    out = {f"recall@{k}": np.mean(v) for k, v in hits.items()}
    out["map@r"] = np.mean(aps)
    out["r_precision"] = np.mean(rps)
    out["num_queries"] = len(aps)
    return out


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("same", [True, False])
def test_matches_brute_force_and_blocks_do_not_matter(same, ties):
    rng = np.random.default_rng(0)
    if ties:  # +-one-hot vectors: every cosine is exactly 0 or +-1, so most are tied.
        q = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=37)]
        q *= rng.choice([-1.0, 1.0], size=(37, 1)).astype(np.float32)
    else:
        q = rng.normal(size=(37, 5)).astype(np.float32)
    ql = rng.integers(0, 6, size=37)
    g, gl = (None, None) if same else (2 * q[::-1][:29], ql[:29])
    want = _brute_force(q, ql, q if same else g, ql if same else gl, same, (1, 2, 5))
    for block in (1, 8, 1024):
        got = retrieval_metrics(q, ql, g, gl, ks=(1, 2, 5), block_size=block)
        assert got["num_queries"] == want["num_queries"]
        for key in ("recall@1", "recall@2", "recall@5", "map@r", "r_precision"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (key, block)


def test_perfect_and_errors():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    y = np.repeat(np.arange(3), 4)
    m = retrieval_metrics(x, y)
    assert m["recall@1"] == 1.0 and m["map@r"] == 1.0
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(x[::4], y[::4])
    with pytest.raises(ValueError, match="both"):
        retrieval_metrics(x, y, x)

"""Faithfulness measures: hand-checked toy cases, then the whole evaluation on a tiny ViT."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax import evaluate as ev
from pairviz_jax.models import ViT, decode_variant


def _pixels_as_embedding(x):
    """A linear toy 'model': the embedding of a 2 x 2 one-channel image is its 4 pixels."""
    return np.asarray(x).reshape(len(x), -1)


A = np.asarray([4.0, 3.0, 2.0, 1.0], np.float32).reshape(1, 2, 2, 1)
U_B = np.asarray([[1.0, 0.0, 0.0, 0.0]], np.float32)
BEST_FIRST = np.asarray([[[4.0, 3.0], [2.0, 1.0]]])  # ranks patch 0, 1, 2, 3


def test_deletion_and_insertion_curves_by_hand():
    dele = ev.score_curves(_pixels_as_embedding, A, U_B, BEST_FIRST, (2, 2), steps=4)
    np.testing.assert_allclose(dele[0], [4 / math.sqrt(30), 0, 0, 0, 0], atol=1e-6)
    ins = ev.score_curves(
        _pixels_as_embedding, A, U_B, BEST_FIRST, (2, 2), steps=4, mode="insertion"
    )
    want = [0, 1, 4 / 5, 4 / math.sqrt(29), 4 / math.sqrt(30)]
    np.testing.assert_allclose(ins[0], want, atol=1e-6)
    np.testing.assert_allclose(ev.auc(dele), [4 / math.sqrt(30) / 8], atol=1e-6)
    # The reverse ranking removes the patch that matters last: a worse (higher) deletion AUC.
    worst = ev.score_curves(_pixels_as_embedding, A, U_B, -BEST_FIRST, (2, 2), steps=4)
    assert ev.auc(worst)[0] > ev.auc(dele)[0] + 0.2


def test_step_masks_rank_ties_by_index_and_count_by_rounding():
    order = ev.patch_order(np.asarray([[[1.0, 1.0], [3.0, 0.0]]]))
    np.testing.assert_array_equal(order, [[2, 0, 1, 3]])
    m = ev.step_masks(order, 2)
    np.testing.assert_array_equal(m[0], [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]])
    pix = ev.to_pixels(m[:, 1], (2, 2), (4, 4))
    assert pix.shape == (1, 4, 4) and pix[0, :2, :2].all() and not pix[0, :2, 2:].any()
    with pytest.raises(ValueError, match="patches"):
        ev.to_pixels(m[:, 1], (2, 2), (5, 4))


def test_auc_energy_and_pointing_by_hand():
    np.testing.assert_allclose(ev.auc(np.linspace(0, 1, 9)[None]), [0.5])
    mask = np.zeros((3, 2, 2), bool)
    mask[:, 0, 0] = True
    maps = np.stack(
        [
            [[1.0, 0.0], [0.0, 0.0]],  # all mass in the mask
            [[2.0, 2.0], [2.0, 2.0]],  # flat: the mask's share
            [[0.0, 1.0], [0.5, 0.0]],  # maximum outside
        ]
    )
    np.testing.assert_allclose(ev.energy_in_mask(maps, mask), [1.0, 0.25, 0.0], atol=1e-6)
    np.testing.assert_array_equal(ev.pointing_game(maps, mask), [True, True, False])
    other = np.zeros((3, 2, 2), bool)
    other[:, 1, 1] = True
    # min-max normalised: [1 0; 0 0] -> all on the shared mask; flat -> half each;
    # [0 1; .5 0] -> 0 on both masks after normalisation (its minimum is 0 there) -> 0.5.
    np.testing.assert_allclose(ev.shared_share(maps, mask, other), [1.0, 0.5, 0.5], atol=1e-6)
    lopsided = np.asarray([[[1.0, 0.0], [0.0, 3.0]]])
    np.testing.assert_allclose(ev.shared_share(lopsided, mask[:1], other[:1]), [0.25], atol=1e-6)


def test_blur_baseline_keeps_constant_images_and_smooths_edges():
    x = np.zeros((1, 8, 8, 1), np.float32)
    x[:, :, 4:] = 1.0
    y = ev.baseline_images(x, "blur", 2)
    assert 0.0 < y[0, 0, 3, 0] < 0.5 < y[0, 0, 4, 0] < 1.0
    np.testing.assert_allclose(ev.gaussian_blur(np.ones((1, 5, 5, 3)), 1.5), 1.0, atol=1e-6)
    np.testing.assert_array_equal(ev.baseline_images(x, "mean", 2), 0.0)
    with pytest.raises(ValueError, match="baseline"):
        ev.baseline_images(x, "noise", 2)


PAIRS = 12


@pytest.fixture(scope="module")
def tiny_result():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
    data = ev.demo_pairs(PAIRS, image_size=32, distractor=True)
    result = ev.faithfulness(
        model,
        variables,
        data["images_a"],
        data["images_b"],
        data["masks_a"],
        data["distractor_masks_a"],
        second_b=data["second_b"],
        steps=4,
        method_options={"ig": {"steps": 4}},
    )
    return model, variables, data, result


def test_faithfulness_curves_share_their_endpoints(tiny_result):
    model, variables, data, r = tiny_result
    assert set(r.metrics) == set(ev.KINDS)
    emb = np.asarray(model.apply(variables, jnp.asarray(data["images_a"]))[0])
    emb_b = np.asarray(model.apply(variables, jnp.asarray(data["images_b"]))[0])
    cos = (emb * emb_b).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(emb_b, axis=1)
    np.testing.assert_allclose(r.scores, cos, atol=1e-5)
    for kind in ev.KINDS:
        d, i = r.curves[kind]["deletion"], r.curves[kind]["insertion"]
        assert d.shape == i.shape == (PAIRS, 5)
        np.testing.assert_allclose(d[:, 0], cos, atol=1e-5)  # nothing removed yet
        np.testing.assert_allclose(i[:, -1], cos, atol=1e-5)  # everything revealed
        np.testing.assert_allclose(d[:, -1], r.curves["random"]["deletion"][:, -1], atol=1e-6)
        assert set(r.metrics[kind]) == set(ev.METRICS)
        for m in ev.METRICS:
            v = r.metrics[kind][m]
            assert v.shape == (PAIRS,) and np.isfinite(v).all()
        for m in ("energy_in_mask", "shared_share"):
            assert ((r.metrics[kind][m] >= 0) & (r.metrics[kind][m] <= 1)).all()
    table = r.table()
    assert table.count("\n") == len(ev.KINDS) + 1 and "**" in table and "share_swing" in table


def test_paired_maps_beat_random_on_deletion_and_insertion_even_untrained(tiny_result):
    # The paired map decomposes this very cosine (eq. 3-6): removing its top patches first
    # lowers the score faster, and revealing them first raises it faster, than at random.
    _, _, _, r = tiny_result
    s = r.summary()
    for kind in ("authors", "transpose", "conservative", "ig"):
        assert s[kind]["deletion_auc"][0] < s["random"]["deletion_auc"][0] - 0.1, kind
    for kind in ("transpose", "conservative", "ig"):  # authors: +0.10 here, at the margin
        assert s[kind]["insertion_auc"][0] > s["random"]["insertion_auc"][0] + 0.1, kind


def test_plot_curves_writes_a_png(tiny_result, tmp_path):
    path = ev.plot_curves(tiny_result[3], str(tmp_path / "c.png"), title="tiny")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_pairs_are_same_class_with_masks():
    d = ev.demo_pairs(30, image_size=16)
    assert d["images_a"].shape == (30, 16, 16, 3) and d["masks_a"].shape == (30, 16, 16)
    assert d["masks_a"].any(axis=(1, 2)).all() and "distractor_masks_a" not in d
    d = ev.demo_pairs(30, image_size=32, distractor=True)
    shared, other = d["masks_a"], d["distractor_masks_a"]
    assert shared.any(axis=(1, 2)).all() and other.any(axis=(1, 2)).all()
    assert not (shared & other).any()
    with pytest.raises(ValueError, match="room"):
        ev.demo_pairs(10_000, image_size=16)


def test_faithfulness_rejects_masks_of_the_wrong_shape(tiny_result):
    model, variables, data, _ = tiny_result
    a, b, m = data["images_a"], data["images_b"], data["masks_a"]
    with pytest.raises(ValueError, match="masks_a must be"):
        ev.faithfulness(model, variables, a, b, m[:, :8])
    with pytest.raises(ValueError, match="needs masks_a"):
        ev.faithfulness(model, variables, a, b, None, m)


def test_paired_differences_are_per_pair_with_the_better_direction_positive(tiny_result):
    r = tiny_result[3]
    d = r.metrics["transpose"]["deletion_auc"] - r.metrics["rollout"]["deletion_auc"]
    mean, sem = r.difference("transpose", "rollout", "deletion_auc")
    np.testing.assert_allclose(mean, d.mean(), rtol=1e-12)
    np.testing.assert_allclose(sem, d.std(ddof=1) / math.sqrt(len(d)), rtol=1e-12)
    text = r.comparisons(["transpose", "authors"])
    assert text.count("\n") == 3 and "transpose better than rollout" in text
    # deletion: lower is better, so "better by" is rollout minus transpose.
    assert f"deletion_auc {-mean:+.4f}" in text.splitlines()[0]

"""The swap test: triples with objects where their masks say, its measures on known maps, the
occlusion reference against a hand loop, resume, and ``visualize.py evaluate --swap``."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import visualize
from pairviz_jax import explain, runs
from pairviz_jax.data import photos, preprocess, swaps
from pairviz_jax.evaluate import occlusion, swap
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.runs import LoadedModel
from tests import inputs
from tests.test_vit_families import _random_variables


@pytest.fixture(scope="module")
def all_photos():
    missing = sorted(set(photos.names()) - set(photos.available()))
    if missing:
        inputs.missing(f"photos {missing} need scikit-image / scikit-learn (the photos extra)")


@pytest.fixture(scope="module")
def loaded32():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    # Parameters drawn by numpy from the traced shapes (an init compiles a program of its own).
    variables = _random_variables(model, jnp.zeros((1, 32, 32, 3)))
    mean, std = preprocess.NORMALIZATION["demo"]
    return LoadedModel(model, variables, (32, 32), mean, std, "tiny")


# --------------------------------------------------------------------------- the triples


@pytest.mark.parametrize("split", ["a", "b"])
def test_triples_hold_the_objects_where_their_masks_say(all_photos, split):
    size = 96
    for i in range(4):
        t = swaps.make_triple((0, i), size=size, split=split)
        again = swaps.make_triple((0, i), size=size, split=split)
        np.testing.assert_array_equal(t.a, again.a)
        np.testing.assert_array_equal(t.partners, again.partners)
        used = [n for n in t.ids if n != swaps.GREY_NAME]
        assert len(set(used)) == len(used) and set(used) <= set(photos.names(split))
        x_mask, y_mask = t.a_masks
        assert not (x_mask & y_mask).any()
        for k in range(2):
            assert 1 / 8 <= t.a_masks[k].mean() <= 1 / 4 and 1 / 6 <= t.b_masks[k].mean() <= 1 / 3
        # Outside the masks: the backgrounds, untouched.
        back_a = photos.square(photos.load(t.background_a), size)
        outside = ~(x_mask | y_mask)
        np.testing.assert_array_equal(t.a[outside], back_a[outside])
        if t.background_b == swaps.GREY_NAME:
            back_b = np.broadcast_to(np.asarray(photos.GREY, np.uint8), (size, size, 3))
        else:
            back_b = photos.square(photos.load(t.background_b), size)
        # Inside: the same cut of each photo, resized to its place in A and in its partner.
        for k, name in enumerate(t.objects):
            top, left, h, w = t.cuts[k]
            crop = photos.load(name)[top : top + h, left : left + w]
            for image, mask, place in (
                (t.a, t.a_masks[k], t.places_a[k]),
                (t.partners[k], t.b_masks[k], t.places_b[k]),
            ):
                pt, pl, ph, pw = place
                assert mask.sum() == ph * pw and mask[pt : pt + ph, pl : pl + pw].all()
                np.testing.assert_array_equal(
                    image[pt : pt + ph, pl : pl + pw], photos._resize(crop, (ph, pw))
                )
            np.testing.assert_array_equal(t.partners[k][~t.b_masks[k]], back_b[~t.b_masks[k]])
    other = swaps.make_triple((1, 0), size=size, split=split)
    assert not np.array_equal(other.a, swaps.make_triple((0, 0), size=size, split=split).a)


def test_triples_use_several_backgrounds_scales_and_places(all_photos):
    ts = swaps.make_triples(12, size=64, split="a")
    assert len({t.background_a for t in ts}) >= 3
    assert {swaps.GREY_NAME} < {t.background_b for t in ts}
    assert len({t.places_b[0] for t in ts}) == 12
    # The object's scale in its partner is (almost always) not its scale in A.
    assert sum(t.places_a[k][2:] != t.places_b[k][2:] for t in ts for k in range(2)) >= 20


# --------------------------------------------------------------------------- the measures


def _masks(t=5, size=24, seed=0):
    """Two disjoint random boxes per triple, bool [t, 2, size, size]."""
    rng = np.random.default_rng(seed)
    m = np.zeros((t, 2, size, size), bool)
    for i in range(t):
        top = rng.integers(0, size // 2 - 6)
        m[i, 0, top : top + 6, 1:9] = True
        m[i, 1, size // 2 + 2 : size // 2 + 9, 12 : 12 + rng.integers(4, 10)] = True
    return m


def test_oracle_maps_swap_and_partner_independent_maps_cannot():
    masks = _masks()
    oracle = masks.astype(np.float32)  # against B1 the mask of X, against B2 that of Y
    got = swap.swap_measures(oracle, masks)
    np.testing.assert_array_equal(got["swap"], 1.0)
    np.testing.assert_array_equal(got["hits"], 1.0)
    np.testing.assert_allclose(got["right_minus_wrong"], 1.0)
    # The oracle on a 6 x 6 token grid (each token's share of the mask), upsampled.
    tokens = oracle.reshape(5, 2, 6, 4, 6, 4).mean((3, 5))
    np.testing.assert_array_equal(swap.swap_measures(tokens, masks)["swap"], 1.0)
    # Swapped: the wrong object for each partner.
    wrong = swap.swap_measures(oracle[:, ::-1], masks)
    np.testing.assert_array_equal(wrong["swap"], 0.0)
    np.testing.assert_allclose(wrong["right_minus_wrong"], -1.0)
    # A map that ignores the partner: one peak, on at most one object.
    rng = np.random.default_rng(1)
    for same in (oracle[:, :1], oracle[:, 1:], rng.normal(size=(5, 1, 6, 6))):
        both = np.repeat(same, 2, axis=1)
        m = swap.swap_measures(both, masks)
        assert m["swap"].mean() <= 0.5 and m["hits"].max() <= 0.5
        np.testing.assert_array_equal(m["swap"], 0.0)
        np.testing.assert_allclose(m["right_minus_wrong"], 0.0, atol=1e-12)
        np.testing.assert_allclose(m["correlation"], 1.0)


def test_model_swaps_by_hand():
    drops = np.zeros((4, 2, 2))
    drops[0] = [[0.3, 0.1], [0.0, 0.2]]  # X matters for B1, Y for B2: swaps
    drops[1] = [[0.3, 0.1], [0.3, 0.2]]  # Y matters more for B1: no
    drops[2] = [[0.1, 0.3], [0.2, 0.0]]  # the reverse: no
    drops[3] = [[0.1, 0.1], [0.0, 0.2]]  # a tie on X: no
    np.testing.assert_array_equal(swap.model_swaps(drops), [True, False, False, False])


# --------------------------------------------------------------------------- occlusion


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_occlusion_maps_equal_a_hand_loop(loaded32):
    model, variables = loaded32.model, loaded32.variables
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3)))
    units = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 3, 8)))
    # Windows of 3 x 3 tokens every 2 on the 8 x 8 grid, the last flush with the edge
    # (starts 0, 2, 4, 5: 16 windows); chunk 3 pads the 17 forwards to 18.
    got = occlusion.occlusion_maps(model, variables, x, units, window=3, stride=2, chunk=3)
    apply = jax.jit(lambda im: model.apply(variables, im)[0])
    embed = lambda im: _unit(apply(jnp.asarray(im[None]))[0])  # noqa: E731
    starts = (0, 2, 4, 5)
    want_maps = np.zeros((2, 3, 8, 8))
    for b in range(2):
        u = _unit(units[b])
        score = u @ embed(x[b])
        np.testing.assert_allclose(got["score"][b], score, atol=2e-6)
        cover = np.zeros((8, 8))
        m = 0
        for i in starts:
            for j in starts:
                occluded = x[b].copy()
                occluded[4 * i : 4 * i + 12, 4 * j : 4 * j + 12] = 0.0
                drop = score - u @ embed(occluded)
                np.testing.assert_allclose(got["drops"][b, m], drop, atol=4e-6)
                want_maps[b][:, i : i + 3, j : j + 3] += drop[:, None, None]
                cover[i : i + 3, j : j + 3] += 1
                m += 1
        want_maps[b] /= cover
    np.testing.assert_allclose(got["maps"], want_maps, atol=4e-6)
    assert got["windows"].shape == (16, 8, 8) and got["drops"].shape == (2, 16, 3)
    # Per-image masks: image b's own objects.
    masks = np.zeros((2, 2, 32, 32), bool)
    masks[0, 0, :9, :13] = masks[0, 1, 17:, 5:] = masks[1, 0, 3:17, 3:19] = masks[1, 1, 24:] = True
    cos = occlusion.occluded_cosines(model, variables, x, units, masks, chunk=2)
    for b in range(2):
        for o in range(2):
            want = _unit(units[b]) @ embed(np.where(masks[b, o][..., None], 0.0, x[b]))
            np.testing.assert_allclose(cos[b, o], want, atol=2e-6)
    with pytest.raises(ValueError, match="masks must be"):
        occlusion.occluded_cosines(model, variables, x, units, masks[:, :, :8])


# --------------------------------------------------------------------------- the run


def _synthetic_triples(indices, *, split, image_size, seed, normalization):
    """A stand-in for data.swaps: two bright squares in noise; B_k holds square k elsewhere."""
    s = image_size
    out = {k: [] for k in ("a", "partners", "a_masks", "b_masks")}
    for i in indices:
        rng = np.random.default_rng([seed, ord(split), int(i)])
        a = rng.normal(0, 0.3, (s, s, 3)).astype(np.float32)
        partners = np.zeros((2, s, s, 3), np.float32)
        am = np.zeros((2, s, s), bool)
        bm = np.zeros((2, s, s), bool)
        for k, (top, left) in enumerate([(0, 0), (s // 2, s // 2)]):
            colour = rng.normal(size=3).astype(np.float32) + (2.0 if k == 0 else -2.0)
            am[k, top : top + s // 2, left : left + s // 2] = True
            bm[k, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = True
            a[am[k]] = colour
            partners[k][bm[k]] = colour
        out["a"].append(a)
        out["partners"].append(partners)
        out["a_masks"].append(am)
        out["b_masks"].append(bm)
    got = {k: np.stack(v) for k, v in out.items()}
    got["ids"] = [("x", "y", "noise", "black")] * len(got["a"])
    return got


# The kinds of ``evaluate --swap --method chefer`` (compiled once for both tests: batches of 3).
KINDS = ("occlusion", "chefer", "rollout", "gamma", "random")


def test_evaluate_swap_in_chunks_resumes_and_matches_its_parts(loaded32, tmp_path):
    kw = dict(kinds=KINDS, chunk=3, batch_size=3, log=None, make_triples=_synthetic_triples)
    res = swap.evaluate_swap(loaded32, 6, cache_dir=str(tmp_path), **kw)
    assert len(res) == 6 and len(list(tmp_path.iterdir())) == 2
    assert list(res.metrics) == list(KINDS) and res.maps["chefer"].shape == (6, 2, 8, 8)
    # The output-agnostic baseline cannot swap; its two maps are one.
    np.testing.assert_array_equal(res.metrics["rollout"]["swap"], 0.0)
    np.testing.assert_allclose(res.metrics["rollout"]["correlation"], 1.0, atol=1e-9)
    # The model-swaps subset and the occlusion row, against the model by hand.
    data = _synthetic_triples(range(6), split="a", image_size=32, seed=0, normalization=None)
    model, variables = loaded32.model, loaded32.variables
    emb = lambda im: _unit(explain.embed(model, variables, jnp.asarray(im)))  # noqa: E731
    ua, ub = emb(data["a"]), emb(data["partners"].reshape(12, 32, 32, 3)).reshape(6, 2, -1)
    np.testing.assert_allclose(res.scores, np.einsum("te,tke->tk", ua, ub), atol=2e-6)
    drops = np.zeros((6, 2, 2))
    for o in range(2):
        deleted = np.where(data["a_masks"][:, o][..., None], 0.0, data["a"])
        drops[:, o] = res.scores - np.einsum("te,tke->tk", emb(deleted), ub)
    np.testing.assert_allclose(res.drops, drops, atol=4e-6)
    np.testing.assert_array_equal(res.model_swaps, swap.model_swaps(drops))
    occ = occlusion.occlusion_maps(model, variables, data["a"], ub, window=2)["maps"]
    np.testing.assert_allclose(res.maps["occlusion"], occ, atol=1e-6)
    want = swap.swap_measures(occ, data["a_masks"])
    for name, v in want.items():
        np.testing.assert_allclose(res.metrics["occlusion"][name], v, atol=1e-6)
    table = res.table()
    assert f"the model's cosine swaps in {int(res.model_swaps.sum())}" in table
    assert "| occlusion (Zeiler & Fergus, ECCV 2014; the reference) |" in table

    def broken(*args, **kwargs):
        raise AssertionError("a finished chunk was computed again")

    again = swap.evaluate_swap(
        loaded32, 6, cache_dir=str(tmp_path), **{**kw, "make_triples": broken}
    )
    for kind in KINDS:
        for name, v in res.metrics[kind].items():
            np.testing.assert_array_equal(again.metrics[kind][name], v)
    np.testing.assert_array_equal(again.model_swaps, res.model_swaps)
    with pytest.raises(ValueError, match="unknown map kind 'lrp'"):
        swap.evaluate_swap(loaded32, 2, kinds=("lrp",), log=None)


def test_evaluate_swap_subcommand_prints_the_table_and_draws(all_photos, loaded32, tmp_path,
                                                             monkeypatch, capsys):  # fmt: skip
    monkeypatch.setattr(runs, "model_from_args", lambda args, prefix="": loaded32)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"")  # --weights must name a file; the loader is replaced
    png = str(tmp_path / "ev.png")
    argv = ["evaluate", "--weights", "w.npz", "--swap", "--pairs", "3", "--method", "chefer"]
    assert visualize.main([*argv, "--out", png]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "## tiny: swap test, photo half a (development)" in out
    assert "| map | swap accuracy ↑ |" in out
    assert (
        "| occlusion (Zeiler & Fergus, ECCV 2014; the reference) | " in out and "| random | " in out
    )
    assert "Paired differences against occlusion" in out
    assert "swap half a: 3/3 triples" in captured.err
    figure = str(tmp_path / "ev_swap_a.png")
    assert out.strip().endswith(figure) and os.path.getsize(figure) > 5000
    with pytest.raises(SystemExit) as info:
        visualize.main(["evaluate", "--weights", "w.npz", "--swap", "c"])
    assert info.value.code == 2
    assert "--swap: invalid choice" in capsys.readouterr().err


def test_swap_kinds_from_the_command_line():
    from pairviz_jax.evaluate.commands import swap_kinds as parse_kinds

    assert parse_kinds(None) == swap.SWAP_KINDS
    assert parse_kinds(["chefer,ig"]) == ("occlusion", "chefer", "ig", "rollout", "gamma", "random")
    assert parse_kinds(["paper"])[:3] == ("occlusion", "authors", "transpose")
    with pytest.raises(ValueError, match="--method lrp: unknown"):
        parse_kinds(["lrp"])

"""The photo benchmark, pair sensitivity and the baseline maps, against independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import visualize
from pairviz_jax import evaluate as ev
from pairviz_jax import explain
from pairviz_jax.data import photos
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.plotting import LoadedModel
from tests import inputs
from tests.test_vit_families import FAMILIES, _random_variables

# --------------------------------------------------------------------------- measures by hand


def test_share_swing_and_map_correlation_by_hand():
    m0 = np.zeros((3, 2, 2), bool)
    m0[:, 0, 0] = True
    m1 = np.zeros((3, 2, 2), bool)
    m1[:, 1, 1] = True
    on0 = np.asarray([[1.0, 0.0], [0.0, 0.0]])
    on1 = np.asarray([[0.0, 0.0], [0.0, 1.0]])
    flat = np.full((2, 2), 2.0)
    maps_0 = np.stack([on0, on0, flat])  # against partner 0
    maps_1 = np.stack([on1, on0, flat])  # against partner 1
    # Follows the partner: 1 - 0; ignores it: 0; flat: 0.5 - 0.5.
    np.testing.assert_allclose(ev.share_swing(maps_0, maps_1, m0, m1), [1.0, 0.0, 0.0], atol=1e-9)
    r = ev.map_correlation(maps_0, maps_1)
    want = np.corrcoef(on0.ravel(), on1.ravel())[0, 1]
    np.testing.assert_allclose(r, [want, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(ev.map_correlation(on0[None], flat[None]), [0.0])


def test_curves_with_known_end_points_equal_the_full_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    unit = rng.normal(size=(3, 16)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    maps = rng.normal(size=(3, 2, 2))
    embed = lambda x: np.asarray(x).reshape(len(x), -1)  # noqa: E731
    base = np.full_like(a, 0.3)
    ends = (ev.measures.embed_in_batches(embed, a, 2), ev.measures.embed_in_batches(embed, base, 2))
    for mode in ("deletion", "insertion"):
        full = ev.score_curves(embed, a, unit, maps, (2, 2), mode=mode, steps=4, baseline=base)
        fast = ev.score_curves(
            embed, a, unit, maps, (2, 2), mode=mode, steps=4, baseline=base, ends=ends
        )
        np.testing.assert_allclose(fast, full, atol=1e-6)
        # The reference: every step's image embedded, one by one.
        order = ev.patch_order(maps)
        for s in range(5):
            changed = ev.to_pixels(ev.step_masks(order, 4)[:, s], (2, 2), (4, 4))[..., None]
            x = np.where(changed, base, a) if mode == "deletion" else np.where(changed, a, base)
            e = embed(x) / np.linalg.norm(embed(x), axis=1, keepdims=True)
            np.testing.assert_allclose(full[:, s], (e * unit).sum(1), atol=1e-6)


# --------------------------------------------------------------------------- baseline maps


def _tiny(family=None):
    kw = dict(FAMILIES[family][0]) if family else dict(proj_dim=6)
    model = ViT(**decode_variant("Tiny/4"), **kw)
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 16, 16, 3))
    return model, _random_variables(model, x), x


def _numpy_rollout(attention, depth):
    """The rollout of every head's attention [B, L, H, N', N'], in float64 by hand."""
    attention = np.asarray(attention, np.float64)
    r = None
    for i in range(depth):
        a = attention[:, i].mean(1)
        a = a + np.eye(a.shape[-1])
        a = a / a.sum(-1, keepdims=True)
        r = a if r is None else a @ r
    return r  # [B, N', N']


@pytest.mark.parametrize("family", [None, "dinov2_reg"])
def test_baseline_kinds_against_independent_references(family):
    model, variables, x = _tiny(family)
    partner = explain.embed(model, variables, x[::-1] + 0.5)
    maps = ev.kind_maps(model, variables, x, partner[:, None], (*ev.FEATURE_KINDS, "random"))
    assert all(m.shape == (3, 1, 4, 4) for m in maps.values())
    # The references from one compiled forward (every head's attention, the tokens and the
    # embedding's split by decompose_embedding), not op by op.
    f = explain.features(model, variables, x)
    r = _numpy_rollout(f.attention, model.depth)
    p = model.num_prefix_tokens
    mean_rows = r[:, p:, p:].mean(1).reshape(3, 4, 4)
    cls_row = (r[:, 0, p:] if p else r[:, p:, p:].mean(1)).reshape(3, 4, 4)
    np.testing.assert_allclose(maps["rollout_mean"][:, 0], mean_rows, atol=1e-5)
    np.testing.assert_allclose(maps["rollout"][:, 0], cls_row, atol=1e-5)
    np.testing.assert_allclose(maps["rollout"][:, 0], explain.rollout_map(f), atol=1e-6)
    # gamma: eq. 4 at the split level, no rollout.
    emb = f.embedding
    u = np.asarray(partner, np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    norm = np.linalg.norm(np.asarray(emb, np.float64), axis=1)
    if family is None:  # gap: alpha_j . u / (N |beta|), eq. 4 by hand
        alpha = np.asarray(f.tokens, np.float64)
        gamma = np.einsum("bne,be->bn", alpha, u) / (16 * norm[:, None])
    else:
        parts = sum(np.asarray(v, np.float64) for v in f.parts.values())
        gamma = np.einsum("bne,be->bn", parts, u)[:, p:] / norm[:, None]
    np.testing.assert_allclose(maps["gamma"][:, 0], gamma.reshape(3, 4, 4), atol=1e-5)
    for conv in ("authors", "transpose"):
        ref = explain.paired_maps(model, variables, x, x[::-1] + 0.5, convention=conv)
        np.testing.assert_allclose(maps[conv][:, 0], ref["map_a"], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown map kind 'lrp'"):
        ev.kind_maps(model, variables, x, partner[:, None], ("lrp",))


def test_random_maps_depend_only_on_the_pair_index():
    a = ev.kinds.random_maps(range(5), 2, (3, 3), seed=4)
    b = ev.kinds.random_maps(range(3, 7), 2, (3, 3), seed=4)
    np.testing.assert_array_equal(a[3:], b[:2])
    assert not np.allclose(a[0, 0], a[0, 1]) and not np.allclose(a[0], a[1])


# --------------------------------------------------------------------------- the photo benchmark


def _synthetic_pairs(indices, *, split, image_size, seed, distractor, normalization):
    """A stand-in for data.photos: two bright squares in noise; each partner is one square."""
    s = image_size
    out = {"images": [], "partners": [], "masks": []}
    for i in indices:
        rng = np.random.default_rng([seed, ord(split), int(i)])
        img = rng.normal(0, 0.3, (s, s, 3)).astype(np.float32)
        masks, partners = [], []
        for k, (top, left) in enumerate([(0, 0), (s // 2, s // 2)][: 1 + distractor]):
            colour = rng.normal(size=3).astype(np.float32) + (2.0 if k == 0 else -2.0)
            m = np.zeros((s, s), bool)
            m[top : top + s // 2, left : left + s // 2] = True
            img[m] = colour
            partner = np.zeros((s, s, 3), np.float32)
            partner[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = colour
            masks.append(m)
            partners.append(partner)
        out["images"].append(img)
        out["partners"].append(np.stack(partners))
        out["masks"].append(np.stack(masks))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def loaded32():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    x = jnp.zeros((1, 32, 32, 3))
    return LoadedModel(model, _random_variables(model, x), (32, 32), None, None, "tiny")


KINDS = ("authors", "chefer", "rollout", "random")

# Chunks change only the batch shapes XLA compiles for, hence the order of float32 sums, not
# the math. Every metric is an O(1) cosine, share, correlation or AUC; the longest sums on
# its path have n = 64 terms (the 8 x 8 patches of a 32-px image at patch 4: attention, the
# mean pool, a map's total), and reordering a float32 sum of n terms moves it by at most
# about n * eps of the sum of magnitudes (Higham, Accuracy and Stability, ch. 4). Four such
# sums are chained in the one-block model (attention, MLP, pool, cosine). A chunk holding
# the wrong pair or partner moves the metrics by about 0.1.
CHUNK_TOL = 4 * 64 * float(np.finfo(np.float32).eps)  # 3.1e-5


def test_evaluate_photos_in_chunks_equals_one_measure_and_resumes(loaded32, tmp_path):
    kw = dict(distractor=True, kinds=KINDS, steps=2, curve_pairs=4, chunk=3, log=None)
    res = ev.evaluate_photos(
        loaded32, 5, cache_dir=str(tmp_path), make_pairs=_synthetic_pairs, **kw
    )
    assert set(res) == {"a", "b"} and len(list(tmp_path.iterdir())) == 4  # 2 chunks per half
    for half, r in res.items():
        data = _synthetic_pairs(
            range(5), split=half, image_size=32, seed=0, distractor=True, normalization=None
        )
        one = ev.measure(
            loaded32.model,
            loaded32.variables,
            data["images"],
            data["partners"],
            data["masks"],
            kinds=KINDS,
            steps=2,
            curve_pairs=4,
        )
        for kind in KINDS:
            for name, v in one.metrics[kind].items():
                np.testing.assert_allclose(
                    r.metrics[kind][name], v, rtol=0, atol=CHUNK_TOL, err_msg=name
                )
        assert len(r.metrics["chefer"]["deletion_auc"]) == 4
        assert len(r.metrics["chefer"]["pointing_game"]) == 5
        # The output-agnostic baseline cannot follow the partner.
        np.testing.assert_allclose(r.metrics["rollout"]["share_swing"], 0.0, atol=1e-12)
        np.testing.assert_allclose(r.metrics["rollout"]["map_correlation"], 1.0, atol=1e-9)
        assert r.info["split"] == half and r.info["pairs"] == 5

    def broken(*args, **kwargs):
        raise AssertionError("a finished chunk was computed again")

    again = ev.evaluate_photos(loaded32, 5, cache_dir=str(tmp_path), make_pairs=broken, **kw)
    for half in res:
        for kind in KINDS:
            for name, v in res[half].metrics[kind].items():
                np.testing.assert_array_equal(again[half].metrics[kind][name], v)


def test_evaluate_photos_bad_input_is_clear(loaded32):
    with pytest.raises(ValueError, match="num_pairs=0"):
        ev.evaluate_photos(loaded32, 0, make_pairs=_synthetic_pairs, log=None)
    with pytest.raises(ValueError, match="split='c'"):
        ev.photo_pairs(2, split="c", image_size=32)
    with pytest.raises(ValueError, match=r"partners must be \[B, K, H, W, C\]"):
        ev.measure(
            loaded32.model, loaded32.variables, np.zeros((2, 32, 32, 3)), np.zeros((2, 32, 32, 3))
        )


@pytest.fixture(scope="module")
def real_photos():
    if set(photos.names()) - set(photos.available()):
        inputs.missing("the photos need scikit-image and scikit-learn (the photos extra)")


def test_real_photo_pairs_on_a_tiny_model(real_photos, loaded32):
    data = ev.photo_pairs([0, 1], split="b", image_size=32, distractor=True)
    pairs = [photos.make_pair((0, i), size=32, split="b", distractor=True) for i in (0, 1)]
    st = photos.stack(pairs)
    np.testing.assert_array_equal(data["uint8_images"], st["b"])
    np.testing.assert_array_equal(data["masks"], st["b_masks"])
    np.testing.assert_allclose(data["partners"], st["partners"] / 255.0, atol=1e-6)
    assert {ids[0] for ids in data["ids"]} <= set(photos.names("b"))
    res = ev.evaluate_photos(loaded32, 2, distractor=True, kinds=KINDS, steps=2, log=None, chunk=2)
    for r in res.values():
        s = r.summary()
        assert set(s) == set(KINDS)
        assert set(s["chefer"]) == set(ev.METRICS)
        assert all(math.isfinite(v[0]) for m in s.values() for v in m.values())


def test_evaluate_subcommand_on_photos(real_photos, loaded32, monkeypatch, tmp_path, capsys):
    from pairviz_jax import runs

    monkeypatch.setattr(runs, "model_from_args", lambda args: loaded32)
    (tmp_path / "w.npz").write_bytes(b"")  # --weights must name a file; the loader is replaced
    monkeypatch.chdir(tmp_path)
    png = str(tmp_path / "photos.png")
    argv = ["evaluate", "--weights", "w.npz", "--photos", "--distractor", "--pairs", "2"]
    argv += ["--steps", "2", "--method", "chefer,paper", "--out", png]
    assert visualize.main(argv) == 0
    out = capsys.readouterr().out
    assert "## tiny: photo half a, with a distractor" in out and "photo half b" in out
    assert "## tiny: half a / half b, with a distractor" in out
    both = [line for line in out.splitlines() if line.startswith("| Chefer")][-1]
    assert both.count(" / ") == 7  # one cell per measure, half a / half b
    assert "chefer better than rollout by: deletion_auc" in out and "share_swing" in out
    for half in ("a", "b"):
        assert str(tmp_path / f"photos_{half}.png") in out
    for bad, msg in (("--method=lrp", "--method lrp: unknown"), ("--option=ig.foo=1", "ig takes")):
        assert visualize.main([*argv, bad]) == 1
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def test_methods_figure_draws_both_pairs(real_photos, loaded32, tmp_path):
    from pairviz_jax.evaluate import figures

    lines = []
    kinds = ("authors", "chefer", "ig", "rollout")
    path = figures.methods_figure(
        loaded32,
        str(tmp_path / "m.png"),
        kinds=kinds,
        method_options={"ig": {"steps": 2}},
        dpi=40,
        log=lines.append,
    )
    import matplotlib.image

    img = matplotlib.image.imread(path)
    # 3 rows (one pair, a distractor pair against each partner) x 6 columns of panels.
    assert img.shape[0] > img.shape[1] / 3 and img.shape[1] > 200
    # Progress: a line before any map is computed, then one per method (with seconds).
    assert "first: compiles" in lines[0]
    assert [ln.split(" (")[0] for ln in lines[1:]] == [
        "figure: maps of authors, rollout",
        "figure: maps of chefer",
        "figure: maps of ig",
    ]
    # Both pairs in one call (the single pair's partner repeated) draw the maps each pair has
    # on its own: the single pair's row equals kind_maps of that pair against its one partner.
    datas = [
        ev.photo_pairs([0], split="b", image_size=32, distractor=d, normalization=None)
        for d in (False, True)
    ]
    rows = figures._rows(loaded32, datas, ("authors", "chefer"), None)
    assert [(r[0], r[-1]) for r in rows] == [(False, 0), (True, 0), (True, 1)]
    x = jnp.asarray(datas[0]["images"][:1])
    emb = explain.embed(loaded32.model, loaded32.variables, jnp.asarray(datas[0]["partners"][0]))
    alone = ev.kind_maps(loaded32.model, loaded32.variables, x, emb[None], ("authors", "chefer"))
    for kind in ("authors", "chefer"):
        want = np.asarray(explain.upsample(jnp.asarray(alone[kind][0, 0]), (32, 32)))
        # Another batch shape, another order of float32 sums (CHUNK_TOL, of the map's scale).
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(rows[0][4][kind], want, rtol=0, atol=CHUNK_TOL * scale)

"""DINOv2, CLIP, SigLIP and DeiT files against their reference libraries, offline.

``tools/make_parity_fixtures.py --only families`` built tiny models (width 32,
depth 2, 4 heads, patch 4, 16 px) with random weights in Hugging Face
transformers, open_clip, timm and a torch model of the DINOv2 hub's forward
pass, saved them in each family's own format and their outputs on fixed
inputs (``families_refs.npz``), also on 8x12 inputs, where each family
resamples its position embedding its own way. Here ``pairviz_jax.checkpoints``
loads the files and the project's ViT must give the same patch tokens,
embedding and attention to 1e-5 of the reference's largest value.
"""

import os

import jax
import numpy as np
import pytest

from pairviz_jax import checkpoints

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOL = 1e-5  # relative to the reference's largest magnitude
RESIZED = (8, 12)


@pytest.fixture(scope="module")
def refs():
    with np.load(os.path.join(FIXTURES, "families_refs.npz")) as z:
        return {k: z[k] for k in z.files}


# Compiled once per model and image shape (equal models, e.g. a family's hub file and its
# Hugging Face folder, share it): op by op, each forward compiles its operations one by one.
_apply = jax.jit(lambda model, variables, images: model.apply(variables, images), static_argnums=0)


def _outputs(model, variables, images):
    emb, out = _apply(model, variables, images)
    attention = out["attention"]
    return dict(
        tokens=np.asarray(out["tokens"]),
        embedding=np.asarray(emb),
        attention=np.asarray(attention[:1]),
    )


def _rel(got, want) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _check(name, got, refs, tol=TOL):
    for part, value in got.items():
        err = _rel(value, refs[f"{name}/{part}"])
        assert err <= tol, f"{name} {part}: max relative difference {err:.2e} > {tol}"


DINO = dict(class_token=True, pool_type="tok", layer_norm_eps=1e-6, mlp_dim=64)
CLIP = dict(class_token=True, pool_type="tok", ln_pre=True, layer_norm_eps=1e-5, proj_dim=16,
            proj_bias=False)  # fmt: skip
SIGLIP = dict(class_token=False, pool_type="map", mlp_act="gelu_tanh", layer_norm_eps=1e-6)
# reference name, file or folder, what model_from needs, what it must build
CASES = [
    ("dinov2_hf", "dinov2_hf", {}, dict(DINO, num_registers=0, mlp_act="gelu")),
    ("dinov2_reg_hf", "dinov2_reg_hf", {}, dict(DINO, num_registers=2, mlp_act="gelu")),
    ("dinov2_swiglu_hf", "dinov2_swiglu_hf", {}, dict(DINO, mlp_act="swiglu", mlp_dim=48)),
    ("dinov2_hub", "dinov2_hub.safetensors", {"num_heads": 4}, dict(DINO, mlp_act="gelu")),
    ("dinov2_hub", "dinov2_hub.pth", {"num_heads": 4}, dict(DINO, mlp_act="gelu")),
    ("dinov2_reg_hub", "dinov2_reg_hub.safetensors", {"num_heads": 4},
     dict(DINO, num_registers=2)),
    ("dinov2_swiglu_hub", "dinov2_swiglu_hub.safetensors", {"num_heads": 4},
     dict(DINO, mlp_act="swiglu", mlp_dim=48)),
    ("clip_openai", "clip_openai.safetensors", {"num_heads": 4},
     dict(CLIP, mlp_act="quick_gelu", layer_scale=None)),
    ("openclip", "openclip.safetensors", {"num_heads": 4}, dict(CLIP, mlp_act="gelu")),
    ("clip_hf", "clip_hf", {}, dict(CLIP, mlp_act="quick_gelu")),
    ("siglip_hf", "siglip_hf", {}, SIGLIP),
    ("siglip_bv", "siglip_bv.npz", {}, SIGLIP),
    ("deit", "deit.safetensors", {"num_heads": 4},
     dict(class_token=True, distill_token=True, pool_type="tok", proj_dim=None)),
]  # fmt: skip
IDS = [c[1] for c in CASES]


@pytest.mark.parametrize("name,file,known,expected", CASES, ids=IDS)
def test_family_parity(refs, name, file, known, expected):
    path = os.path.join(FIXTURES, file)
    model = checkpoints.model_from(path, **known)
    assert (model.width, model.depth, model.num_heads, model.patch_size) == (32, 2, 4, (4, 4))
    for key, value in expected.items():
        assert getattr(model, key) == value, (key, getattr(model, key), value)
    variables = checkpoints.load(path, model)
    _check(name, _outputs(model, variables, refs["images"]), refs)


RESIZED_CASES = [c for c in CASES if c[0] in ("dinov2_hf", "dinov2_reg_hf", "dinov2_hub",
                                               "dinov2_reg_hub", "siglip_hf", "deit")]  # fmt: skip


@pytest.mark.parametrize(
    "name,file,known,expected", RESIZED_CASES, ids=[c[1] for c in RESIZED_CASES]
)
def test_family_parity_at_another_size(refs, name, file, known, expected):
    """8x12 inputs: a 2x3 grid from the 4x4 one, by each family's own resampling."""
    path = os.path.join(FIXTURES, file)
    model = checkpoints.model_from(path, **known)
    variables = checkpoints.load(path, model, image_size=RESIZED)
    _check(f"{name}@8x12", _outputs(model, variables, refs["images@8x12"]), refs)


@pytest.mark.parametrize(
    "name,file,wrong",
    [
        ("dinov2_hub", "dinov2_hub.safetensors", "bicubic"),  # HF's convention on a hub file
        ("dinov2_hf", "dinov2_hf", "bicubic_offset"),  # the hub's on an HF folder
        ("dinov2_reg_hf", "dinov2_reg_hf", "bicubic"),  # without antialiasing
        ("deit", "deit.safetensors", "linear"),
    ],
)
def test_the_convention_matters(refs, name, file, wrong):
    """Another family's resampling misses the reference: the parity above can fail."""
    path = os.path.join(FIXTURES, file)
    model = checkpoints.model_from(path, num_heads=4)
    variables = checkpoints.load(path, model, image_size=RESIZED, posemb_method=wrong)
    got = _outputs(model, variables, refs["images@8x12"])["tokens"]
    assert _rel(got, refs[f"{name}@8x12/tokens"]) > 1e-3


def test_hub_and_hf_conventions_differ_but_registers_agree(refs):
    """The same weights: HF and hub differ at 8x12 without registers, agree with them."""
    plain = _rel(refs["dinov2_hub@8x12/tokens"], refs["dinov2_hf@8x12/tokens"])
    reg = _rel(refs["dinov2_reg_hub@8x12/tokens"], refs["dinov2_reg_hf@8x12/tokens"])
    assert plain > 1e-2 and reg < 1e-6


# ------------------------------------------------------------------ resampling against torch

INTERP = ["5to3x4", "5to7x9", "5to5x8", "37to16"]
METHODS = ["bicubic", "bicubic_antialias", "bicubic_offset"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", INTERP)
def test_resample_posemb_is_torch_interpolate(refs, case, method):
    grid = refs[f"interp/{case}/grid"]
    want = refs[f"interp/{case}/{method}"]
    got = checkpoints.resample_posemb(grid, want.shape[:2], method)
    assert got.dtype == np.float32
    assert _rel(got, want) <= 2e-6


def test_offset_is_a_scale_factor(refs):
    """The hub's call, spelled as torch's: a scale factor, the size following from it."""
    grid = refs["interp/37to16/grid"]
    got = checkpoints.interpolate_bicubic(grid, scale_factor=(16.1 / 37, 16.1 / 37))
    assert got.shape[:2] == (16, 16)
    assert _rel(got, refs["interp/37to16/bicubic_offset"]) <= 2e-6


def test_conventions_at_dinov2_scale(refs):
    """37 -> 16 (DINOv2 at 224 px): the offset moves every sample; antialiasing smooths."""
    out = {m: refs[f"interp/37to16/{m}"] for m in METHODS}
    scale = np.abs(out["bicubic"]).max()
    assert np.abs(out["bicubic"] - out["bicubic_offset"]).max() > 0.1 * scale
    # Antialiasing averages more input samples: smaller spread on white noise.
    assert out["bicubic_antialias"].std() < 0.8 * out["bicubic"].std()


@pytest.mark.parametrize("method", checkpoints.INTERPOLATIONS)
def test_resampling_keeps_constants_and_same_grids(method):
    const = np.full((6, 6, 3), 0.25, np.float32)
    target = (2, 3) if method != "bicubic_offset" else (3, 3)
    np.testing.assert_allclose(checkpoints.resample_posemb(const, target, method), 0.25, atol=1e-6)
    grid = np.random.default_rng(0).standard_normal((5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(checkpoints.resample_posemb(grid, (5, 5), method), grid)


def test_resampling_rejects_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        checkpoints.resample_posemb(np.zeros((4, 4, 2)), (2, 2), "nearest")
    path = os.path.join(FIXTURES, "deit.safetensors")
    model = checkpoints.model_from(path, num_heads=4)
    with pytest.raises(ValueError, match="posemb_method must be one of"):
        checkpoints.load(path, model, image_size=RESIZED, posemb_method="area")


# ------------------------------------------------------------------ describe, defaults

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# file -> (layout, model family, interpolation, normalization)
DESCRIBED = {
    "dinov2_hf": ("hf_dinov2", "dinov2", "bicubic", "imagenet"),
    "dinov2_reg_hf": ("hf_dinov2", "dinov2", "bicubic_antialias", "imagenet"),
    "dinov2_hub.safetensors": ("dinov2_hub", "dinov2", "bicubic_offset", "imagenet"),
    "dinov2_reg_hub.safetensors": ("dinov2_hub", "dinov2", "bicubic_antialias", "imagenet"),
    "clip_openai.safetensors": ("openai_clip", "clip", "bicubic_antialias", "clip"),
    "openclip.safetensors": ("open_clip", "clip", "bicubic_antialias", "clip"),
    "clip_hf": ("hf_clip", "clip", "bicubic", "clip"),
    "siglip_hf": ("hf_siglip", "siglip", "bicubic", "half"),
    "siglip_bv.npz": ("big_vision", "siglip", "zoom", "half"),
    "deit.safetensors": ("timm_deit", "deit", "bicubic_antialias", "imagenet"),
}
NORMS = {"imagenet": IMAGENET, "clip": CLIP_NORM, "half": HALF}


@pytest.mark.parametrize("file", sorted(DESCRIBED))
def test_describe(file):
    layout, family, interpolation, norm = DESCRIBED[file]
    info = checkpoints.describe(os.path.join(FIXTURES, file))
    assert (info["layout"], info["model_family"], info["family"]) == (layout, family, "vit")
    assert info["interpolation"] == interpolation
    assert info["grid"] == (4, 4) and info["image_size"] == (16, 16)
    assert info["normalization"]["name"] == norm
    mean, std = NORMS[norm]
    np.testing.assert_allclose(info["normalization"]["mean"], mean)
    np.testing.assert_allclose(info["normalization"]["std"], std)
    assert info["leftovers"] == []
    assert info["assumed"] == (["mlp_act"] if file == "openclip.safetensors" else [])


def test_describe_says_what_is_dropped_and_where_from():
    info = checkpoints.describe(os.path.join(FIXTURES, "clip_openai.safetensors"))
    assert info["spec"]["mlp_act"] == "quick_gelu"  # OpenAI's archive keys are there
    dropped = info["dropped"]
    assert list(dropped) == ["text tower and logit scale (not used)"]
    assert list(dropped.values())[0] > 10
    info = checkpoints.describe(os.path.join(FIXTURES, "dinov2_hf"))
    assert info["dropped"] == {"mask token (masked-image training only)": 1}
    assert info["files"] == [os.path.join(FIXTURES, "dinov2_hf", "model.safetensors")]
    assert info["spec"]["num_heads"] == 4  # from config.json
    assert checkpoints.describe(os.path.join(FIXTURES, "siglip_bv.npz"))["dropped"] == {
        "text tower and logit temperature/bias (not used)": 3
    }
    assert checkpoints.describe(os.path.join(FIXTURES, "deit.safetensors"))["dropped"] == {
        "DeiT classifiers (the embedding is the pre-logits mean of class and dist token)": 4
    }


def test_other_poolings_of_a_dinov2_file(refs):
    """model_from(path, pool_type=...) overrides the family's class-token embedding."""
    path = os.path.join(FIXTURES, "dinov2_hf")
    gap_tok = checkpoints.model_from(path, pool_type="gap_tok")
    variables = checkpoints.load(path, gap_tok)
    emb = np.asarray(_apply(gap_tok, variables, refs["images"])[0])
    tokens = refs["dinov2_hf/tokens"]
    # DINOv2's linear-probe feature: [class token, mean of patch tokens].
    want = np.concatenate([refs["dinov2_hf/embedding"], tokens.mean(axis=1)], axis=-1)
    assert _rel(emb, want) <= TOL
    gap = checkpoints.model_from(path, pool_type="gap")
    emb = np.asarray(_apply(gap, checkpoints.load(path, gap), refs["images"])[0])
    assert _rel(emb, tokens.mean(axis=1)) <= TOL


def test_openclip_activation_override_changes_the_model(refs):
    """The activation is not in the file: the documented default, or mlp_act= for QuickGELU."""
    path = os.path.join(FIXTURES, "openclip.safetensors")
    quick = checkpoints.model_from(path, num_heads=4, mlp_act="quick_gelu")
    assert quick.mlp_act == "quick_gelu"
    got = _outputs(quick, checkpoints.load(path, quick), refs["images"])
    assert _rel(got["embedding"], refs["openclip/embedding"]) > 1e-3


def test_read_once_then_build_and_load(refs):
    """A Checkpoint serves describe, model_from and load without re-reading the file."""
    ckpt = checkpoints.read(os.path.join(FIXTURES, "siglip_hf"))
    assert checkpoints.describe(ckpt)["layout"] == "hf_siglip"
    model = checkpoints.model_from(ckpt)
    variables = checkpoints.load(ckpt, model, image_size=RESIZED)
    _check("siglip_hf@8x12", _outputs(model, variables, refs["images@8x12"]), refs)


def test_parity_under_jit_and_vmap(refs):
    """The loaded variables give the same embedding through jit and vmap."""
    path = os.path.join(FIXTURES, "dinov2_reg_hf")
    model = checkpoints.model_from(path)
    variables = checkpoints.load(path, model)
    x = refs["images"]
    jitted = _apply(model, variables, x)[0]  # test_family_parity's compilation
    mapped = jax.jit(jax.vmap(lambda im: model.apply(variables, im[None])[0][0]))(x)
    want = refs["dinov2_reg_hf/embedding"]
    assert _rel(np.asarray(jitted), want) <= TOL and _rel(np.asarray(mapped), want) <= TOL

"""Every paper config is the paper's run, and each config file and architecture trains.

Each of the 9 configs (3 datasets x 3 networks) is checked for its settings and, at the
paper's full size, for its parameter tree by ``jax.eval_shape`` (no weights allocated)
against counts derived by hand from ViT-B and BiT-R101x1. A config's ``model`` comes only
from the network and everything else only from the dataset file (asserted below), so one
step of training and an evaluation on mock TFDS data with a tiny model, for 3 configs that
cover every dataset file and every network, exercises what the 9 would. The logged
Recall@k is recomputed here by brute force (a plain forward pass of the saved parameters,
every cosine, the nearest other image) and the saved parameter tree is compared, name for
name and shape for shape, with the model the config builds.
"""

import functools
import importlib.util
import math
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pairviz_jax import data
from pairviz_jax.train import build_model, load_params, train_and_evaluate
from pairviz_jax.train import input as input_lib
from pairviz_jax.train.config import PAPER_MODELS, base_config, paper_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
PAPER = {"sop.py": "sop", "hotels50k.py": "hotels50k", "gldv2.py": "gldv2_clean"}


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(CONFIGS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return (module.get_config(arg) if arg else module.get_config()), module


def _mock_source(builder, split=None, **kwargs):
    """16 random images of 4 classes per split, in TFDS's stanford_online_products schema."""
    rng = np.random.default_rng(0 if "train" in str(split) else 1)
    return [
        {"image": rng.integers(0, 256, (24, 20, 3), np.uint8), "class_id": i % 4} for i in range(16)
    ]


def shrink(c):
    """The tiny-model overrides of a one-step smoke run."""
    if c.model.name == "vit":
        c.model.variant = "mu/4"
        c.model.proj_dim = 8
        c.input.image_size = 16
    else:
        c.model.block_sizes = (1, 1, 1, 1)
        c.model.width = 8
        c.model.num_groups = 2
        c.model.proj_dim = 8
        c.input.image_size = 32
    c.batch_size = c.eval.batch_size = 8
    c.total_steps = 1
    c.checkpoint_every = 1
    c.eval_every = 0
    c.eval.ks = (1, 4)
    return c


def _paper_param_count(arch):
    """Parameters of the paper's network at 256 px with the 512-d head, counted by hand."""
    if arch.startswith("vit"):  # ViT-B: width 768, 12 blocks, MLP 3072, class token
        p, w, mlp = (16 if arch == "vit_b16" else 32), 768, 3072
        block = 2 * 2 * w + 4 * (w * w + w) + (w * mlp + mlp) + (mlp * w + w)
        tokens = (256 // p) ** 2 + 1
        return (p * p * 3 * w + w) + w + tokens * w + 12 * block + 2 * w + (w * 512 + 512)
    # BiT-R101x1: pre-activation bottlenecks (group norm + weight-standardised conv, no
    # conv bias), 3/4/23/3 units of width 64/128/256/512, a projection on each first unit.
    n, cin = 7 * 7 * 3 * 64, 64
    for stage, units in enumerate((3, 4, 23, 3)):
        m = 64 * 2**stage
        for i in range(units):
            n += 2 * cin + cin * m + 2 * m + 9 * m * m + 2 * m + 4 * m * m
            n += cin * 4 * m if i == 0 else 0
            cin = 4 * m
    return n + 2 * 2048 + (2048 * 512 + 512)


@functools.cache
def _paper_shapes(arch):
    """``(param shapes, embedding shape)`` of the full-size network, by ``jax.eval_shape``."""
    model = build_model(paper_model(base_config(), arch).model)
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), np.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    emb = jax.eval_shape(lambda v, x: model.apply(v, x)[0], variables, x)
    return variables, emb


@pytest.mark.parametrize("arch", PAPER_MODELS)
@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_is_the_papers_run_at_full_size(name, arch):
    c, module = load_config(name, arch)
    assert c.input.name == PAPER[name] and c.input.name in data.DATASETS
    assert c.input.image_size == 256 and c.model.proj_dim == 512
    assert c.loss.name == ("proxy_anchor" if name == "sop.py" else "arcface")
    assert c.model.variant == {"vit_b16": "B/16", "vit_b32": "B/32", "bit_r101": "R101x1"}[arch]
    assert f"{name}:{arch}" in module.__doc__ or f"{name}:vit_b16" in module.__doc__
    assert "Recall@1" in module.__doc__ and "MAP@R" in module.__doc__
    # The model is the network's alone; the rest is the dataset file's alone.
    assert c.model.to_dict() == paper_model(base_config(), arch).model.to_dict()
    other = load_config(name, next(a for a in PAPER_MODELS if a != arch))[0].to_dict()
    assert {k: v for k, v in c.to_dict().items() if k != "model"} == {
        k: v for k, v in other.items() if k != "model"
    }
    # The paper's network, shape by shape, without allocating it.
    variables, emb = _paper_shapes(arch)
    assert set(variables) == {"params"}
    shapes = [v.shape for v in jax.tree_util.tree_leaves(variables)]
    assert sum(math.prod(s) for s in shapes) == _paper_param_count(arch)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    params = variables["params"]
    if arch.startswith("vit"):
        p = 16 if arch == "vit_b16" else 32
        assert params["embedding"]["kernel"].shape == (p, p, 3, 768)
        assert sum(k.startswith("encoderblock_") for k in params["Transformer"]) == 12
        assert params["head"]["kernel"].shape == (768, 512)
    else:
        units = [len(params[f"block{i}"]) for i in (1, 2, 3, 4)]
        assert units == [3, 4, 23, 3]
        assert params["root_block"]["standardized_conv2d"]["kernel"].shape == (7, 7, 3, 64)
        assert params["head"]["conv2d"]["kernel"].shape == (1, 1, 2048, 512)


@pytest.mark.parametrize(
    "name, arch", [("sop.py", "vit_b16"), ("hotels50k.py", "vit_b32"), ("gldv2.py", "bit_r101")]
)
def test_paper_config_one_step_train_and_evaluate(name, arch, tmp_path):
    c, _ = load_config(name, arch)
    # One step on mock data: TFDS's own SOP reader stands in for every dataset (the
    # project's builders store encoded images that mock_data cannot encode without TF).
    c = shrink(c)
    c.input.name = "tfds_sop"
    with tfds.testing.mock_data(as_data_source_fn=_mock_source):
        out = train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
        batches = list(input_lib.eval_batches(c, local_batch=8, process_index=0, process_count=1))
    assert out["step"] == 1
    params, saved = load_params(tmp_path)
    assert saved["loss"]["name"] == c.loss.name
    assert params["head"]["weights"].shape == (11318, 8)
    # The saved tree is the config's model, every name and shape.
    model = build_model(c.model)
    size = c.input.image_size
    want = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, size, size, 3), np.float32))
    flat = lambda t: {"/".join(map(str, k)): np.shape(v) for k, v in _flatten(t)}  # noqa: E731
    assert flat(params["model"]) == flat(want["params"])
    # Recall@k by brute force from the saved parameters.
    mean, std = input_lib.normalization(c)
    valid = np.concatenate([b["valid"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])[valid]
    y = np.concatenate([b["label"] for b in batches])[valid]
    x = (images.astype(np.float32) / 255.0 - np.asarray(mean)) / np.asarray(std)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])  # one call, not op by op
    e = np.asarray(forward(params["model"], x), np.float64)
    assert len(e) == out["eval/num_queries"] == 16
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = u @ u.T
    np.fill_diagonal(cos, -np.inf)
    order = np.argsort(-cos, axis=1, kind="stable")
    for k in (1, 4):
        hit = (y[order[:, :k]] == y[:, None]).any(axis=1).mean()
        assert out[f"eval/recall@{k}"] == pytest.approx(hit, abs=1e-6), k


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, (*prefix, k))
    else:
        yield prefix, tree

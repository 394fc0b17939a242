"""Every paper config trains one step and evaluates, on mock TFDS data with a tiny model.

The logged Recall@k is recomputed here by brute force (a plain forward pass of the saved
parameters, every cosine, the nearest other image) and the saved parameter tree is
compared, name for name and shape for shape, with the model the config builds.
"""

import importlib.util
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pairviz_jax import data
from pairviz_jax.train import build_model, load_params, train_and_evaluate
from pairviz_jax.train import input as input_lib
from pairviz_jax.train.config import PAPER_MODELS

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


@pytest.mark.parametrize("arch", PAPER_MODELS)
@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_one_step_train_and_evaluate(name, arch, tmp_path):
    c, module = load_config(name, arch)
    # The config is the paper's run.
    assert c.input.name == PAPER[name] and c.input.name in data.DATASETS
    assert c.input.image_size == 256 and c.model.proj_dim == 512
    assert c.loss.name == ("proxy_anchor" if name == "sop.py" else "arcface")
    assert c.model.variant == {"vit_b16": "B/16", "vit_b32": "B/32", "bit_r101": "R101x1"}[arch]
    assert f"{name}:{arch}" in module.__doc__ or f"{name}:vit_b16" in module.__doc__
    assert "Recall@1" in module.__doc__ and "MAP@R" in module.__doc__
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

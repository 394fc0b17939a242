"""Every paper config trains one step and evaluates, on mock TFDS data with a tiny model."""

import importlib.util
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pairviz_jax import data
from pairviz_jax.train import load_params, train_and_evaluate
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
    assert out["step"] == 1
    assert 0.0 <= out["eval/recall@1"] <= 1.0 and 0.0 <= out["eval/map@r"] <= 1.0
    params, saved = load_params(tmp_path)
    assert saved["loss"]["name"] == c.loss.name
    assert params["head"]["weights"].shape == (11318, 8)
    assert jax.tree.structure(params["model"]) is not None

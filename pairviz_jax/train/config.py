"""Every field of a training config, with its default and meaning.

``configs/*.py`` start from :func:`base_config` and override what their run needs; command
lines override further (``--config.batch_size=256``).
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """The defaults: the paper's ViT-B/16 with ArcFace on a 256-px input."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameter init, dropout keys (folded with the step) and data order

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"  # "vit" (pairviz_jax.models.vit) or "resnet" (pairviz_jax.models.resnet)
    c.model.variant = "B/16"  # decode_variant / decode_resnet name
    c.model.class_token = True  # the checkpoint has one ...
    c.model.keep_class_token = False  # ... the authors drop it before the encoder
    c.model.pool_type = "gap"  # mean of the projected output tokens (eq. 1)
    c.model.proj_dim = 512  # every output token projected to the embedding size
    c.model.dtype = "float32"  # compute dtype; "bfloat16" on accelerators

    c.init_from = None  # pretrained weights (pairviz_jax.checkpoints.load); None: random init
    c.init_dont_load = ("head/.*",)  # parameters kept at their fresh init (the new projection)

    c.input = ml_collections.ConfigDict()
    c.input.name = "synthetic"  # a pairviz_jax.data dataset name, or "synthetic"
    c.input.data_dir = None  # where the prepared dataset lives
    c.input.train_split = "train"
    c.input.eval_split = "test"
    c.input.image_size = 256  # the paper's input size
    c.input.normalization = None  # key of pairviz_jax.data NORMALIZATION; None: input.name
    c.input.options = {}  # more keyword arguments of pairviz_jax.data.make_dataset
    # The in-memory dataset of pairviz_jax.train.input (tests, smoke runs).
    c.input.synthetic = ml_collections.ConfigDict()
    c.input.synthetic.seed = 0
    c.input.synthetic.num_train_classes = 8
    c.input.synthetic.num_test_classes = 8
    c.input.synthetic.train_size = 256
    c.input.synthetic.test_size = 64
    c.input.synthetic.noise = 0.5
    c.num_classes = None  # rows of the ArcFace / Proxy Anchor head; None: the dataset's

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "arcface"  # "arcface" (Deng et al. 2019) or "proxy_anchor" (Kim et al. 2020)
    c.loss.scale = 64.0  # ArcFace s
    c.loss.margin = 0.5  # ArcFace m (radians)
    c.loss.alpha = 32.0  # Proxy Anchor alpha
    c.loss.delta = 0.1  # Proxy Anchor delta
    c.loss.head_lr_mult = 1.0  # learning rate of the class weights / proxies relative to lr
    c.loss.head_weight_decay = 0.0  # the head is normalised; decay only rescales it

    c.batch_size = 128  # global, over all devices and hosts
    c.total_steps = 50_000  # optimiser steps; the 1-cycle schedule spans them

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # "sgd" (the paper) or "adamw"
    c.optim.lr = 0.01  # 1-cycle peak learning rate
    c.optim.pct_start = 0.3  # fraction of steps spent warming up to the peak
    c.optim.div_factor = 25.0  # initial lr = lr / div_factor
    c.optim.final_div_factor = 1e4  # final lr = initial lr / final_div_factor
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.b1 = 0.9  # adamw only
    c.optim.b2 = 0.999  # adamw only
    c.optim.weight_decay = 1e-4  # on kernels (ndim > 1) only; adamw: decoupled, times lr
    c.optim.grad_clip_norm = 1.0  # global-norm clipping; 0 or None: off
    c.optim.grad_accum_steps = 1  # micro-batches per step (memory); batch_size must divide

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # global
    c.eval.ks = (1, 10, 100)  # Recall@k
    c.eval.block_size = 1024  # queries per block of the similarity matrix
    c.eval.max_examples = None  # synthetic only: cap on evaluated examples
    # More evaluations, logged as eval_<name>/...: name -> {"split": ..., "options": {...}}
    # (options replace config.input.options for that split).
    c.eval.extra = {}
    c.eval.options = None  # make_dataset arguments of the main split; None: input.options

    c.log_every = 50  # progress line + metrics.jsonl record
    c.eval_every = 5000  # 0: only at the end; negative: never
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3  # most recent kept
    c.keep_checkpoint_every = 5000  # also kept forever (maps across training, Section 4.3)
    c.async_checkpoints = True
    return c


def override(config: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
    """Sets fields by dotted name, like ``--config.optim.lr=0.02`` on the command line.

    ``override(c, **{"optim.lr": 0.02, "model.dropout": 0.1})``; a field the config does
    not have yet is added (``config.model`` fields are passed on to the module).

    Returns:
      ``config``, modified in place.
    """
    for key, value in dotted.items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return config


PAPER_MODELS = ("vit_b16", "vit_b32", "bit_r101")


def paper_model(config: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
    """Sets ``config.model`` to one of the paper's networks (Section 4 and 5).

    Args:
      config: modified in place.
      arch: ``"vit_b16"`` / ``"vit_b32"`` (ViT-B, no class token in the encoder, every
        output token projected 768 -> 512, mean-pooled) or ``"bit_r101"`` (BiT ResNet-101x1
        with the authors' per-location 1x1 projection to 512, mean-pooled).

    Returns:
      ``config``.
    """
    if arch not in PAPER_MODELS:
        raise ValueError(f"model must be one of {PAPER_MODELS}, got {arch!r}")
    m = ml_collections.ConfigDict()
    if arch.startswith("vit"):
        m.name = "vit"
        m.variant = "B/16" if arch == "vit_b16" else "B/32"
        m.class_token = True
        m.keep_class_token = False
        m.pool_type = "gap"
        m.proj_dim = 512
    else:
        m.name = "resnet"
        m.variant = "R101x1"
        m.proj_dim = 512
    m.dtype = "bfloat16"  # compute dtype on GPU/TPU; parameters and losses stay float32
    config.model = m
    config.init_dont_load = ("head/.*",)  # the 512-d projection is new
    return config

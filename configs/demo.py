"""A small ViT on the embedded demo dataset: trains on 2 CPU cores in a few minutes.

Run::

    python train.py --config configs/demo.py --workdir runs/demo

Glyphs on cluttered backgrounds (``pairviz_jax.data.demo``, 64 px, generated locally): 24
training classes x 128 images; retrieval is evaluated on the 768 test images of 24 *other*
glyphs (classes unseen in training), every image a query against the rest.

The model is the paper's architecture at toy scale: ViT (width 64, depth 4, 4 heads,
patch 8, so 8 x 8 tokens at 64 px), class token dropped before the encoder, every output
token projected to a 64-d embedding, mean-pooled; Proxy Anchor loss (proxies at 100x the
learning rate), SGD with Nesterov momentum and a 1-cycle schedule.

Measured (2 CPU cores shared with other jobs, ``XLA`` CPU, seed 0): see ``MEASURED`` below.
A random-init model of the same architecture scores Recall@1 about 0.10 on the test split.
"""

from pairviz_jax.train.config import base_config

# Filled from a real run of this config; the numbers a fresh checkout should reproduce.
MEASURED = "pending"


def get_config(arg: str | None = None):
    c = base_config()
    c.model.variant = "Tiny/8"
    c.model.width = 64
    c.model.depth = 4
    c.model.mlp_dim = 128
    c.model.num_heads = 4
    c.model.proj_dim = 64

    c.input.name = "demo"
    c.input.image_size = 64
    # Mild crops keep the glyph in view; no flips (a mirrored glyph is another shape).
    c.input.options = {"crop_scale": (0.8, 1.0), "flip": False}

    c.loss.name = "arcface"
    c.loss.scale = 16.0
    c.loss.margin = 0.0
    c.loss.head_lr_mult = 10.0

    c.batch_size = 64
    c.total_steps = 1500
    c.optim.name = "adamw"
    c.optim.lr = 5e-4
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0

    c.eval.batch_size = 128
    c.eval.ks = (1, 2, 4, 8)
    # Also new renderings (another content seed) of the 24 *training* glyphs: how well the
    # model learned the classes it saw, next to how it transfers to unseen ones.
    c.eval.extra = {
        "seen": {"split": "train", "options": {"demo_seed": 1, "demo_examples_per_class": 16}}
    }
    c.log_every = 50
    c.eval_every = 500
    c.checkpoint_every = 250
    c.keep_checkpoints = 2
    c.keep_checkpoint_every = 500

    if arg == "runlocal":  # a smoke test: seconds, not minutes
        c.total_steps = 20
        c.log_every = 5
        c.eval_every = 0
        c.checkpoint_every = 10
    return c

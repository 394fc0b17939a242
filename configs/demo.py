"""A small ViT on the embedded demo dataset: trains on 2 CPU cores in about 7.5 minutes.

Run::

    python train.py --config configs/demo.py --workdir runs/demo
    python train.py --config configs/demo.py:runlocal --workdir /tmp/smoke  # 20 steps

Glyphs on cluttered backgrounds (``pairviz_jax.data.demo``, 64 px, drawn locally, nothing
downloaded): 24 training glyphs x 1,024 renderings. Retrieval (every image a query against
all others) is evaluated on the test split, 768 images of 24 *other* glyphs (classes unseen
in training, as the paper's benchmarks), logged as ``eval/...``, and on 384 new renderings
(another content seed) of the 24 training glyphs, logged as ``eval_seen/...``.

The model is the paper's architecture at toy scale: ViT (width 128, depth 2, 4 heads, MLP
256, patch 8, so 8 x 8 tokens), class token dropped before the encoder, every output token
projected to a 64-d embedding, mean-pooled. Loss: ArcFace with m = 0 (a normalised softmax)
and s = 8; with a margin (m = 0.3) the from-scratch model barely leaves the chance loss in
this budget, and s = 16 gives Recall@1 .48 unseen / .56 seen with three times the mean
cosine between different classes (.22 vs .07), a pair-independent part of every score that
the paired maps then spread over the background. Optimiser: AdamW, 1-cycle schedule with a
10% warm-up to lr 1e-3 (SGD, the paper's choice for fine-tuning pretrained weights, did not
get a from-scratch ViT off the ground in this budget). Depth 2 rather than 4 at the same
cost: the 4-block model (width 64) learns about as well (Recall@1 .44 unseen) but mixes
tokens so thoroughly that every row of its rollout is nearly the same (mean row cosine .87
vs .32), so its paired maps equal the rollout map (correlation .999) whatever the pair.

Measured (seed 0, 3,500 steps of 64, 2 CPU cores, 7.9 steps/s, 444 s wall clock
including evaluations and checkpoints):

    ==========================  ========  ========  =======
    evaluation                  Recall@1  Recall@8  MAP@R
    ==========================  ========  ========  =======
    unseen glyphs (eval/)       .488      .866      .193
    seen glyphs (eval_seen/)    .635      .932      .358
    ==========================  ========  ========  =======

Recall@1 of a random ranking is 31/767 = .040 (unseen) and 15/383 = .039 (seen). The
training loss falls from 3.2 (log 24) to 0.70. Faithfulness of this model's maps: docs/trust.md,
"Are the maps right?".
"""

from pairviz_jax.train.config import base_config

ARGS = ("runlocal",)  # configs/demo.py:runlocal, a 20-step smoke run


def get_config(arg: str | None = None):
    if arg not in (None, *ARGS):
        raise ValueError(f"unknown config argument {arg!r}; expected one of {', '.join(ARGS)}")
    c = base_config()
    c.model.variant = "Tiny/8"
    c.model.width = 128
    c.model.depth = 2
    c.model.mlp_dim = 256
    c.model.num_heads = 4
    c.model.proj_dim = 64

    c.input.name = "demo"
    c.input.image_size = 64
    # 1,024 renderings per glyph (drawn on the fly): too many to memorise, so the model has
    # to learn the glyphs. Mild crops keep the glyph in view; no flips (a mirrored glyph is
    # another shape).
    c.input.options = {"crop_scale": (0.8, 1.0), "flip": False, "demo_examples_per_class": 1024}

    c.loss.name = "arcface"
    c.loss.scale = 8.0
    c.loss.margin = 0.0
    c.loss.head_lr_mult = 10.0

    c.batch_size = 64
    c.total_steps = 3500
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.pct_start = 0.1  # a short warm-up: the demo has few steps
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0

    c.eval.batch_size = 128
    c.eval.ks = (1, 2, 4, 8)
    c.eval.options = {}  # the test split's default size: 24 unseen glyphs x 32
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

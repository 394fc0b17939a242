"""Google Landmarks v2 (clean) with ArcFace (the paper's GLM runs, Section 4 and Table 2).

Run (one of ``vit_b16``, ``vit_b32``, ``bit_r101``)::

    python -m pairviz_jax.data.prepare gldv2_clean --manual_dir ~/data/gldv2
    python train.py --config configs/gldv2.py:vit_b16 --workdir runs/gldv2_vit_b16 \\
        --config.init_from=~/weights/imagenet21k_ViT-B_16.npz

As the authors (footnote 2), the test gallery's images are queried against each other.
The paper's numbers (Table 2):

    ============  ========  =======
    model         Recall@1  MAP@R
    ============  ========  =======
    ViT-B/16      .469      .120
    BiT-R101      .466      .123
    ViT-B/32      not reported
    ============  ========  =======

The paper states only "SGD with a 1-cycle learning-rate schedule"; batch size, learning
rate, steps and the ArcFace scale / margin below are ours, not the authors'. The evaluation
of 761,757 images uses query blocks of 256 rows (about 0.8 GB of similarities per block).
This port has not yet reproduced the table at full scale.
"""

from pairviz_jax.train.config import base_config, paper_model


def get_config(arg: str = "vit_b16"):
    c = paper_model(base_config(), arg)
    c.input.name = "gldv2_clean"
    c.input.image_size = 256
    c.num_classes = None  # from the prepared dataset (81,313 landmarks)

    c.loss.name = "arcface"
    c.loss.scale = 64.0
    c.loss.margin = 0.5
    c.loss.head_lr_mult = 10.0

    c.batch_size = 256
    c.total_steps = 60_000  # about 10 epochs of the 1,580,470 training images
    c.optim.lr = 0.01
    c.optim.weight_decay = 1e-4

    c.eval.batch_size = 512
    c.eval.ks = (1, 10, 100)
    c.eval.block_size = 256
    c.eval_every = 10_000
    c.checkpoint_every = 1_000
    c.keep_checkpoint_every = 10_000
    return c

"""Stanford Online Products with Proxy Anchor (the paper's SOP runs, Section 4 and Table 2).

Run (one of ``vit_b16``, ``vit_b32``, ``bit_r101``; ImageNet-21k weights as released by the
ViT / BiT authors, read by ``pairviz_jax.checkpoints``)::

    python -m pairviz_jax.data.prepare sop --manual_dir ~/data/Stanford_Online_Products
    python train.py --config configs/sop.py:vit_b16 --workdir runs/sop_vit_b16 \\
        --config.init_from=~/weights/imagenet21k_ViT-B_16.npz
    python train.py --config configs/sop.py:bit_r101 --workdir runs/sop_bit_r101 \\
        --config.init_from=~/weights/BiT-M-R101x1.npz

The paper's numbers (Table 2, test split of 60,502 images / 11,316 classes, every image a
query against all others):

    ============  ========  =======
    model         Recall@1  MAP@R
    ============  ========  =======
    ViT-B/16      .824      .585
    BiT-R101      .820      .578
    ViT-B/32      not reported
    ============  ========  =======

The paper states only "SGD with a 1-cycle learning-rate schedule"; batch size, learning
rates, steps and the Proxy Anchor settings below are ours (Kim et al.'s alpha = 32,
delta = 0.1, proxies at 100x), not the authors'. This port has not yet reproduced the table
at full scale.
"""

from pairviz_jax.train.config import base_config, paper_model


def get_config(arg: str = "vit_b16"):
    c = paper_model(base_config(), arg)
    c.input.name = "sop"  # pairviz_jax.data; "tfds_sop" reads TFDS's own prepared copy
    c.input.image_size = 256  # resize to 256 x 256, no crop (the authors' input)
    c.num_classes = None  # from the prepared dataset: 11,318 training classes

    c.loss.name = "proxy_anchor"
    c.loss.alpha = 32.0
    c.loss.delta = 0.1
    c.loss.head_lr_mult = 100.0

    c.batch_size = 128
    c.total_steps = 20_000  # about 43 epochs of the 59,551 training images
    c.optim.lr = 0.01
    c.optim.weight_decay = 1e-4

    c.eval.batch_size = 512
    c.eval.ks = (1, 10, 100, 1000)
    c.eval_every = 2_000
    c.checkpoint_every = 1_000
    c.keep_checkpoint_every = 5_000
    return c

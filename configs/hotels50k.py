"""Hotels-50k with ArcFace (the paper's Hotels-50k runs, Section 4 and Table 2).

Run (one of ``vit_b16``, ``vit_b32``, ``bit_r101``)::

    python -m pairviz_jax.data.prepare hotels50k --manual_dir ~/data/hotels50k
    python train.py --config configs/hotels50k.py:vit_b16 --workdir runs/hotels_vit_b16 \\
        --config.init_from=~/weights/imagenet21k_ViT-B_16.npz

The paper's numbers (Table 2, hotel-instance retrieval on the 16,121 test images):

    ============  ========  =======
    model         Recall@1  MAP@R
    ============  ========  =======
    ViT-B/16      .223      .047
    BiT-R101      .247      .060
    ViT-B/32      not reported
    ============  ========  =======

The paper states only "SGD with a 1-cycle learning-rate schedule"; batch size, learning
rate, steps and the ArcFace scale / margin (Deng et al.'s defaults, s = 64, m = 0.5) below
are ours, not the authors'. This port has not yet reproduced the table at full scale.
"""

from pairviz_jax.train.config import base_config, paper_model


def get_config(arg: str = "vit_b16"):
    c = paper_model(base_config(), arg)
    c.input.name = "hotels50k"
    c.input.image_size = 256
    c.num_classes = None  # from the prepared dataset (the training hotels)

    c.loss.name = "arcface"
    c.loss.scale = 64.0
    c.loss.margin = 0.5
    c.loss.head_lr_mult = 10.0

    c.batch_size = 256
    c.total_steps = 50_000  # about 12 epochs of the 1,085,862 training images
    c.optim.lr = 0.01
    c.optim.weight_decay = 1e-4

    c.eval.batch_size = 512
    c.eval.ks = (1, 10, 100)
    c.eval_every = 5_000
    c.checkpoint_every = 1_000
    c.keep_checkpoint_every = 5_000
    return c

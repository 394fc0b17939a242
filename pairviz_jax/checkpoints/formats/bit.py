"""BiT release ``.npz`` files (``resnet/`` prefix, HWIO kernels, ``group_norm/{gamma,beta}``)."""

from __future__ import annotations

from pairviz_jax.checkpoints.formats._common import Arrays, Converted

_ROOT = "root_block/standardized_conv2d/kernel"


def is_bit(arrays: Arrays) -> bool:
    return any(k.endswith(_ROOT) for k in arrays)


def convert(arrays: Arrays) -> Converted:
    prefix = next(k for k in arrays if k.endswith(_ROOT))[: -len(_ROOT)]
    params, leftovers = {}, {}
    for k, v in arrays.items():
        if not k.startswith(prefix):
            leftovers[k] = v
            continue
        k = k[len(prefix) :]
        if k.endswith("group_norm/gamma"):
            k, v = k[: -len("gamma")] + "scale", v.reshape(-1)
        elif k.endswith("group_norm/beta"):
            k, v = k[: -len("beta")] + "bias", v.reshape(-1)
        params[k] = v
    return Converted("resnet", "bit_npz", params, model_family="bit", leftovers=leftovers)

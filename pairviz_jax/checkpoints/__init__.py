"""Public weight files in, the project's ``.npz`` out.

Two lines load any supported file, the format coming from the file itself::

    model = checkpoints.model_from("ViT-B_16.npz", num_heads=12)
    variables = checkpoints.load("ViT-B_16.npz", model, image_size=256)

Containers: ``.npz``, ``.safetensors`` (read with NumPy alone) and
``torch.save`` files (optional ``torch`` extra, ``weights_only=True``).
Layouts: original ViT / AugReg and big_vision ``.npz``, timm and Hugging Face
ViT, BiT ``.npz``, timm ResNetV2, and the authors' released ViT and ResNet
checkpoints (Black et al., WACV 2022). See ``_layouts`` for the key names.

Loading merges the file into freshly initialised parameters: position
embeddings are resampled to the model's grid and the class-token slot kept,
added (zeros, i.e. no position for the token) or dropped to match the model;
``dont_load`` patterns keep initial values (e.g. a new head); anything else
that does not fit fails loudly with every missing, unexpected and mis-shaped
key and the file's name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pairviz_jax.checkpoints._io import (
    CheckpointError,
    read_arrays,
    sniff,
    write_npz,
    write_safetensors,
)
from pairviz_jax.checkpoints._layouts import CONFIG_KEY, POSEMB, Converted, convert
from pairviz_jax.models.resnet import ResNet
from pairviz_jax.models.vit import ViT

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "convert_file",
    "describe",
    "load",
    "merge",
    "model_from",
    "read",
    "resample_posemb",
    "save",
    "sniff",
    "write_npz",
    "write_safetensors",
]

log = logging.getLogger(__name__)

# Standard heads per ViT width (Ti, S, M, B, L, H): used when the file's shapes
# do not determine the heads (fused torch attention) and none are given.
_STANDARD_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16}
_MHA = re.compile(r".*/MultiHeadDotProductAttention_1/(query|key|value|out)/(kernel|bias)")


@dataclasses.dataclass
class Checkpoint:
    """A file read and renamed to the project's parameter names.

    Attributes:
      path: the file.
      container: ``npz``, ``safetensors`` or ``torch``.
      layout: the key layout, e.g. ``timm_vit`` (see ``_layouts``).
      family: ``vit`` or ``resnet``.
      params: ``{"/"-joined name: array}``.
      leftovers: file keys no rule placed.
      config: model settings stored by ``save`` (empty for foreign files).
    """

    path: str
    container: str
    layout: str
    family: str
    params: dict[str, np.ndarray]
    leftovers: dict[str, np.ndarray]
    config: dict[str, Any]


def read(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint file of any supported format into the project's names.

    Args:
      path: the weight file; the container comes from its bytes, the layout
        from its keys.

    Returns:
      The ``Checkpoint``.

    Raises:
      CheckpointError: unreadable file or unknown layout (the message names the file).
      ImportError: a torch file without the ``torch`` extra.
    """
    path = os.fspath(path)
    container, arrays = read_arrays(path)
    try:
        conv: Converted = convert(arrays, path)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return Checkpoint(
        path, container, conv.layout, conv.family, conv.params, conv.leftovers, conv.config
    )


def _isqrt_exact(n: int) -> int | None:
    r = math.isqrt(max(n, 0))
    return r if r * r == n else None


def _split_posemb(
    pe: np.ndarray, has_cls: bool, path: str, target_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """[1, n, D] -> (prefix [1, c, D], grid [gh, gw, D]), c in {0, 1}.

    The class-token slot is recognised by the count: ``n`` or ``n - 1`` a square
    (the file's ``cls`` decides a tie), or equal to the target grid's size.
    """
    pe = pe.reshape(1, -1, pe.shape[-1])
    n = pe.shape[1]
    for c in (1, 0) if has_cls else (0, 1):
        if target_hw is not None and n - c == target_hw[0] * target_hw[1]:
            return pe[:, :c], pe[0, c:].reshape(*target_hw, -1)
    for c in (1, 0) if has_cls else (0, 1):
        g = _isqrt_exact(n - c)
        if g:
            return pe[:, :c], pe[0, c:].reshape(g, g, -1)
    raise CheckpointError(
        f"{path}: cannot infer the position-embedding grid from {n} tokens "
        "(neither a square nor a square plus one class-token slot)"
    )


def resample_posemb(
    grid: np.ndarray, new_hw: tuple[int, int], method: str = "linear"
) -> np.ndarray:
    """Resamples a position-embedding grid [gh, gw, D] -> [nh, nw, D].

    Args:
      grid: [gh, gw, D] embeddings of the patch positions.
      new_hw: the target grid (nh, nw).
      method: ``"linear"``: half-pixel bilinear without antialiasing, as timm
        loads ``.npz`` weights (``F.interpolate(mode="bilinear",
        antialias=False)``); ``"zoom"``: corner-aligned bilinear, as
        ``scipy.ndimage.zoom(order=1)`` (the authors' and vit_jax's loaders).

    Returns:
      [nh, nw, D] float32.
    """
    grid = np.asarray(grid, np.float32)
    if tuple(grid.shape[:2]) == tuple(new_hw):
        return grid
    if method == "linear":
        shape = (*new_hw, grid.shape[-1])
        return np.asarray(jax.image.resize(grid, shape, method="linear", antialias=False))
    if method == "zoom":
        for axis, n in enumerate(new_hw):
            grid = _zoom_axis(grid, n, axis)
        return grid
    raise ValueError(f"method must be 'linear' or 'zoom', got {method!r}")


def _zoom_axis(x: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Corner-aligned linear resampling of ``x`` along ``axis`` to ``n`` samples."""
    m = x.shape[axis]
    pos = np.zeros(n) if m == 1 or n == 1 else np.arange(n) * (m - 1) / (n - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, m - 1)
    hi = np.minimum(lo + 1, m - 1)
    w = (pos - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n
    w = w.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _adapt_posemb(
    ckpt: Checkpoint,
    params: dict[str, np.ndarray],
    target: Mapping[str, Any],
    target_hw: tuple[int, int] | None,
    method: str,
) -> None:
    """Fits the position embedding (grid and class-token slot) to the model, in place."""
    if POSEMB not in params or POSEMB not in target or target_hw is None:
        return
    want_c = int(target[POSEMB].shape[1]) - target_hw[0] * target_hw[1]
    prefix, grid = _split_posemb(params[POSEMB], "cls" in params, ckpt.path, target_hw)
    if want_c not in (0, 1):
        return  # leave it for the shape check to report
    if tuple(grid.shape[:2]) != target_hw:
        log.info(
            "%s: resampling position embeddings %s -> %s", ckpt.path, grid.shape[:2], target_hw
        )
    grid = resample_posemb(grid, target_hw, method).reshape(1, -1, grid.shape[-1])
    if want_c and not prefix.shape[1]:
        # The file's class token had no position (big_vision, timm no_embed_class): a zero slot.
        prefix = np.zeros((1, 1, grid.shape[-1]), np.float32)
    params[POSEMB] = np.concatenate([prefix[:, :want_c], grid], axis=1)
    if not want_c and "cls" in params and "cls" not in target:
        log.info("%s: the model has no class token; dropping the file's 'cls'", ckpt.path)
        del params["cls"]


def _split_heads(params: dict[str, np.ndarray], target: Mapping[str, Any]) -> None:
    """Reshapes head-fused attention weights (torch layouts) to the model's heads, in place."""
    for key, value in list(params.items()):
        if not _MHA.fullmatch(key) or key not in target:
            continue
        shape = tuple(target[key].shape)
        fused = value.ndim == (2 if key.endswith("kernel") else 1)
        if fused and value.shape != shape and value.size == math.prod(shape):
            params[key] = value.reshape(shape)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def merge(
    ckpt: Checkpoint,
    target: Mapping[str, Any],
    *,
    dont_load: Sequence[str] = (),
    target_hw: tuple[int, int] | None = None,
    posemb_method: str = "linear",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fits a checkpoint to a model's parameter shapes, or fails with every mismatch.

    Args:
      ckpt: from ``read``.
      target: ``{"/"-joined name: array or ShapeDtypeStruct}`` of the model.
      dont_load: regular expressions (``re.fullmatch`` on the "/"-joined
        name, or on the file's own key for keys no rule placed); matching
        parameters keep their initial values and matching file keys are
        ignored.
      target_hw: the model's token grid, for the position embedding.
      posemb_method: see ``resample_posemb``.

    Returns:
      ``(loaded, keep_init)``: the arrays to load, and the names that keep
      their initial values.

    Raises:
      CheckpointError: listing the missing, unexpected and mis-shaped keys and
        naming the file.
    """
    params = dict(ckpt.params)
    _adapt_posemb(ckpt, params, target, target_hw, posemb_method)
    _split_heads(params, target)
    keep_init = sorted(k for k in target if _matches(k, dont_load))
    missing = sorted(k for k in target if k not in params and k not in keep_init)
    unexpected = sorted(k for k in params if k not in target and not _matches(k, dont_load))
    unexpected += sorted(f"{k} (file key)" for k in ckpt.leftovers if not _matches(k, dont_load))
    misshaped = sorted(
        f"{k}: file {tuple(params[k].shape)}, model {tuple(target[k].shape)}"
        for k in target
        if k in params and k not in keep_init and tuple(params[k].shape) != tuple(target[k].shape)
    )
    if missing or unexpected or misshaped:
        raise CheckpointError(_mismatch_message(ckpt, missing, unexpected, misshaped))
    loaded = {k: params[k] for k in target if k not in keep_init}
    return loaded, keep_init


def _mismatch_message(
    ckpt: Checkpoint, missing: list[str], unexpected: list[str], misshaped: list[str]
) -> str:
    def block(title: str, items: list[str]) -> str:
        shown = "\n    ".join(items[:40]) + (
            f"\n    ... {len(items) - 40} more" if len(items) > 40 else ""
        )
        return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

    return (
        f"{ckpt.path} ({ckpt.layout} layout, {ckpt.container}) does not fit the model:"
        + block("missing from the file", missing)
        + block("unexpected in the file", unexpected)
        + block("mis-shaped", misshaped)
        + "\n  Pass dont_load=[regex, ...] to keep initial values for new parameters "
        "(e.g. 'head/.*') and ignore file keys, or build the model with model_from(path)."
    )


def _image_shape(model: nn.Module, ckpt: Checkpoint, image_size: Any) -> tuple[int, int, int, int]:
    if image_size is None:
        if isinstance(model, ViT) and POSEMB in ckpt.params:
            hw = _split_posemb(ckpt.params[POSEMB], "cls" in ckpt.params, ckpt.path)[1].shape[:2]
            return (1, hw[0] * model.patch_size[0], hw[1] * model.patch_size[1], 3)
        return (1, 64, 64, 3)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return (1, int(h), int(w), 3)


def load(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    image_size: int | tuple[int, int] | None = None,
    dont_load: Sequence[str] = (),
    init_variables: Mapping[str, Any] | None = None,
    rng: jax.Array | None = None,
    posemb_method: str = "linear",
) -> dict[str, Any]:
    """Loads a checkpoint file of any supported format into ``model``'s variables.

    Args:
      path: the weight file; its format is detected from its bytes and keys.
      model: a ``ViT`` or ``ResNet`` (e.g. from ``model_from``).
      image_size: input size the model will see (int or (H, W)); sets the
        ViT's position-embedding grid (the file's is resampled to it).
        Default: the file's own grid.
      dont_load: regexes of parameters to keep from initialisation and file
        keys to ignore (see ``merge``), e.g. ``("head/.*",)`` for a new head.
      init_variables: initial variables to merge into; default: ``model.init``
        with ``rng`` when ``dont_load`` keeps anything (else shapes only).
      rng: PRNG key for that initialisation (default ``PRNGKey(0)``).
      posemb_method: ``"linear"`` or ``"zoom"`` (see ``resample_posemb``).

    Returns:
      ``{"params": ...}`` for ``model.apply``, float32.

    Raises:
      CheckpointError: unreadable file, a checkpoint of the other model family,
        or keys that do not fit (all listed, with the file's name).
    """
    ckpt = read(path)
    family = "vit" if isinstance(model, ViT) else "resnet" if isinstance(model, ResNet) else None
    if family != ckpt.family:
        raise CheckpointError(
            f"{ckpt.path}: holds a {ckpt.family} ({ckpt.layout} layout) but the model is "
            f"{type(model).__name__}"
        )
    shape = _image_shape(model, ckpt, image_size)
    images = jnp.zeros(shape, jnp.float32)
    if init_variables is None:
        init_variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    target = traverse_util.flatten_dict(dict(init_variables["params"]), sep="/")
    target_hw = model.grid(shape) if family == "vit" else None
    loaded, keep_init = merge(
        ckpt, target, dont_load=dont_load, target_hw=target_hw, posemb_method=posemb_method
    )
    if keep_init and isinstance(next(iter(target.values())), jax.ShapeDtypeStruct):
        rng = jax.random.PRNGKey(0) if rng is None else rng
        init_variables = _jitted_init(model)(rng, images)
        target = traverse_util.flatten_dict(dict(init_variables["params"]), sep="/")
    flat = {
        k: jnp.asarray(loaded[k], jnp.float32) if k in loaded else jnp.asarray(target[k])
        for k in target
    }
    return {"params": traverse_util.unflatten_dict(flat, sep="/")}


@functools.lru_cache(maxsize=8)
def _jitted_init(model: nn.Module):
    """``jax.jit(model.init)``, compiled once per model configuration."""
    return jax.jit(model.init)


def _vit_spec(ckpt: Checkpoint) -> dict[str, Any]:
    p = ckpt.params
    if "embedding/kernel" not in p:
        raise CheckpointError(f"{ckpt.path}: no patch embedding ('embedding/kernel')")
    kernel = p["embedding/kernel"]
    depth = len({m.group(1) for k in p if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    spec: dict[str, Any] = dict(
        patch_size=tuple(int(d) for d in kernel.shape[:2]),
        width=int(kernel.shape[-1]),
        depth=depth,
        class_token="cls" in p,
    )
    dense0 = p.get("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel")
    if dense0 is not None:
        spec["mlp_dim"] = int(dense0.shape[-1])
    query = p.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    if query is not None and query.ndim == 3:
        spec["num_heads"] = int(query.shape[1])
    if "head/kernel" in p:
        spec["proj_dim"] = int(p["head/kernel"].shape[-1])
    if ckpt.layout == "authors_vit":
        # The paper's model: the class token is dropped after the position embedding.
        spec.update(keep_class_token=False, pool_type="gap")
    else:
        spec["pool_type"] = "tok" if spec["class_token"] else "gap"
    return spec


def _resnet_spec(ckpt: Checkpoint) -> dict[str, Any]:
    p = ckpt.params
    root = p.get("root_block/standardized_conv2d/kernel")
    if root is None:
        raise CheckpointError(f"{ckpt.path}: no root convolution")
    units: dict[int, set[int]] = {}
    for k in p:
        if m := re.match(r"block(\d+)/unit(\d+)/", k):
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    spec: dict[str, Any] = dict(
        width=int(root.shape[-1]),
        block_sizes=tuple(len(units[s]) for s in sorted(units)),
        proj_dim=int(p["head/conv2d/kernel"].shape[-1]) if "head/conv2d/kernel" in p else None,
    )
    return spec


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Says what a checkpoint file holds, without building a model.

    Args:
      path: the weight file.

    Returns:
      e.g. ``{"container": "npz", "layout": "vit_npz", "family": "vit",
      "spec": {...}, "grid": (14, 14), "leftovers": [...]}``: the container,
      the key layout, the model family, the settings the shapes determine (plus
      any stored by ``save``), the position grid (ViT) and the file keys no
      rule placed.
    """
    ckpt = read(path)
    out: dict[str, Any] = dict(container=ckpt.container, layout=ckpt.layout, family=ckpt.family)
    if ckpt.family == "vit":
        out["spec"] = {**_vit_spec(ckpt), **ckpt.config}
        if POSEMB in ckpt.params:
            hw = _split_posemb(ckpt.params[POSEMB], "cls" in ckpt.params, ckpt.path)[1].shape[:2]
            out["grid"] = tuple(int(d) for d in hw)
    else:
        out["spec"] = {**_resnet_spec(ckpt), **ckpt.config}
    out["leftovers"] = sorted(ckpt.leftovers)
    return out


def model_from(path: str | os.PathLike, **known: Any) -> nn.Module:
    """Builds the ``ViT`` or ``ResNet`` that a checkpoint file's shapes describe.

    The shapes give width, depth, MLP size, patch size, projection size
    (``head``), class token (ViT) or stem width, units per stage and head size
    (ResNet). Everything else comes from ``known`` (which also overrides the
    file), from settings stored by ``save``, or defaults: ``num_heads`` from
    the standard table for the width (768 -> 12, ...) when the file's
    attention is head-fused; ``pool_type="tok"`` with a class token (``"gap"``
    without), except the authors' model (class token dropped, ``"gap"``).

    Args:
      path: the weight file.
      **known: ``ViT``/``ResNet`` attributes, e.g. ``num_heads=4``,
        ``proj_dim=None`` or ``num_groups=8``.

    Returns:
      The model (no parameters; load them with ``load``).

    Raises:
      CheckpointError: unreadable file, or ``num_heads`` not determined.
    """
    ckpt = read(path)
    if ckpt.family == "resnet":
        return ResNet(**{**_resnet_spec(ckpt), **ckpt.config, **known})
    spec = {**_vit_spec(ckpt), **ckpt.config, **known}
    if "num_heads" not in spec:
        if spec["width"] not in _STANDARD_HEADS:
            raise CheckpointError(
                f"{ckpt.path}: the number of heads is not determined by this file's shapes "
                f"(width {spec['width']}); pass it, e.g. model_from(path, num_heads=...)"
            )
        spec["num_heads"] = _STANDARD_HEADS[spec["width"]]
    return ViT(**spec)


_VIT_CONFIG = ("num_heads", "pool_type", "class_token", "keep_class_token", "proj_dim")
_RESNET_CONFIG = ("num_groups", "gn_eps", "std_eps", "proj_dim")


def save(path: str | os.PathLike, variables: Mapping[str, Any], model: nn.Module) -> None:
    """Writes variables as the project's ``.npz``.

    A ViT is written in the original ViT / AugReg layout, a ResNet in the BiT
    layout (both readable by other tools, e.g. timm), plus the model settings
    the shapes do not determine, as JSON under the key ``pairviz_config``.

    Args:
      path: the output file.
      variables: ``{"params": ...}`` of ``model``.
      model: the ``ViT`` or ``ResNet`` they belong to.
    """
    flat = traverse_util.flatten_dict(dict(variables["params"]), sep="/")
    arrays = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    if isinstance(model, ResNet):
        arrays = {_to_bit_name(k): v for k, v in arrays.items()}
        names = _RESNET_CONFIG
    elif isinstance(model, ViT):
        names = _VIT_CONFIG
    else:
        raise TypeError(f"save() supports ViT and ResNet, got {type(model).__name__}")
    config = {n: getattr(model, n) for n in names}
    arrays[CONFIG_KEY] = np.array(json.dumps(config))
    write_npz(path, arrays)


def _to_bit_name(key: str) -> str:
    if key.endswith("group_norm/scale"):
        key = key[: -len("scale")] + "gamma"
    elif key.endswith("group_norm/bias"):
        key = key[: -len("bias")] + "beta"
    return "resnet/" + key


def convert_file(
    src: str | os.PathLike, dst: str | os.PathLike, **known: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Converts any supported file (e.g. the authors' ``.pth``) to the project's ``.npz``.

    A one-time step: afterwards neither torch nor ``num_heads`` is needed.

    Args:
      src: the weight file.
      dst: the ``.npz`` to write.
      **known: passed to ``model_from``.

    Returns:
      ``(model, variables)``.
    """
    model = model_from(src, **known)
    variables = load(src, model)
    save(dst, variables, model)
    return model, variables

"""The public calls: read, load, model_from, describe, save, convert_file."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pairviz_jax.checkpoints import _folder, _io, _spec
from pairviz_jax.checkpoints._interp import METHODS
from pairviz_jax.checkpoints._io import CheckpointError, read_arrays, write_npz
from pairviz_jax.checkpoints._merge import file_grid, merge
from pairviz_jax.checkpoints.formats import CONFIG_KEY, META_KEY, Converted, convert
from pairviz_jax.checkpoints.formats._common import LayoutError
from pairviz_jax.models._shapes import abstract_variables, jitted_init
from pairviz_jax.models.resnet import ResNet
from pairviz_jax.models.vit import ViT


@dataclasses.dataclass
class Checkpoint:
    """A weight file (or Hugging Face folder) read and renamed to the project's names.

    Attributes:
      path: the file or folder.
      container: ``npz``, ``safetensors`` or ``torch`` (of the weight file).
      layout: the key layout, e.g. ``timm_vit``, ``dinov2_hub``, ``hf_clip``.
      family: ``vit`` or ``resnet`` (the architecture).
      params: ``{"/"-joined name: array}``.
      leftovers: file keys no rule placed.
      config: model settings stored by ``save`` (empty for foreign files).
      model_family: ``dinov2``, ``clip``, ``siglip``, ``deit``, ``vit``,
        ``authors`` or ``bit``.
      facts: model settings the format or config.json fixes beyond the shapes.
      assumed: names in ``facts`` that are documented defaults, not in the file.
      dropped: file keys deliberately not loaded -> why.
      posemb_prefix: token slots in front of the position grid (None: inferred).
      interpolation: the family's position-embedding resampling (``_interp.METHODS``).
      normalization: a ``NORMALIZATIONS`` name, ``(mean, std)`` or None.
      native_size: (H, W) from config.json, if any.
      files: the weight files read.
    """

    path: str
    container: str
    layout: str
    family: str
    params: dict[str, np.ndarray]
    leftovers: dict[str, np.ndarray]
    config: dict[str, Any]
    model_family: str = "vit"
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    assumed: tuple[str, ...] = ()
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)
    posemb_prefix: int | None = None
    interpolation: str = "linear"
    normalization: Any = None
    native_size: tuple[int, int] | None = None
    files: tuple[str, ...] = ()


Source = Union[str, "os.PathLike[str]", Checkpoint]


def sniff(path: str | os.PathLike) -> str:
    """Names the container of a weight file from its first bytes (``npz|safetensors|torch``).

    A Hugging Face folder gives its weight file's container.

    Raises:
      CheckpointError: a missing, empty, truncated or foreign file, or a folder
        without config.json or weights; the message names it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _folder.sniff_folder(path)
    return _io.sniff(path)


def read(path: Source) -> Checkpoint:
    """Reads a checkpoint file or Hugging Face folder into the project's names.

    Args:
      path: a weight file (container from its bytes, layout from its keys), a
        Hugging Face folder (config.json + weights), or a ``Checkpoint``
        (returned as is).

    Returns:
      The ``Checkpoint``.

    Raises:
      CheckpointError: unreadable file or folder, unknown layout, or a
        config.json that contradicts the weights (the message names the path).
      ImportError: a torch file without the ``torch`` extra.
    """
    if isinstance(path, Checkpoint):
        return path
    path = os.fspath(path)
    hf_config = preprocessor = None
    if os.path.isdir(path):
        container, arrays, hf_config, preprocessor, files = _folder.read_folder(path)
    else:
        (container, arrays), files = read_arrays(path), [path]
    try:
        conv: Converted = convert(arrays, hf_config, preprocessor)
    except LayoutError as e:
        raise CheckpointError(f"{path}: {e}") from None
    fields = {f.name: getattr(conv, f.name) for f in dataclasses.fields(Converted)}
    fields.pop("params")
    return Checkpoint(
        path=path,
        container=container,
        params=conv.params,
        files=tuple(files),
        **fields,
    )


def _image_shape(model: nn.Module, ckpt: Checkpoint, image_size: Any) -> tuple[int, int, int, int]:
    if image_size is None:
        hw = file_grid(ckpt) if isinstance(model, ViT) else None
        if hw is not None:
            return (1, hw[0] * model.patch_size[0], hw[1] * model.patch_size[1], 3)
        return (1, 64, 64, 3)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return (1, int(h), int(w), 3)


def load(
    path: Source,
    model: nn.Module,
    *,
    image_size: int | tuple[int, int] | None = None,
    dont_load: Sequence[str] = (),
    init_variables: Mapping[str, Any] | None = None,
    rng: jax.Array | None = None,
    posemb_method: str | None = None,
) -> dict[str, Any]:
    """Loads a checkpoint file of any supported format into ``model``'s variables.

    Args:
      path: the weight file or Hugging Face folder (or a ``Checkpoint``).
      model: a ``ViT`` or ``ResNet`` (e.g. from ``model_from``).
      image_size: input size the model will see (int or (H, W)); sets the
        ViT's position-embedding grid (the file's is resampled to it).
        Default: the file's own grid.
      dont_load: regexes of parameters to keep from initialisation and file
        keys to ignore (see ``merge``), e.g. ``("head/.*",)`` for a new head.
      init_variables: initial variables to merge into; default: ``model.init``
        with ``rng`` when ``dont_load`` keeps anything (else shapes only).
      rng: PRNG key for that initialisation (default ``PRNGKey(0)``).
      posemb_method: how to resample the position embedding: one of
        ``linear``, ``zoom``, ``bicubic``, ``bicubic_antialias``,
        ``bicubic_offset`` (see ``_interp``); None: the file's family's own
        (``describe(path)["interpolation"]``).

    Returns:
      ``{"params": ...}`` for ``model.apply``, float32.

    Raises:
      CheckpointError: unreadable file, a checkpoint of the other model family,
        or keys that do not fit (first line: what, with the file's name; then
        every key).
    """
    if posemb_method is not None and posemb_method not in METHODS:
        raise ValueError(f"posemb_method must be one of {METHODS} or None, got {posemb_method!r}")
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
        init_variables = abstract_variables(model, shape)
    target = traverse_util.flatten_dict(dict(init_variables["params"]), sep="/")
    target_hw = model.grid(shape) if family == "vit" else None
    loaded, keep_init = merge(
        ckpt,
        target,
        dont_load=dont_load,
        target_hw=target_hw,
        posemb_method=posemb_method,
        model=model,
    )
    if keep_init and isinstance(next(iter(target.values())), jax.ShapeDtypeStruct):
        rng = jax.random.PRNGKey(0) if rng is None else rng
        init_variables = jitted_init(model)(rng, images)
        target = traverse_util.flatten_dict(dict(init_variables["params"]), sep="/")
    flat = {
        k: jnp.asarray(loaded[k], jnp.float32) if k in loaded else jnp.asarray(target[k])
        for k in target
    }
    return {"params": traverse_util.unflatten_dict(flat, sep="/")}


def describe(path: Source) -> dict[str, Any]:
    """Says what a checkpoint holds, without building a model.

    Args:
      path: the weight file or Hugging Face folder (or a ``Checkpoint``).

    Returns:
      A dict: ``container``, ``layout``, ``family`` (``vit``/``resnet``),
      ``model_family`` (``dinov2``, ``clip``, ``siglip``, ``deit``, ``vit``,
      ``authors``, ``bit``), ``spec`` (the settings ``model_from`` would use,
      ``num_heads`` only when known), ``assumed`` (settings that are a
      documented default, not in the file), ``grid`` (ViT position grid),
      ``image_size`` (native input size), ``interpolation`` (the family's
      position-embedding resampling), ``normalization`` (``{"name", "mean",
      "std"}`` of [0, 1] RGB, or None when the family does not fix it),
      ``dropped`` (file keys not loaded, grouped by reason), ``leftovers``
      (file keys no rule placed) and ``files``.
    """
    ckpt = read(path)
    out: dict[str, Any] = dict(
        container=ckpt.container,
        layout=ckpt.layout,
        family=ckpt.family,
        model_family=ckpt.model_family,
    )
    if ckpt.family == "vit":
        spec = _spec.vit_spec(ckpt)
        out["spec"] = spec
        grid = file_grid(ckpt)
        if grid is not None:
            out["grid"] = grid
        size = ckpt.native_size or (
            (grid[0] * spec["patch_size"][0], grid[1] * spec["patch_size"][1]) if grid else None
        )
        out["image_size"] = tuple(size) if size else None
        out["interpolation"] = ckpt.interpolation
    else:
        out["spec"] = _spec.resnet_spec(ckpt)
    out["assumed"] = list(ckpt.assumed)
    out["normalization"] = _spec.normalization(ckpt)
    reasons: dict[str, list[str]] = {}
    for key, why in ckpt.dropped.items():
        reasons.setdefault(why, []).append(key)
    out["dropped"] = {why: len(keys) for why, keys in reasons.items()}
    out["leftovers"] = sorted(ckpt.leftovers)
    out["files"] = list(ckpt.files)
    return out


def model_from(path: Source, **known: Any) -> nn.Module:
    """Builds the ``ViT`` or ``ResNet`` that a checkpoint describes.

    The shapes give width, depth, MLP size, patch size, projection size
    (``head``), class and distillation tokens, registers, layer scale,
    ``ln_pre``, SwiGLU and a MAP head (ViT), or stem width, units per stage and
    head size (ResNet). The family adds what it fixes (DINOv2: LayerNorm eps
    1e-6, class-token pooling; CLIP: ``ln_pre``, eps 1e-5, projection without
    bias; SigLIP: tanh GELU, MAP pooling; ...), a Hugging Face folder's
    config.json adds heads, eps and activation, and settings stored by
    ``save`` follow. ``known`` overrides all of them. ``num_heads`` not given
    anywhere comes from the standard table for the width (768 -> 12, ...).

    Args:
      path: the weight file or Hugging Face folder (or a ``Checkpoint``).
      **known: ``ViT``/``ResNet`` attributes, e.g. ``num_heads=4``,
        ``pool_type="gap"``, ``mlp_act="quick_gelu"`` or ``num_groups=8``.

    Returns:
      The model (no parameters; load them with ``load``).

    Raises:
      CheckpointError: unreadable file, or ``num_heads`` not determined.
    """
    ckpt = read(path)
    if ckpt.family == "resnet":
        return ResNet(**{**_spec.resnet_spec(ckpt), **known})
    spec = _spec.with_heads({**_spec.vit_spec(ckpt), **known}, ckpt.path)
    return ViT(**spec)


_VIT_CONFIG = (
    "num_heads",
    "pool_type",
    "class_token",
    "keep_class_token",
    "proj_dim",
    "distill_token",
    "num_registers",
    "layer_scale",
    "mlp_act",
    "ln_pre",
    "layer_norm_eps",
    "proj_bias",
)
_RESNET_CONFIG = ("num_groups", "gn_eps", "std_eps", "proj_dim")


def save(
    path: str | os.PathLike,
    variables: Mapping[str, Any],
    model: nn.Module,
    *,
    source: Source | None = None,
) -> None:
    """Writes variables as the project's ``.npz``.

    A ViT is written in the original ViT / AugReg layout, a ResNet in the BiT
    layout (both readable by other tools, e.g. timm), plus the model settings
    the shapes do not determine, as JSON under the key ``pairviz_config``.

    Args:
      path: the output file.
      variables: ``{"params": ...}`` of ``model``.
      model: the ``ViT`` or ``ResNet`` they belong to.
      source: the checkpoint the variables came from: its family, position
        resampling convention and normalisation are kept (``pairviz_meta``).
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
    if source is not None:
        src = read(source)
        meta = dict(
            model_family=src.model_family,
            interpolation=src.interpolation,
            normalization=src.normalization,
        )
        arrays[META_KEY] = np.array(json.dumps(meta))
    write_npz(path, arrays)


def _to_bit_name(key: str) -> str:
    if key.endswith("group_norm/scale"):
        key = key[: -len("scale")] + "gamma"
    elif key.endswith("group_norm/bias"):
        key = key[: -len("bias")] + "beta"
    return "resnet/" + key


def convert_file(
    src: Source, dst: str | os.PathLike, **known: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Converts any supported file or folder (e.g. the authors' ``.pth``) to the project's ``.npz``.

    A one-time step: afterwards neither torch nor ``num_heads`` is needed, and
    the family's resampling convention and normalisation travel along.

    Args:
      src: the weight file or Hugging Face folder.
      dst: the ``.npz`` to write.
      **known: passed to ``model_from``.

    Returns:
      ``(model, variables)``.
    """
    ckpt = read(src)
    model = model_from(ckpt, **known)
    variables = load(ckpt, model)
    save(dst, variables, model, source=ckpt)
    return model, variables

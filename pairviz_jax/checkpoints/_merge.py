"""Fitting a read checkpoint to a model: position embeddings, head splits, key checks.

``merge`` resamples the position grid to the model's (``_interp``, the file's
convention unless told otherwise), keeps, adds (zeros: the token had no
position) or drops the class/distillation-token slots, reshapes torch's
head-fused attention weights to the model's heads, and compares every name
and shape. Anything that does not fit fails with one line saying what (the
file's registers against the model's, a missing projection or pooling head,
...) followed by every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pairviz_jax.checkpoints._interp import resample_posemb
from pairviz_jax.checkpoints._io import CheckpointError
from pairviz_jax.checkpoints.formats import POSEMB, REG

log = logging.getLogger("pairviz_jax.checkpoints")

_MHA = re.compile(r".*/MultiHeadDotProductAttention_\d/(query|key|value|out)/(kernel|bias)")
_LS1 = "Transformer/encoderblock_0/ls1"
_LN_PRE = "Transformer/ln_pre/scale"
_DENSE = "Transformer/encoderblock_0/MlpBlock_3/Dense_{}/kernel"


def _isqrt_exact(n: int) -> int | None:
    r = math.isqrt(max(n, 0))
    return r if r * r == n else None


def split_posemb(
    pe: np.ndarray,
    path: str,
    *,
    prefix: int | None = None,
    max_prefix: int = 1,
    target_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """[1, n, D] -> (prefix slots [1, c, D], grid [gh, gw, D]).

    Args:
      pe: the position embedding (any leading shape that flattens to [n, D]).
      path: the file, for messages.
      prefix: the slot count when the layout knows it; otherwise the count
        decides: ``n - c`` a square, or the target grid's size, trying
        ``c = max_prefix, ..., 0`` (``0, 1`` when ``max_prefix`` is 0).
      max_prefix: the class and distillation tokens the file has.
      target_hw: the model's grid, accepted even when not square.

    Raises:
      CheckpointError: no slot count gives a grid.
    """
    pe = pe.reshape(1, -1, pe.shape[-1])
    n = pe.shape[1]
    if prefix is not None:
        candidates = [prefix]
    else:
        candidates = list(range(max_prefix, -1, -1)) if max_prefix else [0, 1]
    if target_hw is not None:
        for c in candidates:
            if n - c == target_hw[0] * target_hw[1]:
                return pe[:, :c], pe[0, c:].reshape(*target_hw, -1)
    for c in candidates:
        g = _isqrt_exact(n - c)
        if g:
            return pe[:, :c], pe[0, c:].reshape(g, g, -1)
    raise CheckpointError(
        f"{path}: cannot infer the position-embedding grid from {n} tokens "
        f"(neither a square nor a square plus {' or '.join(map(str, candidates))} token slots)"
    )


def _file_prefix_max(params: Mapping[str, Any]) -> int:
    return int("cls" in params) + int("dist" in params)


def file_grid(ckpt) -> tuple[int, int] | None:
    """The position grid (gh, gw) of a ViT checkpoint, or None without a position embedding."""
    if POSEMB not in ckpt.params:
        return None
    _, grid = split_posemb(
        ckpt.params[POSEMB],
        ckpt.path,
        prefix=ckpt.posemb_prefix,
        max_prefix=_file_prefix_max(ckpt.params),
    )
    return int(grid.shape[0]), int(grid.shape[1])


def _adapt_posemb(
    ckpt,
    params: dict[str, np.ndarray],
    target: Mapping[str, Any],
    target_hw: tuple[int, int] | None,
    method: str,
) -> None:
    """Fits the position embedding (grid and token slots) to the model, in place."""
    if POSEMB not in params or POSEMB not in target or target_hw is None:
        return
    want_c = int(target[POSEMB].shape[1]) - target_hw[0] * target_hw[1]
    prefix, grid = split_posemb(
        params[POSEMB],
        ckpt.path,
        prefix=ckpt.posemb_prefix,
        max_prefix=_file_prefix_max(params),
        target_hw=target_hw,
    )
    c = prefix.shape[1]
    if want_c not in (0, 1, 2) or (want_c > c > 0):
        return  # leave it for the shape check to report
    if tuple(grid.shape[:2]) != target_hw:
        log.info(
            "%s: resampling position embeddings %s -> %s (%s)",
            ckpt.path,
            tuple(grid.shape[:2]),
            target_hw,
            method,
        )
    grid = resample_posemb(grid, target_hw, method).reshape(1, -1, grid.shape[-1])
    if want_c and not c:
        # The file's tokens had no position (big_vision, timm no_embed_class): zero slots.
        prefix = np.zeros((1, want_c, grid.shape[-1]), np.float32)
    params[POSEMB] = np.concatenate([prefix[:, :want_c], grid], axis=1)
    if not want_c:
        for token in ("cls", "dist"):
            if token in params and token not in target:
                log.info("%s: the model has no %r token; dropping the file's", ckpt.path, token)
                del params[token]


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


def diagnose(ckpt, model, dont_load: Sequence[str] = ()) -> str | None:
    """One line naming the file and the first structural mismatch with a ViT, or None."""
    p, path = ckpt.params, ckpt.path
    kept = lambda name: not _matches(name, dont_load)  # noqa: E731
    family = ckpt.model_family
    what = f"this {family} file" if family not in ("vit", "authors") else "the file"
    r_file = int(p[REG].shape[1]) if REG in p else 0
    r_model = int(getattr(model, "num_registers", 0) or 0)
    if r_file != r_model and kept(REG):
        if r_file:
            return (
                f"{path}: {what} has {r_file} register tokens but the model has "
                f"num_registers={r_model}; build it with checkpoints.model_from(path) or pass "
                f"num_registers={r_file}"
            )
        return f"{path}: the model has {r_model} register tokens but {what} has none"
    if ("dist" in p) != bool(model.distill_token) and kept("dist"):
        if "dist" in p:
            return (
                f"{path}: {what} has a distillation token (DeiT) but the model has "
                "distill_token=False; pass distill_token=True"
            )
        return f"{path}: the model has a distillation token but {what} has none"
    if "cls" not in p and model.class_token and kept("cls"):
        return f"{path}: the model has a class token but {what} has none; pass class_token=False"
    ls_file = _LS1 in p
    if ls_file != (model.layer_scale is not None) and kept(_LS1):
        if ls_file:
            return (
                f"{path}: {what} has layer scales (ls1, ls2) but the model has none; "
                "pass layer_scale=1.0"
            )
        return f"{path}: the model has layer scales but {what} has none; pass layer_scale=None"
    if (_LN_PRE in p) != bool(model.ln_pre) and kept(_LN_PRE):
        has_it = "has" if _LN_PRE in p else "has no"
        return (
            f"{path}: {what} {has_it} a pre-encoder LayerNorm (ln_pre) but the model has "
            f"ln_pre={model.ln_pre}"
        )
    d0, d1 = p.get(_DENSE.format(0)), p.get(_DENSE.format(1))
    if d0 is not None and d1 is not None:
        swiglu = d0.shape[-1] == 2 * d1.shape[0]
        if swiglu != (model.mlp_act == "swiglu"):
            if swiglu:
                return (
                    f"{path}: {what} has a SwiGLU MLP but the model has "
                    f"mlp_act={model.mlp_act!r}; pass mlp_act='swiglu'"
                )
            return f"{path}: the model has a SwiGLU MLP but {what} has a plain one"
    if model.proj_dim and "head/kernel" not in p and kept("head/kernel"):
        if family == "clip":
            return (
                f"{path}: {what} has no projection (OpenAI/OpenCLIP 'visual.proj', Hugging Face "
                f"'visual_projection'), but the model asks for proj_dim={model.proj_dim}: use "
                f"proj_dim=None for the width-{model.width} class token, or dont_load=['head/.*'] "
                "for a new projection"
            )
        return (
            f"{path}: {what} has no projection head ('head/kernel') but the model asks for "
            f"proj_dim={model.proj_dim}; use proj_dim=None, or dont_load=['head/.*'] for a new one"
        )
    if "head/kernel" in p and not model.proj_dim and kept("head/kernel"):
        return (
            f"{path}: {what} has a projection or classifier 'head' "
            f"({p['head/kernel'].shape[-1]} outputs) but the model has proj_dim=None; pass "
            f"proj_dim={p['head/kernel'].shape[-1]} or dont_load=['head/.*'] to ignore it"
        )
    has_map = "MAPHead_0/probe" in p
    if model.pool_type == "map" and not has_map and kept("MAPHead_0/probe"):
        return (
            f"{path}: pool_type='map' needs the attention-pooling head (big_vision 'MAPHead_0', "
            f"Hugging Face 'head.*') but {what} has none; use pool_type='gap', or "
            "dont_load=['MAPHead_0/.*'] to train a new head"
        )
    if has_map and model.pool_type != "map" and kept("MAPHead_0/probe"):
        return (
            f"{path}: {what} has an attention-pooling head (MAPHead_0) but the model pools with "
            f"pool_type={model.pool_type!r}; use pool_type='map', or dont_load=['MAPHead_0/.*'] "
            "to ignore the head"
        )
    return None


def merge(
    ckpt,
    target: Mapping[str, Any],
    *,
    dont_load: Sequence[str] = (),
    target_hw: tuple[int, int] | None = None,
    posemb_method: str | None = None,
    model=None,
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
      posemb_method: see ``resample_posemb``; None: the file's convention
        (``ckpt.interpolation``).
      model: the ``ViT``, for a one-line diagnosis of structural mismatches.

    Returns:
      ``(loaded, keep_init)``: the arrays to load, and the names that keep
      their initial values.

    Raises:
      CheckpointError: first line: what does not fit, naming the file; then
        the missing, unexpected and mis-shaped keys.
    """
    params = dict(ckpt.params)
    method = posemb_method or getattr(ckpt, "interpolation", "linear")
    _adapt_posemb(ckpt, params, target, target_hw, method)
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
        first = diagnose(ckpt, model, dont_load) if _is_vit(model) else None
        message = _mismatch_message(ckpt, missing, unexpected, misshaped)
        raise CheckpointError(f"{first}\n{message}" if first else message)
    loaded = {k: params[k] for k in target if k not in keep_init}
    return loaded, keep_init


def _is_vit(model) -> bool:
    return model is not None and hasattr(model, "num_registers")


def _mismatch_message(ckpt, missing: list[str], unexpected: list[str], misshaped: list[str]) -> str:
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

"""A loaded model and how to feed it; the one-line errors of everything a user points at.

:class:`LoadedModel` is what :func:`pairviz_jax.runs.load_run` and
:func:`~pairviz_jax.runs.load_weights` return: the flax module, its variables, the input
size and normalisation, and a label for figure titles that names the checkpoint step.
:class:`InputError` is bad input from the user, a one-line message naming the file or option.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax.data import preprocess
from pairviz_jax.runs.errors import InputError, one_line

__all__ = [
    "InputError",
    "LoadedModel",
    "check_image_size",
    "normalization_named",
    "one_line",
    "parse_model_options",
]


def parse_model_options(options: Sequence[str], flag: str = "--model-option") -> dict[str, Any]:
    """``["num_groups=8", "keep_class_token=False"]`` -> ``{"num_groups": 8, ...}``.

    Values are Python literals where they parse as one (numbers, booleans, tuples, None),
    else strings.

    Raises:
      InputError: an option without ``=`` (named with ``flag``).
    """
    out: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"{flag} {option}: expected KEY=VALUE, e.g. num_groups=8")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


# The input statistics of the pretrained families (pairviz_jax.checkpoints.NORMALIZATIONS).
_FAMILY_NORMALIZATION = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def normalization_named(
    name: str | None, flag: str = "--normalization"
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) for a ``preprocess.NORMALIZATION`` key, ``imagenet``, or ``none`` (x / 255)."""
    if name is None or name == "none":
        return None, None
    if name == "imagenet":
        return preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD
    if name in _FAMILY_NORMALIZATION:
        return _FAMILY_NORMALIZATION[name]
    if name not in preprocess.NORMALIZATION:
        known = ", ".join(
            ["imagenet", "none", *_FAMILY_NORMALIZATION, *sorted(preprocess.NORMALIZATION)]
        )
        raise InputError(f"{flag} {name}: unknown; expected one of {known}")
    return preprocess.NORMALIZATION[name]


def check_image_size(height: int, width: int, patch: Sequence[int], where: str) -> None:
    """The smallest image any command takes: one ``patch`` (a ViT's patch, 1 x 1 for a CNN).

    Smaller images cannot be resized to the model's input without inventing content; every
    command (``pair``, ``retrieve``, ``batch``, ...) applies this same rule.

    Raises:
      InputError: ``where: WxH pixels is smaller than one PWxPH patch of the model``.
    """
    ph, pw = (int(p) for p in patch)
    if height < ph or width < pw:
        raise InputError(
            f"{where}: {width}x{height} pixels is smaller than one {pw}x{ph} patch of the model"
        )


@dataclasses.dataclass
class LoadedModel:
    """A model ready for the explain functions, and how to feed it.

    Attributes:
      model: the flax module (``ViT`` or ``ResNet``).
      variables: ``{"params": ...}``.
      image_size: (H, W) the model takes.
      mean: per-channel mean of [0, 1] images, or None (images only scaled to [0, 1]).
      std: per-channel standard deviation, or None.
      label: a short name for figure titles, e.g. ``"demo @ step 3500"``.
      step: the checkpoint's step (runs only).
      total_steps: the step the run is configured to end at (runs only).
    """

    model: nn.Module
    variables: Any
    image_size: tuple[int, int]
    mean: Sequence[float] | None
    std: Sequence[float] | None
    label: str
    step: int | None = None
    total_steps: int | None = None

    @property
    def patch_size(self) -> tuple[int, int]:
        """The smallest image the model can take: a ViT's patch (1 x 1 for a CNN)."""
        return tuple(getattr(self.model, "patch_size", (1, 1)))

    def check_size(self, height: int, width: int, where: str) -> None:
        """:func:`check_image_size` with this model's patch."""
        check_image_size(height, width, self.patch_size, where)

    def prepare(self, images_uint8: np.ndarray) -> jax.Array:
        """uint8 [B, H, W, 3] at the model's size -> float32 normalised model input."""
        return preprocess.model_input(jnp.asarray(images_uint8), self.mean, self.std)

    def embed(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeddings [B, E] (float32, not normalised) of uint8 images at the model's size."""
        return np.asarray(explain.embed(self.model, self.variables, self.prepare(images_uint8)))

"""Models for the figures: a train.py run (``--workdir [--step]``) or a weight file (``--weights``).

:func:`load_run` reads the parameters and the config that ``train.py`` stores in each
checkpoint (``pairviz_jax.train.load_params``), rebuilds the model from the config
(``pairviz_jax.train.build_model``) and checks that every parameter has the shape the
config implies. :func:`load_weights` builds the model that an imported weight file
describes (``pairviz_jax.checkpoints.model_from``) and loads it. Either way the result is
a :class:`LoadedModel` that knows its input size and normalisation, so images are
prepared exactly as in training. Every failure is an ``InputError`` with one line that
names the directory, file or option.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pairviz_jax.data import preprocess
from pairviz_jax.plotting.images import InputError

__all__ = [
    "LoadedModel",
    "checkpoint_steps",
    "checkpoints_dir",
    "load_run",
    "load_weights",
    "normalization_named",
    "one_line",
    "parse_model_options",
]


def one_line(message: object, limit: int = 400) -> str:
    """Collapses a (possibly multi-line) message to one line of at most ``limit`` chars."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_model_options(options: Sequence[str]) -> dict[str, Any]:
    """``["num_groups=8", "keep_class_token=False"]`` -> ``{"num_groups": 8, ...}``.

    Values are Python literals where they parse as one (numbers, booleans, tuples, None),
    else strings.

    Raises:
      InputError: an option without ``=``.
    """
    import ast

    out: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"--model-option {option}: expected KEY=VALUE, e.g. num_groups=8")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def normalization_named(name: str | None) -> tuple[tuple[float, ...] | None, ...]:
    """(mean, std) for a ``preprocess.NORMALIZATION`` key, ``imagenet``, or ``none`` (x / 255)."""
    if name is None or name == "none":
        return None, None
    if name == "imagenet":
        return preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD
    if name not in preprocess.NORMALIZATION:
        known = ", ".join(["imagenet", "none", *sorted(preprocess.NORMALIZATION)])
        raise InputError(f"--normalization {name}: unknown; expected one of {known}")
    return preprocess.NORMALIZATION[name]


@dataclasses.dataclass
class LoadedModel:
    """A model ready for the explain functions, and how to feed it.

    Attributes:
      model: the flax module (``ViT`` or ``ResNet``).
      variables: ``{"params": ...}``.
      image_size: (H, W) the model takes.
      mean: per-channel mean of [0, 1] images, or None (images only scaled to [0, 1]).
      std: per-channel standard deviation, or None.
      label: a short name for figure titles, e.g. ``"demo @ step 2000"``.
      step: the checkpoint's step (runs only).
    """

    model: nn.Module
    variables: Any
    image_size: tuple[int, int]
    mean: Sequence[float] | None
    std: Sequence[float] | None
    label: str
    step: int | None = None

    @property
    def patch_size(self) -> tuple[int, int]:
        """The smallest image the model can take: a ViT's patch (1 x 1 for a CNN)."""
        return tuple(getattr(self.model, "patch_size", (1, 1)))

    def prepare(self, images_uint8: np.ndarray) -> jax.Array:
        """uint8 [B, H, W, 3] at the model's size -> float32 normalised model input."""
        x = jnp.asarray(images_uint8, jnp.float32) / 255.0
        if self.mean is not None:
            x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
        return x

    def embed(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeddings [B, E] (float32, not normalised) of uint8 images at the model's size."""
        return np.asarray(_embed_fn(self.model)(self.variables, self.prepare(images_uint8)))


@functools.lru_cache(maxsize=16)
def _embed_fn(model: nn.Module):
    return jax.jit(lambda variables, x: model.apply(variables, x)[0].astype(jnp.float32))


def checkpoints_dir(workdir: str) -> str:
    """``<workdir>/checkpoints`` (train.py's layout), or ``workdir`` itself if it holds steps."""
    sub = os.path.join(workdir, "checkpoints")
    return sub if os.path.isdir(sub) else workdir


def checkpoint_steps(workdir: str) -> list[int]:
    """The complete checkpoints of a run, ascending (orbax writes ``<step>/`` when done)."""
    directory = checkpoints_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name)
        for name in os.listdir(directory)
        if name.isdigit() and os.path.isdir(os.path.join(directory, name))
    )


@contextlib.contextmanager
def _quiet_orbax():
    """Silences orbax's read-only-manager warnings (absl logging) for the block."""
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logging.set_verbosity(absl_logging.ERROR)
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)
        absl_logger.setLevel(level)


def _shape_mismatches(params: Any, expected: Any) -> list[str]:
    have = {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params).items()}
    want = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(expected).items()}
    out = [f"{k} missing from the checkpoint" for k in sorted(want.keys() - have.keys())]
    out += [f"{k} not in the model" for k in sorted(have.keys() - want.keys())]
    out += [
        f"{k}: checkpoint {have[k]}, config {want[k]}"
        for k in sorted(want.keys() & have.keys())
        if have[k] != want[k]
    ]
    return out


def _image_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def load_run(workdir: str, step: int | None = None) -> LoadedModel:
    """Loads the model of a ``train.py`` run at its latest (or a given) checkpoint.

    Args:
      workdir: the run's ``--workdir`` (holding ``checkpoints/<step>/``).
      step: the checkpoint; default the latest.

    Returns:
      A :class:`LoadedModel` with the run's input size and normalisation.

    Raises:
      InputError: no such directory, no checkpoint, no such step, an unreadable
        checkpoint, or parameters that do not fit the model of the stored config.
    """
    from pairviz_jax.train import build_model, load_params
    from pairviz_jax.train.input import normalization

    if not os.path.isdir(workdir):
        raise InputError(f"--workdir {workdir}: no such directory")
    steps = checkpoint_steps(workdir)
    directory = checkpoints_dir(workdir)
    if not steps:
        raise InputError(
            f"--workdir {workdir}: no checkpoints (expected {directory}/<step>/ as train.py "
            "writes them)"
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise InputError(
            f"--step {step}: no such checkpoint in {directory}; available: "
            + ", ".join(map(str, steps))
        )
    where = os.path.join(directory, str(step))
    try:
        with _quiet_orbax():
            params, config = load_params(directory, step)
    except Exception as e:  # orbax raises many types for damaged or foreign directories
        raise InputError(f"{where}: cannot read the checkpoint ({one_line(e, 200)})") from None
    try:
        import ml_collections

        cfg = ml_collections.ConfigDict(config)
        model = build_model(cfg.model)
        size = _image_size(cfg.input.image_size)
        mean, std = normalization(cfg)
    except Exception as e:
        raise InputError(
            f"{where}: the stored config cannot build a model ({one_line(e)})"
        ) from None
    model_params = params.get("model") if isinstance(params, dict) else None
    if model_params is None:
        raise InputError(f"{where}: no model parameters in the checkpoint")
    dummy = jnp.zeros((1, *size, 3), jnp.float32)
    try:
        expected = jax.eval_shape(model.init, jax.random.key(0), dummy)["params"]
    except Exception as e:
        raise InputError(
            f"{where}: the stored config cannot build a model ({one_line(e)})"
        ) from None
    bad = _shape_mismatches(model_params, expected)
    if bad:
        variant = cfg.model.get("variant")
        raise InputError(
            f"{where}: the checkpoint does not match its config (model {cfg.model.name} "
            f"{variant}, {size[0]}x{size[1]} px): {len(bad)} mismatched parameters, first: {bad[0]}"
        )
    variables = {"params": jax.tree.map(jnp.asarray, model_params)}
    name = os.path.basename(os.path.normpath(workdir)) or workdir
    return LoadedModel(model, variables, size, mean, std, f"{name} @ step {step}", step)


def load_weights(
    path: str,
    *,
    image_size: int | None = None,
    normalization: str | None = "imagenet",
    **known: Any,
) -> LoadedModel:
    """Loads an imported weight file (any format ``pairviz_jax.checkpoints`` reads).

    Args:
      path: the weight file.
      image_size: input side; default the file's position-embedding grid (ViT) or 256.
      normalization: a ``preprocess.NORMALIZATION`` key, ``imagenet`` or ``none``.
      **known: model attributes the file does not determine (``num_heads=...``).

    Returns:
      A :class:`LoadedModel`.

    Raises:
      InputError: a missing or unreadable file, or weights that do not fit the model.
    """
    from pairviz_jax import checkpoints

    if not os.path.exists(path):
        raise InputError(f"--weights {path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"--weights {path}: is a directory (use --workdir for train.py runs)")
    mean, std = normalization_named(normalization)
    try:
        info = checkpoints.describe(path)
        model = checkpoints.model_from(path, **known)
        if image_size is None:
            grid = info.get("grid")
            patch = getattr(model, "patch_size", None)
            size = (grid[0] * patch[0], grid[1] * patch[1]) if grid and patch else (256, 256)
        else:
            size = (int(image_size), int(image_size))
        variables = checkpoints.load(path, model, image_size=size)
    except ImportError as e:
        raise InputError(f"--weights {path}: {one_line(e)}") from None
    except (ValueError, KeyError, TypeError, OSError) as e:
        msg = one_line(e)
        if not msg.startswith(path):
            msg = f"{path}: {msg}"
        msg = msg.replace("model_from(path, num_heads=...)", "--num-heads N")
        if "num_groups" in msg.lower() or "number of groups" in msg.lower():
            msg += " (pass --model-option num_groups=N)"
        raise InputError(f"--weights {msg}") from None
    label = os.path.splitext(os.path.basename(path))[0]
    return LoadedModel(model, variables, size, mean, std, label)

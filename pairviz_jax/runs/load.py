"""Models for every command: a train.py run, an exported run, or an imported weight file.

:func:`load_run` reads the parameters and the config that ``train.py`` stores in each
checkpoint (``pairviz_jax.train.load_params``), or that :func:`~pairviz_jax.runs.export_run`
stored in one ``.npz``, rebuilds the model from the config
(``pairviz_jax.train.build_model``) and checks that every parameter has the shape the
config implies. :func:`load_weights` builds the model that an imported weight file
describes (``pairviz_jax.checkpoints.model_from``) and loads it. Either way the result is
a :class:`~pairviz_jax.runs.LoadedModel` that knows its input size and normalisation, so
images are prepared exactly as in training. Every failure is an ``InputError`` with one
line that names the directory, file or option.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pairviz_jax.models._shapes import abstract_variables
from pairviz_jax.runs import exported
from pairviz_jax.runs.model import InputError, LoadedModel, normalization_named, one_line

__all__ = [
    "checkpoint_steps",
    "checkpoints_dir",
    "load_run",
    "is_model_folder",
    "load_weights",
    "run_status",
]


def checkpoints_dir(workdir: str) -> str:
    """``<workdir>/checkpoints`` (train.py's layout), or ``workdir`` itself if it holds steps."""
    sub = os.path.join(workdir, "checkpoints")
    return sub if os.path.isdir(sub) else workdir


def checkpoint_steps(workdir: str) -> list[int]:
    """The complete checkpoints of a run (or the steps of an exported run), ascending."""
    if exported.is_exported(workdir):
        return exported.read_exported(workdir).steps
    directory = checkpoints_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name)
        for name in os.listdir(directory)
        if name.isdigit() and os.path.isdir(os.path.join(directory, name))
    )


def run_status(workdir: str):
    """Where a train.py run stands (``pairviz_jax.train.runfiles.RunStatus``)."""
    from pairviz_jax.train.runfiles import run_status as status

    return status(workdir)


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


def _pick_step(steps: list[int], step: int | None, where: str, flag: str) -> int:
    if step is None:
        return steps[-1]
    if step not in steps:
        raise InputError(
            f"{flag} {step}: no such checkpoint in {where}; available: "
            + ", ".join(map(str, steps))
        )
    return step


def _read_run(workdir: str, step: int | None, flag: str, step_flag: str):
    """(model params, config dict, step, steps, where, name) of a run directory or file."""
    if exported.is_exported(workdir):
        try:
            run = exported.read_exported(workdir)
            step = _pick_step(run.steps, step, workdir, step_flag)
            return run.params(step), run.config, step, run.steps, workdir, run.name
        except (ValueError, KeyError, OSError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{flag} {workdir}: {one_line(e, 200)}") from None
    from pairviz_jax.train import checkpointing

    if not os.path.exists(workdir):
        raise InputError(f"{flag} {workdir}: no such directory")
    if not os.path.isdir(workdir):
        raise InputError(
            f"{flag} {workdir}: neither a train.py run directory nor an exported run (.npz)"
        )
    steps = checkpoint_steps(workdir)
    directory = checkpoints_dir(workdir)
    if not steps:
        raise InputError(
            f"{flag} {workdir}: no checkpoints (expected {directory}/<step>/ as train.py "
            "writes them)"
        )
    step = _pick_step(steps, step, directory, step_flag)
    where = os.path.join(directory, str(step))
    try:
        params, config = checkpointing.load_params(directory, step)
    except Exception as e:  # orbax raises many types for damaged or foreign directories
        raise InputError(f"{where}: cannot read the checkpoint ({one_line(e, 200)})") from None
    model_params = params.get("model") if isinstance(params, dict) else None
    if model_params is None:
        raise InputError(f"{where}: no model parameters in the checkpoint")
    name = os.path.basename(os.path.normpath(workdir)) or workdir
    return model_params, config, step, steps, where, name


def load_run(
    workdir: str,
    step: int | None = None,
    *,
    flag: str = "--workdir",
    step_flag: str = "--step",
) -> LoadedModel:
    """Loads the model of a ``train.py`` run (or an exported run) at a checkpoint.

    Args:
      workdir: the run's ``--workdir`` (holding ``checkpoints/<step>/``), or an exported
        run file (``runs.export_run``).
      step: the checkpoint; default the latest.
      flag, step_flag: the options named in error messages.

    Returns:
      A :class:`LoadedModel` with the run's input size and normalisation, labelled
      ``"<run> @ step <step>"``.

    Raises:
      InputError: no such directory, no checkpoint, no such step, an unreadable
        checkpoint, or parameters that do not fit the model of the stored config.
    """
    import ml_collections

    from pairviz_jax.train import build_model
    from pairviz_jax.train.input import normalization

    model_params, config, step, _, where, name = _read_run(workdir, step, flag, step_flag)
    try:
        cfg = ml_collections.ConfigDict(config)
        model = build_model(cfg.model)
        size = _image_size(cfg.input.image_size)
        mean, std = normalization(cfg)
        total = int(cfg.total_steps)
        expected = abstract_variables(model, (1, *size, 3))["params"]
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
    return LoadedModel(model, variables, size, mean, std, f"{name} @ step {step}", step, total)


_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def is_model_folder(path: str) -> bool:
    """A Hugging Face model folder (``config.json`` beside its weights), not a train.py run."""
    if not os.path.isdir(path) or os.path.isdir(os.path.join(path, "checkpoints")):
        return False
    has = lambda name: os.path.isfile(os.path.join(path, name))  # noqa: E731
    return has("config.json") and any(has(w) for w in _HF_WEIGHTS)


def _failure(e: BaseException) -> str:
    """One line for an error the readers did not expect (a bug or a new kind of damage)."""
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"unreadable weight file ({type(e).__name__}{': ' + first if first else ''})"


def load_weights(
    path: str,
    *,
    image_size: int | None = None,
    normalization: str | None = None,
    prefix: str = "",
    **known: Any,
) -> LoadedModel:
    """Loads an imported weight file (any format ``pairviz_jax.checkpoints`` reads).

    Args:
      path: the weight file or Hugging Face model folder.
      image_size: input side; default the file's position-embedding grid (ViT) or 256.
      normalization: a ``preprocess.NORMALIZATION`` key, ``imagenet``, ``clip``,
        ``siglip`` or ``none``; None: the file's family's (``checkpoints.describe``),
        else ImageNet's.
      prefix: ``""`` for ``--weights``, ``"compare"`` for ``--compare``: the options named
        in error messages (``--weights``/``--model-option`` or ``--compare``/
        ``--compare-model-option``).
      **known: model attributes the file does not determine (``num_heads=...``).

    Returns:
      A :class:`LoadedModel`.

    Raises:
      InputError: a missing or unreadable file, or weights that do not fit the model.
    """
    from pairviz_jax import checkpoints

    flag = f"--{prefix}" if prefix else "--weights"
    opt = f"--{prefix}-" if prefix else "--"
    if not os.path.exists(path):
        raise InputError(f"{flag} {path}: no such file")
    if os.path.isdir(path) and not is_model_folder(path):
        raise InputError(
            f"{flag} {path}: a directory but not a Hugging Face model folder (config.json and "
            "model.safetensors or pytorch_model.bin); use --workdir for train.py runs"
        )
    try:
        ckpt = checkpoints.read(path)
    except ImportError as e:
        raise InputError(f"{flag} {path}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - a hostile file raises anything
        msg = one_line(e) if isinstance(e, ValueError | OSError) else _failure(e)
        raise InputError(f"{flag} {msg if msg.startswith(path) else f'{path}: {msg}'}") from None
    try:
        info = checkpoints.describe(ckpt)
        if normalization is None:
            family = info.get("normalization") or {"name": "imagenet"}
            mean, std = tuple(family.get("mean", ())), tuple(family.get("std", ()))
            if not mean:
                mean, std = normalization_named("imagenet")
        else:
            mean, std = normalization_named(normalization, f"{opt}normalization")
        model = checkpoints.model_from(ckpt, **known)
        if image_size is None:
            grid = info.get("grid")
            patch = getattr(model, "patch_size", None)
            size = (grid[0] * patch[0], grid[1] * patch[1]) if grid and patch else (256, 256)
        else:
            size = (int(image_size), int(image_size))
        variables = checkpoints.load(ckpt, model, image_size=size)
    except ImportError as e:
        raise InputError(f"{flag} {path}: {one_line(e)}") from None
    except (ValueError, KeyError, TypeError, OSError) as e:
        msg = one_line(e)
        if not msg.startswith(path):
            msg = f"{path}: {msg}"
        msg = msg.replace("model_from(path, num_heads=...)", f"{opt}num-heads N")
        if "num_groups" in msg.lower() or "number of groups" in msg.lower():
            msg += f" (pass {opt}model-option num_groups=N)"
        raise InputError(f"{flag} {msg}") from None
    label = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return LoadedModel(model, variables, size, mean, std, label)

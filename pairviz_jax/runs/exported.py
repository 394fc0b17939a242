"""A run in one file: a few checkpoints' model parameters and the run's config, as ``.npz``.

``train.py`` writes orbax checkpoints (parameters, optimiser state, data position) into a
run directory; :func:`export_run` keeps only what the figures need, so that a trained run
can ship inside the repository (the demo model, ``pairviz_jax/plotting/assets``) and load
in a fraction of a second without orbax:

* ``pairviz_run``: JSON ``{"format", "name", "steps", "config", "metrics"}``: the steps
  stored (ascending; the last is the run's final step), the run's config as
  ``config.json`` holds it, and its last evaluation;
* ``<step>/<parameter path>``: the model's parameters at each step (``params["model"]`` of
  a train.py checkpoint; the loss head is not kept). The last step is float32, bit for bit
  the checkpoint; earlier steps are float16 (they are only drawn across training, Fig. 6)
  unless ``float16_before_last=False``.

Read with ``numpy.load(path, allow_pickle=False)``: no code runs when a file is opened.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from pairviz_jax._util import atomic_path

FORMAT = "pairviz-run/1"
META_KEY = "pairviz_run"

__all__ = [
    "FORMAT",
    "ExportedRun",
    "config_changes",
    "export_run",
    "is_exported",
    "read_exported",
]


@dataclasses.dataclass
class ExportedRun:
    """An exported run, read.

    Attributes:
      path: the file.
      name: the run's name (figure titles).
      steps: the stored checkpoint steps, ascending.
      config: the run's config as a dict (``config.json``).
      metrics: the last evaluation record of the run (``metrics.jsonl``), or {}.
    """

    path: str
    name: str
    steps: list[int]
    config: dict[str, Any]
    metrics: dict[str, Any]

    def params(self, step: int) -> dict[str, Any]:
        """The model parameters at ``step``, float32 numpy arrays in flax's nesting."""
        prefix = f"{int(step)}/"
        with np.load(self.path, allow_pickle=False) as z:
            flat = {
                tuple(k[len(prefix) :].split("/")): np.asarray(z[k], np.float32)
                for k in z.files
                if k.startswith(prefix)
            }
        if not flat:
            raise KeyError(f"{self.path}: no parameters of step {step}")
        return traverse_util.unflatten_dict(flat)


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by :func:`export_run`."""
    path = os.fspath(path)
    if not (os.path.isfile(path) and path.endswith(".npz")):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return META_KEY in z.files
    except (OSError, ValueError):
        return False


def read_exported(path: str | os.PathLike) -> ExportedRun:
    """Reads the description of an exported run (parameters are read per step on demand).

    Raises:
      ValueError: not an exported run, or of an unknown format version.
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as z:
        if META_KEY not in z.files:
            raise ValueError(f"{path}: not an exported run (no {META_KEY} entry)")
        meta = json.loads(str(z[META_KEY]))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return ExportedRun(
        path=path,
        name=str(meta.get("name") or os.path.splitext(os.path.basename(path))[0]),
        steps=sorted(int(s) for s in meta["steps"]),
        config=meta["config"],
        metrics=meta.get("metrics") or {},
    )


def export_run(
    workdir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    steps: Sequence[int] | None = None,
    name: str | None = None,
    float16_before_last: bool = True,
) -> ExportedRun:
    """Writes checkpoints of a finished ``train.py`` run to one ``.npz`` (module docstring).

    Args:
      workdir: the run directory.
      path: the file to write (atomically: a temporary name, then renamed).
      steps: checkpoint steps to keep; default all. The run's final step is always kept.
      name: the run's name in figure titles; default the workdir's base name.
      float16_before_last: store the steps before the last as float16 (half the size).

    Returns:
      The written run, as :func:`read_exported` reads it.

    Raises:
      ValueError: the run is not finished (its last checkpoint is not its configured last
        step) or a requested step has no checkpoint.
    """
    from pairviz_jax.train import checkpointing, loop

    workdir = os.fspath(workdir)
    status = loop.run_status(workdir)
    if not status.finished:
        raise ValueError(f"{workdir}: {status.describe()}; finish it first (train.py resumes it)")
    have = status.steps
    chosen = sorted(set(have if steps is None else [int(s) for s in steps]) | {status.total})
    missing = [s for s in chosen if s not in have]
    if missing:
        raise ValueError(f"{workdir}: no checkpoint {missing[0]}; available: {have}")
    arrays: dict[str, np.ndarray] = {}
    config: dict[str, Any] = {}
    for step in chosen:
        params, config = checkpointing.load_params(workdir, step)
        dtype = np.float16 if float16_before_last and step != chosen[-1] else np.float32
        flat = traverse_util.flatten_dict(params["model"], sep="/")
        arrays.update({f"{step}/{k}": np.asarray(v).astype(dtype) for k, v in flat.items()})
    evals = [r for r in loop.read_metrics(workdir) if any(k.startswith("eval") for k in r)]
    meta = {
        "format": FORMAT,
        "name": name or os.path.basename(os.path.normpath(workdir)),
        "steps": chosen,
        "config": config,
        "metrics": evals[-1] if evals else {},
    }
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    path = os.fspath(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return read_exported(path)


def config_changes(run: ExportedRun, config_spec: str) -> list[tuple[str, Any, Any]]:
    """How the config file ``config_spec`` (``FILE[:ARG]``) differs from the run's config.

    Returns:
      ``[(field, run's value, the file's value)]``; empty when the run was trained with
      exactly this config.

    Raises:
      ValueError: the config file cannot be loaded (one line).
    """
    from pairviz_jax.train import cli, runfiles

    try:
        config = cli.load_config_file(config_spec)
    except cli.UsageError as e:
        raise ValueError(str(e)) from None
    return runfiles.config_diff(run.config, config)

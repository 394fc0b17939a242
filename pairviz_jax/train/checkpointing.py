"""Orbax checkpoints of a run: state, data-iterator position and config, with auto-resume.

A checkpoint ``<workdir>/checkpoints/<step>/`` holds

* ``state``: the :class:`~pairviz_jax.train.state.TrainState` (params, optimiser state, step);
* ``config``: the run's config as JSON.

The input position is not saved: the training input is a pure function of the config and
the step (``train.input.train_iterator``), so a run resumes with any number of processes.
(Checkpoints of older versions also hold ``data``, per-process grain iterator states; they
are ignored.) The directory may be local or an object-store URL (``gs://...``, via etils
``epath``); in a multi-process run every process must see the same directory.

Checkpoints are written every ``save_every`` steps (asynchronously; the next steps overlap the
write) and the last ``max_to_keep`` are kept, plus every ``keep_every``-th forever so that
visualisations can compare maps across training (paper Section 4.3). A checkpoint appears
under its final name only once complete, so a run killed at any moment resumes from the last
complete one. :func:`load_params` reads only the parameters, without the optimiser.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

STATE, DATA, CONFIG = "state", "data", "config"


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path (made absolute) or an object-store URL (``gs://...``, kept as is)."""
    p = epath.Path(path)
    return p if "://" in os.fspath(path) else epath.Path(os.path.abspath(os.fspath(path)))


class Checkpointer:
    """A ``CheckpointManager`` for one run directory.

    Args:
      directory: where checkpoints go (created).
      save_every: interval in steps (``save(..., force=True)`` writes regardless).
      max_to_keep: the most recent checkpoints kept (None: all).
      keep_every: checkpoints at multiples of this step are never deleted (None: off).
      async_save: write in a background thread.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 1000,
        max_to_keep: int | None = 3,
        keep_every: int | None = None,
        async_save: bool = True,
    ):
        self.directory = as_path(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=int(save_every),
            max_to_keep=max_to_keep,
            keep_period=keep_every or None,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any = None,
        config: ml_collections.ConfigDict | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Saves if ``step`` is due (or ``force``); returns whether a save started.

        ``data_iterator`` is accepted and ignored (the input position follows from ``step``).
        """
        del data_iterator
        items = {STATE: ocp.args.StandardSave(state)}
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
        return self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(
        self, state_template: Any, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, int]:
        """Restores the state (into ``state_template``'s shapes and shardings).

        Args:
          state_template: a state, or ``jax.ShapeDtypeStruct`` leaves with shardings, of
            the same tree.
          data_iterator: ignored (the input restarts at the returned step).
          step: the checkpoint; default the latest.

        Returns:
          ``(state, step)``.
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        items = {STATE: ocp.args.StandardRestore(abstract)}
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored[STATE], step

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@contextlib.contextmanager
def quiet_orbax():
    """Silences absl/orbax warnings for the block (reading one item of a checkpoint makes
    orbax warn that the checkpoint-level metadata file is not in the item's folder)."""
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


def load_params(directory: str | os.PathLike, step: int | None = None) -> tuple[Any, dict]:
    """Reads only the parameters and config of a checkpoint (e.g. for visualize.py).

    Args:
      directory: the ``checkpoints`` folder of a run (or the run's workdir).
      step: which checkpoint; default the latest.

    Returns:
      ``(params, config_dict)`` with ``params = {"model": ..., "head": ...}`` as numpy arrays.
    """
    directory = as_path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if step is None:
        steps = (
            [int(d.name) for d in directory.iterdir() if d.name.isdigit()]
            if directory.is_dir()
            else []
        )
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        step = max(steps)
    path = directory / str(int(step))
    # As host numpy arrays, whatever devices wrote them.
    with quiet_orbax():
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(path / STATE).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(
            path / STATE, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    config_path = path / CONFIG / "metadata"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    return state["params"], config

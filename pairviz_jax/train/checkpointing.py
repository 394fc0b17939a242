"""Orbax checkpoints of a run: state, data-iterator position and config, with auto-resume.

A checkpoint ``<workdir>/checkpoints/<step>/`` holds

* ``state``: the :class:`~pairviz_jax.train.state.TrainState` (params, optimiser state, step);
* ``data``: the grain iterator position, one JSON file per process (``grain.checkpoint``);
* ``config``: the run's config as JSON.

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

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

STATE, DATA, CONFIG = "state", "data", "config"


def _has_grain_state(it: Any) -> bool:
    return it is not None and hasattr(it, "get_state") and hasattr(it, "set_state")


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
        self.directory = os.path.abspath(os.fspath(directory))
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

        The data iterator's position must be the one after the batches of steps ``< step``.
        """
        items = {STATE: ocp.args.StandardSave(state)}
        if _has_grain_state(data_iterator):
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
        return self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(
        self, state_template: Any, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, int]:
        """Restores the state (into ``state_template``'s shapes and shardings) and the iterator.

        Args:
          state_template: a state, or ``jax.ShapeDtypeStruct``s with shardings, of the same tree.
          data_iterator: a grain iterator whose position is set in place (if saved).
          step: the checkpoint; default the latest.

        Returns:
          ``(state, step)``.
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        items = {STATE: ocp.args.StandardRestore(abstract)}
        saved = os.path.isdir(os.path.join(self.directory, str(step), DATA))
        if _has_grain_state(data_iterator) and saved:
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
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
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    if step is None:
        steps = (
            [int(d) for d in os.listdir(directory) if d.isdigit()]
            if os.path.isdir(directory)
            else []
        )
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        step = max(steps)
    path = os.path.join(directory, str(int(step)))
    # As host numpy arrays, whatever devices wrote them.
    with quiet_orbax():
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(os.path.join(path, STATE)).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(
            os.path.join(path, STATE), args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
    config_path = os.path.join(path, CONFIG, "metadata")
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    return state["params"], config

"""The run loader: a model for every command, from a run, an exported run or a weight file.

The one module outside ``pairviz_jax.train`` that imports it (``visualize.py``,
``pairviz_jax.plotting`` and ``pairviz_jax.batch`` load models through here).

* ``load_run(workdir, step=None)``: a ``train.py`` run directory at a checkpoint, or an
  exported run file;
* ``load_weights(path, ...)``: an imported weight file (``pairviz_jax.checkpoints``);
* ``export_run(workdir, path, steps=...)`` / ``read_exported(path)``: a finished run's
  checkpoints (model parameters and config only) in one ``.npz``, e.g. the demo model that
  ships with the repository;
* ``run_status(workdir)``: the checkpoints of a run, its configured last step, whether it
  finished;
* ``add_model_arguments(parser)`` / ``model_from_args(args)``: the command-line options;
* ``LoadedModel``, ``InputError`` (bad user input: one line naming the file or option) and
  ``check_image_size`` (the smallest image every command takes: one patch).
"""

from pairviz_jax.runs.exported import (
    ExportedRun,
    config_changes,
    export_run,
    is_exported,
    read_exported,
)
from pairviz_jax.runs.load import (
    checkpoint_steps,
    checkpoints_dir,
    load_run,
    load_weights,
    run_status,
)
from pairviz_jax.runs.model import (
    InputError,
    LoadedModel,
    check_image_size,
    normalization_named,
    one_line,
    parse_model_options,
)
from pairviz_jax.runs.options import add_model_arguments, initialize_distributed, model_from_args

__all__ = [
    "ExportedRun",
    "InputError",
    "LoadedModel",
    "add_model_arguments",
    "check_image_size",
    "config_changes",
    "checkpoint_steps",
    "checkpoints_dir",
    "export_run",
    "initialize_distributed",
    "is_exported",
    "load_run",
    "load_weights",
    "model_from_args",
    "normalization_named",
    "one_line",
    "parse_model_options",
    "read_exported",
    "run_status",
]

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

from pairviz_jax._lazy import lazy_attributes

# name -> the module that defines it; imported on first use, so that ``--help`` and the
# command-line checks (``InputError``, ``add_model_arguments``) run without JAX.
_WHERE = {
    "ExportedRun": "exported",
    "config_changes": "exported",
    "export_run": "exported",
    "is_exported": "exported",
    "read_exported": "exported",
    "checkpoint_steps": "load",
    "checkpoints_dir": "load",
    "load_run": "load",
    "load_weights": "load",
    "run_status": "load",
    "InputError": "errors",
    "one_line": "errors",
    "LoadedModel": "model",
    "check_image_size": "model",
    "normalization_named": "model",
    "parse_model_options": "model",
    "ModelSpec": "options",
    "add_model_arguments": "options",
    "load_model": "options",
    "initialize_distributed": "options",
    "model_from_args": "options",
}

__all__ = [
    "ExportedRun",
    "InputError",
    "LoadedModel",
    "ModelSpec",
    "add_model_arguments",
    "check_image_size",
    "config_changes",
    "checkpoint_steps",
    "checkpoints_dir",
    "export_run",
    "initialize_distributed",
    "is_exported",
    "load_model",
    "load_run",
    "load_weights",
    "model_from_args",
    "normalization_named",
    "one_line",
    "parse_model_options",
    "read_exported",
    "run_status",
]


__getattr__, __dir__ = lazy_attributes(
    __name__, {k: f"{__name__}.{m}" for k, m in _WHERE.items()}, __all__
)

"""Training retrieval models: state, the pure step, sharding, checkpoints and the loop.

``runfiles``: a run directory's metrics, remembered config and status; ``cli``: train.py's
command line. Outside this package only ``pairviz_jax.runs`` (the run loader) imports it.
"""

from pairviz_jax._lazy import lazy_attributes

# name -> its module, imported on first use: ``train.py --help`` and its checks import no JAX.
_WHERE = {
    "Checkpointer": "pairviz_jax.train.checkpointing",
    "load_params": "pairviz_jax.train.checkpointing",
    "evaluate": "pairviz_jax.train.loop",
    "train_and_evaluate": "pairviz_jax.train.loop",
    "ConfigChangedError": "pairviz_jax.train.runfiles",
    "run_status": "pairviz_jax.train.runfiles",
    "TrainState": "pairviz_jax.train.state",
    "build_model": "pairviz_jax.train.state",
    "create_train_state": "pairviz_jax.train.state",
    "init_params": "pairviz_jax.train.state",
    "make_optimizer": "pairviz_jax.train.state",
    "jit_embed": "pairviz_jax.train.step",
    "jit_train_step": "pairviz_jax.train.step",
    "train_step": "pairviz_jax.train.step",
}

__all__ = [
    "Checkpointer",
    "ConfigChangedError",
    "TrainState",
    "build_model",
    "create_train_state",
    "evaluate",
    "init_params",
    "jit_embed",
    "jit_train_step",
    "load_params",
    "make_optimizer",
    "run_status",
    "train_and_evaluate",
    "train_step",
]


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, __all__)

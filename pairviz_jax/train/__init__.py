"""Training retrieval models: state, the pure step, sharding, checkpoints and the loop.

``runfiles``: a run directory's metrics, remembered config and status; ``cli``: train.py's
command line. Outside this package only ``pairviz_jax.runs`` (the run loader) imports it.
"""

from pairviz_jax.train.checkpointing import Checkpointer, load_params
from pairviz_jax.train.loop import evaluate, train_and_evaluate
from pairviz_jax.train.runfiles import ConfigChangedError, run_status
from pairviz_jax.train.state import (
    TrainState,
    build_model,
    create_train_state,
    init_params,
    make_optimizer,
)
from pairviz_jax.train.step import embedding_forward, jit_embed, jit_train_step, train_step

__all__ = [
    "Checkpointer",
    "ConfigChangedError",
    "TrainState",
    "build_model",
    "create_train_state",
    "embedding_forward",
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

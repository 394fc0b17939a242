"""Training retrieval models: state, the pure step, sharding, checkpoints and the loop."""

from pairviz_jax.train.checkpointing import Checkpointer, load_params
from pairviz_jax.train.loop import evaluate, train_and_evaluate
from pairviz_jax.train.state import (
    TrainState,
    build_model,
    create_train_state,
    init_params,
    make_optimizer,
)
from pairviz_jax.train.step import jit_embed, jit_train_step, train_step

__all__ = [
    "Checkpointer",
    "TrainState",
    "build_model",
    "create_train_state",
    "evaluate",
    "init_params",
    "jit_embed",
    "jit_train_step",
    "load_params",
    "make_optimizer",
    "train_and_evaluate",
    "train_step",
]

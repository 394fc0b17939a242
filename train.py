"""Trains a retrieval model: ``python train.py --config configs/demo.py --workdir workdirs/demo``.

Flags only; everything else is ``pairviz_jax.train``. Config fields are overridden on the
command line (``--config.batch_size=256``, ``--config.init_from=/path/ViT-B_16.npz``); a config
file may take an argument (``--config configs/sop.py:vit_b32``). Rerunning with the same
``--workdir`` resumes from its latest checkpoint. Multi-host: every process runs the same
command; JAX detects TPU pods and SLURM, elsewhere pass ``--coordinator``, ``--num_processes``
and ``--process_id``.
"""

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from pairviz_jax.train import sharding, train_and_evaluate

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl and curves.png go here.")
flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("pairviz_jax")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    f = flags.FLAGS
    if not f["verbosity"].present:  # orbax's per-save INFO lines drown the progress line
        absl_logging.set_verbosity(absl_logging.WARNING)
    sharding.initialize_distributed(f.coordinator, f.num_processes, f.process_id)
    result = train_and_evaluate(f.config, f.workdir)
    log.info(
        "final: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    )


if __name__ == "__main__":
    app.run(main)

"""Trains a retrieval model: ``python train.py --config configs/demo.py --workdir workdirs/demo``.

Flags only; everything else is ``pairviz_jax.train``. Config fields are overridden on the
command line (``--config.batch_size=256``, ``--config.init_from=/path/ViT-B_16.npz``); a config
file may take an argument (``--config configs/sop.py:vit_b32``). Rerunning with the same
``--workdir`` resumes from its latest checkpoint; a rerun with another config is refused
unless ``--allow_config_change``. Multi-host: every process runs the same command with the
same ``--workdir`` (shared: a network filesystem or ``gs://...``); SLURM, Open MPI, TPU pods
and indexed Kubernetes jobs are detected, elsewhere pass ``--coordinator``,
``--num_processes`` and ``--process_id``. ``--help`` lists every config field.
"""

import sys

from absl import flags
from ml_collections import config_flags

from pairviz_jax.train import cli


def define_flags(fv: flags.FlagValues = flags.FLAGS, argv: list[str] | None = None):
    """train.py's flags, defined on ``fv`` for the command line ``argv`` (default
    ``sys.argv``; tests pass a fresh ``flags.FlagValues()`` and their own argv)."""
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Training config: FILE or FILE:ARG.",
        lock_config=True,
        flag_values=fv,
        sys_argv=argv,
    )
    flags.DEFINE_string(
        "workdir", None, "Checkpoints, metrics.jsonl and curves.png go here.", flag_values=fv
    )
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "Go on in a workdir whose run was started with another config.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "coordinator", None, "host:port of process 0, for multi-host runs.", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index (multi-host).", flag_values=fv)
    return fv


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv, define_flags(), __doc__))

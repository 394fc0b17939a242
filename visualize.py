"""Figures of the paper from a checkpoint: ``python visualize.py SUBCOMMAND ... --workdir RUN``.

The subcommands and their dispatch live in ``pairviz_jax.cli`` (installed as the ``pairviz``
command, for a user without this repository); ``python visualize.py --help`` lists them.
"""

import sys

from pairviz_jax.cli import COMMANDS, PROG, Command, build_parser, main

__all__ = ["COMMANDS", "PROG", "Command", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

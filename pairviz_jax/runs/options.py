"""Command-line options that choose a model, shared by every ``visualize.py`` subcommand.

``add_model_arguments(parser)`` adds ``--workdir RUN [--step N]`` or ``--weights FILE`` with
the options a weight file may need (``--image-size``, ``--num-heads``, ``--pool-type``,
``--model-option KEY=VALUE``, ``--normalization``); ``add_model_arguments(parser,
prefix="compare")`` adds the same for a second model (``--compare RUN_OR_FILE``,
``--compare-step``, ``--compare-model-option``, ...). :func:`model_from_args` loads what
they name.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING

from pairviz_jax.runs.errors import InputError

if TYPE_CHECKING:
    from pairviz_jax.runs.model import LoadedModel

# models.vit.POOL_TYPES, written out so that building the parser (``--help``) imports no
# JAX; a test checks that the two agree.
POOL_TYPES = ("gap", "tok", "gap_tok", "map")

__all__ = [
    "ModelSpec",
    "add_model_arguments",
    "initialize_distributed",
    "load_model",
    "model_from_args",
]


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    prefix: str = "",
    weights: bool = True,
    step: bool = True,
) -> None:
    """Adds the model options (module docstring) to ``parser``.

    Args:
      parser: a subcommand's parser.
      prefix: ``""`` for the main model (``--workdir``/``--weights``, one required), or a
        name such as ``"compare"`` for an optional second model (``--compare PATH`` and
        ``--compare-*`` options).
      weights: also accept imported weight files.
      step: add ``--step`` (a command that takes several steps has its own option).
    """
    opt = f"--{prefix}-" if prefix else "--"
    g = parser.add_argument_group(f"{prefix} model" if prefix else "model")
    if prefix:
        what = "a train.py run directory, an exported run (.npz) or a weight file"
        g.add_argument(f"--{prefix}", help=f"a second model: {what}")
    else:
        src = g.add_mutually_exclusive_group(required=True)
        src.add_argument(
            "--workdir",
            help="a train.py run directory (checkpoints/<step>/) or an exported run, e.g. the "
            "embedded demo model pairviz_jax/plotting/assets/demo_run.npz",
        )
        if weights:
            src.add_argument(
                "--weights",
                help="an imported weight file (.npz, .safetensors, .pth) or a Hugging Face "
                "model folder (config.json + weights)",
            )
    if step:
        g.add_argument(
            f"{opt}step", type=int, help="checkpoint step of the run (default: its latest)"
        )
    if not weights:
        return
    for_file = f"for a weight file{f' given to --{prefix}' if prefix else ''}"
    g.add_argument(
        f"{opt}image-size", type=int, help=f"input side {for_file} (default: the file's)"
    )
    g.add_argument(f"{opt}num-heads", type=int, help=f"ViT heads {for_file}, if it does not tell")
    g.add_argument(
        f"{opt}pool-type",
        choices=POOL_TYPES,
        help=f"ViT pooling {for_file} (default: the file's family: DINOv2/CLIP/DeiT tok, SigLIP "
        "map); gap is the paper's mean pool, gap_tok DINOv2's [class, mean] probe feature",
    )
    g.add_argument(
        f"{opt}model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"another model attribute {for_file}, e.g. num_groups=8 (repeatable)",
    )
    g.add_argument(
        f"{opt}normalization",
        default=None,
        help=f"input mean/std {for_file}: imagenet, clip, siglip, none, or a dataset name "
        "(sop, demo, ...); default: the file's family's (DINOv2 and timm ImageNet's, CLIP's, "
        "SigLIP's 0.5/0.5), else imagenet",
    )


# The options a weight file may need, in the order their errors name them.
_FILE_OPTIONS = ("image_size", "num_heads", "pool_type", "model_option", "normalization")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model's command-line options, read once from the parsed arguments.

    Attributes:
      prefix: ``""`` for the main model, or the second model's name (``"compare"``).
      path: the run or weight file; None for an optional model that was not given.
      from_weights: the main model was named by ``--weights`` (not ``--workdir``).
      step, image_size, num_heads, pool_type, normalization: the options (None: not given).
      model_option: the ``KEY=VALUE`` strings of ``--model-option``.
    """

    prefix: str = ""
    path: str | None = None
    from_weights: bool = False
    step: int | None = None
    image_size: int | None = None
    num_heads: int | None = None
    pool_type: str | None = None
    normalization: str | None = None
    model_option: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace, prefix: str = "") -> ModelSpec:
        """The spec of the options ``add_model_arguments(parser, prefix=prefix)`` added."""
        ns = vars(args)
        start = f"{prefix}_" if prefix else ""
        values = {name: ns.get(start + name) for name in ("step", *_FILE_OPTIONS)}
        values["model_option"] = tuple(values["model_option"] or ())
        if prefix:
            return cls(prefix, ns.get(prefix), False, **values)
        weights = ns.get("weights")
        path = ns.get("workdir") if weights is None else weights
        return cls("", path, weights is not None, **values)

    def option(self, name: str) -> str:
        """The flag of one of this model's options: ``option("step") == "--compare-step"``."""
        return (f"--{self.prefix}-" if self.prefix else "--") + name.replace("_", "-")

    @property
    def flag(self) -> str:
        """The flag that named the model: ``--workdir``, ``--weights`` or ``--compare``."""
        if self.prefix:
            return f"--{self.prefix}"
        return "--weights" if self.from_weights else "--workdir"

    def file_options(self) -> list[str]:
        """The flags of the weight-file options that were given."""
        return [self.option(n) for n in _FILE_OPTIONS if getattr(self, n) not in (None, ())]


def model_from_args(args: argparse.Namespace, prefix: str = "") -> LoadedModel | None:
    """Loads the model that ``add_model_arguments(parser, prefix=prefix)``'s options name.

    Returns:
      The model; None when ``prefix`` names an optional model that was not given.

    Raises:
      InputError: a bad path, step or option (one line naming the option).
    """
    return load_model(ModelSpec.from_args(args, prefix))


def load_model(spec: ModelSpec) -> LoadedModel | None:
    """Loads the model of a :class:`ModelSpec` (see :func:`model_from_args`)."""
    from pairviz_jax.runs import exported
    from pairviz_jax.runs.load import is_model_folder, load_run, load_weights
    from pairviz_jax.runs.model import parse_model_options

    path = spec.path
    if spec.prefix:
        if path is None:
            extra = spec.file_options() + ([spec.option("step")] if spec.step else [])
            if extra:
                raise InputError(f"{extra[0]} needs {spec.flag} (the second model)")
            return None
        is_run = (os.path.isdir(path) and not is_model_folder(path)) or exported.is_exported(path)
        if not os.path.exists(path):
            raise InputError(f"{spec.flag} {path}: no such file or directory")
    else:
        is_run = not spec.from_weights or exported.is_exported(path)
    if is_run:
        extra = spec.file_options()
        if extra:
            raise InputError(f"{extra[0]} applies to weight files, not to runs ({path})")
        m = load_run(path, spec.step, flag=spec.flag, step_flag=spec.option("step"))
        _note_unfinished(path, m)
        return m
    if spec.step is not None:
        raise InputError(
            f"{spec.option('step')} applies to train.py runs, not to weight files ({path})"
        )
    known = parse_model_options(list(spec.model_option), spec.option("model_option"))
    for name in ("num_heads", "pool_type"):
        value = getattr(spec, name)
        if value is not None:
            known[name] = value
    return load_weights(
        path,
        image_size=spec.image_size,
        normalization=spec.normalization,
        prefix=spec.prefix,
        **known,
    )


def _note_unfinished(path: str, m: LoadedModel) -> None:
    """One line on stderr when the figures come from a run that has not finished."""
    if not os.path.isdir(path):
        return
    from pairviz_jax.runs.load import run_status

    status = run_status(path)
    if status.latest is not None and not status.finished:
        print(
            f"note: {path}: {status.describe()}; the maps are step {m.step}'s",
            file=sys.stderr,
        )


def initialize_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Multi-host setup for commands that run on several hosts (``visualize.py batch``)."""
    from pairviz_jax.train import sharding

    sharding.initialize_distributed(coordinator, num_processes, process_id)

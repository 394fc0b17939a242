"""``train.py``'s command line: flags in, one clear line out for every mistake.

``train.py`` defines the flags (``--config`` through ``ml_collections.config_flags``, so
``--config FILE[:ARG]`` and ``--config.<field>=<value>`` overrides) and calls :func:`main`.
A bad config path, a config argument its file rejects, an unknown field, a value of the
wrong type or a workdir whose run has another config each stop with one line on stderr
and exit status 2, before anything in the workdir is written. ``--help`` lists every
config field with its value and meaning and exits 0.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

PROG = "train.py"
_HELP = ("-h", "--help", "--helpshort", "--helpfull", "-?")

__all__ = ["config_fields", "load_config_file", "main"]


class UsageError(Exception):
    """A command-line mistake: one line, exit status 2."""


def _one_line(e: object) -> str:
    return " ".join(str(e).split())


def load_config_file(spec: str):
    """``FILE[:ARG]`` -> ``get_config(ARG)`` of the Python file, as ``config_flags`` does.

    Raises:
      UsageError: no such file, no ``get_config``, or ``get_config`` rejects the argument.
    """
    path, sep, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UsageError(f"--config {spec}: no such file")
    module_spec = importlib.util.spec_from_file_location("_train_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"--config {spec}: cannot load ({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise UsageError(f"--config {spec}: the file has no get_config()")
    try:
        return module.get_config(arg) if sep else module.get_config()
    except Exception as e:
        raise UsageError(f"--config {spec}: {_one_line(e)}") from None


def _overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(field, raw argument)`` of every ``--config.<field>[=value]`` in ``argv``."""
    out = []
    for arg in argv:
        m = re.match(r"--config\.([^=]+)", arg)
        if m:
            out.append((m.group(1), arg))
    return out


def _config_spec(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _has_field(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        try:
            if part not in node:
                return False
            node = node[part]
        except TypeError:
            return False
    return True


def _field_comments() -> dict[str, str]:
    """``field -> comment`` from ``pairviz_jax/train/config.py`` (``c.x.y = v  # comment``)."""
    from pairviz_jax.train import config as config_module

    comments: dict[str, str] = {}
    with open(config_module.__file__) as f:
        for line in f:
            m = re.match(r"\s*c\.([\w.]+)\s*=.*?#\s*(.+)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
    return comments


def config_fields(config) -> list[str]:
    """One line per config field: ``name = value  # meaning`` (for ``--help``)."""
    from pairviz_jax.train.runfiles import as_dict, flat_dict

    comments = _field_comments()
    flat = flat_dict(as_dict(config))
    width = max(len(f"{k} = {v!r}") for k, v in flat.items())
    lines = []
    for key, value in flat.items():
        text = f"{key} = {value!r}"
        note = comments.get(key, "")
        lines.append(f"  {text:<{width}}  {note}".rstrip())
    return lines


def _usage(doc: str, argv: Sequence[str], fv) -> str:
    from pairviz_jax.train.config import base_config

    spec = _config_spec(argv)
    try:
        config, source = (load_config_file(spec), spec) if spec else (base_config(), None)
    except UsageError:
        config, source = base_config(), None
    lines = [doc.strip(), "", "flags:"]
    for name in ("config", "workdir", "allow_config_change", "coordinator", "num_processes"):
        flag = fv[name] if name in fv else None
        if flag is not None:
            default = "" if flag.default is None else f" (default: {flag.default})"
            lines.append(f"  --{name}: {flag.help}{default}")
    if "process_id" in fv:
        lines.append(f"  --process_id: {fv['process_id'].help}")
    what = f"of {source}" if source else "(defaults; --config FILE --help lists a file's values)"
    lines += ["", f"config fields {what}; override any with --config.<field>=<value>:"]
    lines += config_fields(config)
    return "\n".join(lines)


def _parse(argv: Sequence[str], fv) -> Any:
    """Parses the flags; returns the config (overrides applied)."""
    from absl import flags

    _unknown_flags(argv[1:], fv)
    spec = _config_spec(argv[1:])
    if spec is None:
        raise UsageError("--config FILE[:ARG] is required (e.g. --config configs/demo.py)")
    base = load_config_file(spec)  # the file's own errors, named
    for field, raw in _overrides(argv[1:]):
        if not _has_field(base, field):
            raise UsageError(
                f"{raw}: {spec} has no field {field!r} (train.py --config {spec} --help lists them)"
            )
    try:
        fv(list(argv))
    except flags.Error as e:
        msg = _one_line(e).removeprefix("flag ")
        raise UsageError(msg) from None
    except Exception as e:  # config_flags raises plain errors for a bad override
        raise UsageError(f"{_one_line(e)}") from None
    if not fv.workdir:
        raise UsageError("--workdir DIR is required (checkpoints and logs go there)")
    _check_workdir(fv.workdir)
    try:
        config = fv.config
    except Exception as e:
        raise UsageError(f"--config {spec}: {_one_line(e)}") from None
    _check_values(config, spec)
    return config


def _check_workdir(workdir: str) -> None:
    """A folder that exists or can be made, and written into."""
    from pairviz_jax import argcheck
    from pairviz_jax.runs.errors import InputError

    try:
        argcheck.new_dir("--workdir", workdir)
    except InputError as e:
        raise UsageError(str(e)) from None


# Config fields that must be positive (> 0) or not negative (>= 0), when set.
_POSITIVE = (
    "batch_size",
    "total_steps",
    "eval.batch_size",
    "eval.block_size",
    "input.image_size",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "optim.grad_accum_steps",
    "optim.div_factor",
    "optim.final_div_factor",
    "model.proj_dim",
)
_NOT_NEGATIVE = ("optim.lr", "optim.weight_decay", "keep_checkpoint_every", "loss.scale")


def _check_values(config, spec: str) -> None:
    """Numbers a run cannot use (a batch of -3, 0 steps), named before anything starts."""

    def value(dotted):
        node = config
        for part in dotted.split("."):
            if part not in node:
                return None
            node = node[part]
        return node

    for names, low, what in ((_POSITIVE, 0, "> 0"), (_NOT_NEGATIVE, None, ">= 0")):
        for name in names:
            v = value(name)
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if (low is not None and not v > low) or (low is None and not v >= 0):
                raise UsageError(f"--config.{name}={v}: expected a number {what} ({spec})")
    pct = value("optim.pct_start")
    if isinstance(pct, (int, float)) and not 0 <= pct <= 1:
        raise UsageError(f"--config.optim.pct_start={pct}: expected a fraction from 0 to 1")


def _unknown_flags(argv: Sequence[str], fv) -> None:
    """A misspelt flag is named (with the closest one) before a missing one is reported."""
    import difflib

    known = {name for name in fv} | {f"no{name}" for name in fv}
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("-") or arg.startswith("--config."):
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if name and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise UsageError(f"unknown flag --{name}{hint} (train.py --help lists them)")


@contextlib.contextmanager
def _logging_to_stdout():
    """Progress lines of ``pairviz_jax`` to stdout (restored afterwards, for in-process use)."""
    from absl import logging as absl_logging

    log = logging.getLogger("pairviz_jax")
    saved = (log.level, log.propagate, absl_logging.get_verbosity())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # orbax's per-save INFO lines (absl logging) would drown the progress line.
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
        absl_logging.set_verbosity(saved[2])


def main(argv: Sequence[str], fv, doc: str = "") -> int:
    """Runs ``train.py``; returns the exit status (0 done, 2 a usage mistake, 130 interrupted).

    Args:
      argv: ``sys.argv``.
      fv: the ``absl.flags.FlagValues`` with train.py's flags defined (not yet parsed).
      doc: train.py's docstring, for ``--help``.
    """
    from pairviz_jax.train.runfiles import ConfigChangedError

    if any(a in _HELP for a in argv[1:]):
        print(_usage(doc, argv[1:], fv))
        return 0
    try:
        config = _parse(argv, fv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from pairviz_jax.train import peers, sharding
    from pairviz_jax.train.loop import train_and_evaluate

    with _logging_to_stdout() as log:
        try:
            sharding.initialize_distributed(fv.coordinator, fv.num_processes, fv.process_id)
            result = train_and_evaluate(
                config, fv.workdir, allow_config_change=bool(fv.allow_config_change)
            )
        except ConfigChangedError as e:
            print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except (sharding.ClusterError, peers.WorkdirNotSharedError) as e:
            print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; the same command resumes", file=sys.stderr)
            return 130
        log.info(
            "final: %s",
            {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
        )
    return 0

"""Command-line values checked before any work: one line naming the option, no JAX.

``visualize.py`` and ``train.py`` call these right after parsing, so a wrong ``--out``,
``--workdir`` or number stops in a fraction of a second instead of after minutes of
computation. Each raises ``runs.InputError`` (exit status 1) with one line that names the
option, the value and what was expected.
"""

from __future__ import annotations

import os
import tempfile

from pairviz_jax.runs.errors import InputError

__all__ = [
    "DEFAULT_METHOD",
    "FIGURE_FORMATS",
    "at_least",
    "between",
    "existing",
    "new_dir",
    "new_file",
    "run_source",
]

# The ``--method`` of every command that draws maps when none is given (visualize.py pair,
# matrix, retrieve, class-map, training, rollout, batch; ``batch.BatchOptions.method``), the one
# place it is set. The rule: the method that wins the swap test on the held-out photo half b
# by more than 2 standard errors over the previous default (paired difference, DINOv2-S/14);
# the paper's own maps stay ``--method paper`` (and ``--style paper`` draws them).
DEFAULT_METHOD = "paper"

# File types a figure can be written as (``plotting.save_figure``).
FIGURE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def at_least(flag: str, value: float | None, low: float, what: str = "") -> None:
    """``value`` (when given) is at least ``low``."""
    if value is not None and not value >= low:
        raise InputError(f"{flag} {value}: expected {what or f'a number >= {low}'}")


def between(flag: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise InputError(f"{flag} {value}: expected {low} to {high}")


def _writable_parent(flag: str, path: str) -> None:
    """The nearest existing folder above ``path`` is a folder we may write into."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
    _probe(flag, path, parent)


def _probe(flag: str, path: str, folder: str) -> None:
    """Makes and removes an empty folder in ``folder``: the real test of writing there
    (``os.access`` says yes to root, and on ``/proc``)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".pairviz-check-", dir=folder))
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InputError(f"{flag} {path}: cannot write into {folder} ({reason})") from None


def new_file(flag: str, path: str, extensions: tuple[str, ...] = FIGURE_FORMATS) -> None:
    """``path`` can be written as a file of one of ``extensions`` (its folder made if needed).

    Refuses a folder (``out/``), a missing or other extension and an unwritable place.
    """
    if not path:
        raise InputError(f"{flag}: empty; expected a file name ending in {'/'.join(extensions)}")
    example = f"e.g. {os.path.join(path, 'figure' + extensions[0])}"
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise InputError(f"{flag} {path}: a folder; expected a file name ({example})")
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        got = f"ends in {ext!r}" if ext else "has no extension"
        raise InputError(f"{flag} {path}: {got}; expected one of {', '.join(extensions)}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: cannot overwrite (permission denied)")
    _writable_parent(flag, path)


def new_dir(flag: str, path: str) -> None:
    """``path`` is a folder or can be made into one (and written into)."""
    if not path:
        raise InputError(f"{flag}: empty; expected a folder")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputError(f"{flag} {path}: a file; expected a folder (new or existing)")
        _probe(flag, path, path)
        return
    _writable_parent(flag, path)


def existing(flag: str, path: str | None, what: str = "file or folder") -> None:
    """``path`` (when given) exists."""
    if path is not None and not os.path.exists(os.path.expanduser(path)):
        raise InputError(f"{flag} {path}: no such {what}")


def run_source(flag: str, path: str | None, *, may_be_new: bool = False) -> None:
    """``path`` is a ``train.py`` run folder or an exported run (``.npz``).

    ``may_be_new``: a folder that does not exist yet is fine (it will be trained into).
    """
    if path is None:
        return
    expected = "a train.py run folder or an exported run (.npz), e.g. the demo model"
    if not os.path.exists(path):
        if may_be_new:
            _writable_parent(flag, path)
            return
        raise InputError(
            f"{flag} {path}: no such directory or file; expected {expected} "
            "pairviz_jax/plotting/assets/demo_run.npz"
        )
    if os.path.isfile(path) and not path.lower().endswith(".npz"):
        raise InputError(f"{flag} {path}: a file that is not a run; expected {expected}")

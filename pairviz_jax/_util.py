"""Small helpers every layer may use: atomic writes, one progress bar, unit vectors.

The bottom of the package: it imports nothing of ``pairviz_jax`` (and no JAX), so
``models``, ``explain`` and the commands all import it without running upwards.

* :func:`atomic_path` / :func:`write_text_atomic`: a file appears whole or not at all
  (written under a temporary name beside it, then renamed onto it). The batch job's
  claims and commits (``batch.claims``, ``batch.store``) have their own exclusive-create
  and hard-link semantics and do not use these.
* :class:`Progress`: the one progress line (done / total, rate, ETA).
* :data:`NORM_EPS`, :func:`unit_np`: the norm floor of every unit vector
  (``explain.similarity.safe_norm`` is its JAX form) and numpy's ``x / max(|x|, eps)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

__all__ = ["NORM_EPS", "Progress", "atomic_path", "unit_np", "write_text_atomic"]

# Floors every norm that is divided by: an all-zero vector stays zero (score 0).
NORM_EPS = 1e-12


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary path beside ``path``, renamed onto ``path`` when the block succeeds.

    Readers see the old file or the new one, never a half-written one. On an error the
    temporary file is removed and ``path`` is left as it was.

    Args:
      path: the file to write (a local path).
      suffix: ends the temporary name, for writers that choose the format by the name
        (``".npz"`` for ``np.savez``, ``".png"`` for Pillow).

    Yields:
      The temporary path (``<path>.tmp<pid><suffix>``) to write to.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`).

    ``path`` may also be a path object (``pathlib.Path``, or an ``etils.epath.Path`` of a
    run directory on a bucket), whose own ``write_text`` and ``replace`` do the work.
    """
    if isinstance(path, str):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ----------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar: done / total, rate over this run, ETA.

    Args:
      total: items in the job (or this process's share).
      initial: items already done before this run (a resumed job).
      stream: where to write (default stderr); None disables output.
      every: seconds between updates (default 0.5 on a terminal, where the line is
        redrawn in place, and 10 in a log file, one line each).
      unit: what is counted (``"pairs"``, ``"images"``, ...).
      label: printed before the bar, e.g. ``"report: thumbnails "``.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        stream=sys.stderr,
        every: float | None = None,
        unit: str = "pairs",
        label: str = "",
    ):
        self.total, self.done, self.start_done = total, initial, initial
        self.stream, self.unit, self.label = stream, unit, label
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = (0.5 if self.tty else 10.0) if every is None else every

    @property
    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = self.total - self.done
        eta = left / rate if rate > 0 else math.inf
        pct = 100.0 * self.done / max(self.total, 1)
        eta_s = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        bar = "#" * fill + "." * (width - fill)
        return (
            f"{self.label}[{bar}] {self.done:,}/{self.total:,} {self.unit} {pct:5.1f}%  "
            f"{rate:,.0f} {self.unit}/s  ETA {eta_s}"
        )

    def update(self, n: int, force: bool = False) -> None:
        """Counts ``n`` more items done; writes the line if ``every`` seconds have passed."""
        self.done += n
        now = time.perf_counter()
        if self.stream is None or not (force or now - self.last >= self.every):
            return
        self.last = now
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def close(self) -> None:
        """Writes the final line (and ends a terminal's redrawn line)."""
        if self.stream is not None:
            self.update(0, force=True)
            if self.tty:
                self.stream.write("\n")


# ----------------------------------------------------------------------------- unit vectors


def unit_np(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / max(|x|, NORM_EPS)`` along ``axis`` (numpy; a zero vector stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), NORM_EPS)

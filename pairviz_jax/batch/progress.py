"""The job's progress line: done / total pairs, pairs/s over this run, ETA."""

from __future__ import annotations

import math
import sys
import time

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar: done / total pairs, pairs/s over this run, ETA.

    Args:
      total: pairs in the job (or this process's share).
      initial: pairs already done before this run (a resumed job).
      stream: where to write (default stderr); None disables output.
      every: seconds between updates (default 0.5 on a terminal, where the line is
        redrawn in place, and 10 in a log file, one line each).
    """

    def __init__(self, total: int, initial: int = 0, stream=sys.stderr, every: float | None = None):
        self.total, self.done, self.start_done = total, initial, initial
        self.stream = stream
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
            f"[{bar}] {self.done:,}/{self.total:,} pairs {pct:5.1f}%  "
            f"{rate:,.0f} pairs/s  ETA {eta_s}"
        )

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.perf_counter()
        if self.stream is None or not (force or now - self.last >= self.every):
            return
        self.last = now
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.update(0, force=True)
            if self.tty:
                self.stream.write("\n")

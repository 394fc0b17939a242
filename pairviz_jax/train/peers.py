"""The processes of a multi-process run watch each other: a dead peer stops all within seconds.

jax's coordination service declares a process dead only after its heartbeat timeout and
then aborts the others with a C++ stack trace; a process blocked in a collective cannot
raise. So each process runs a :class:`PeerWatchdog` thread that, every ``interval_s``,
bumps a counter in ``<workdir>/.processes/<i>`` (the workdir is shared by every process:
checkpoints need it anyway) and reads the others'. A peer whose counter has not moved for
``timeout_s``, or that wrote ``failed <reason>``, makes every survivor print one line
naming it and how to resume, and exit with status :data:`EXIT_PEER_LOST`, well before
the heartbeat timeout (``sharding.HEARTBEAT_TIMEOUT_S``). Nothing is lost: the rerun
resumes from the last complete checkpoint, whose input position follows from its step.

:func:`check_shared_workdir` verifies, before any work, that every process sees what
process 0 writes in the workdir, and stops all of them with the same line otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable

import jax
import numpy as np
from etils import epath

from pairviz_jax._util import write_text_atomic

EXIT_PEER_LOST = 3
TIMEOUT_S = 8.0
_DIR = ".processes"


class WorkdirNotSharedError(RuntimeError):
    """Some process does not see the files process 0 wrote in the workdir (one line)."""


def check_shared_workdir(workdir: epath.Path) -> None:
    """Raises :class:`WorkdirNotSharedError` in every process unless all see one workdir.

    Process 0 writes a fresh token; after a barrier every process reads it; the results
    are gathered so that every process raises the same error. A no-op for one process.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    path = epath.Path(workdir) / _DIR / "token"
    token = uuid.uuid4().hex if jax.process_index() == 0 else None
    if token is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token)
    # Every process learns process 0's token through the collectives, then reads the file.
    code = np.frombuffer((token or "0" * 32).encode(), np.uint8)
    code = multihost_utils.broadcast_one_to_all(code)
    want = bytes(np.asarray(code)).decode()
    try:
        seen = path.read_text() == want
    except OSError:
        seen = False
    oks = np.asarray(multihost_utils.process_allgather(np.int32(seen)))
    blind = [int(i) for i in np.flatnonzero(oks == 0)]
    if blind:
        raise WorkdirNotSharedError(
            f"the workdir {workdir} is not shared: process(es) {blind} of "
            f"{jax.process_count()} do not see what process 0 wrote there; give every "
            "process the same shared directory (a network filesystem or gs://...)"
        )


class PeerWatchdog:
    """A daemon thread that ends this process when a peer dies or fails.

    Args:
      workdir: the run's shared workdir.
      describe: returns the text that tells the user where the run stands and how to
        resume (called once, by the thread, when a peer is lost).
      timeout_s: a peer whose counter has not moved this long is dead.
      interval_s: how often this process writes its counter and reads the others'.
      exit_fn: what ends the process (``os._exit``: a process blocked in a collective
        cannot be stopped otherwise); tests replace it.
    """

    def __init__(
        self,
        workdir: epath.Path,
        describe: Callable[[], str],
        *,
        timeout_s: float = TIMEOUT_S,
        interval_s: float = 1.0,
        exit_fn: Callable[[int], None] = os._exit,
    ):
        self.dir = epath.Path(workdir) / _DIR
        self.index, self.count = jax.process_index(), jax.process_count()
        self.describe, self.timeout_s, self.interval_s = describe, timeout_s, interval_s
        self.exit_fn = exit_fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watchdog", daemon=True)
        self._beat = 0
        self._seen: dict[int, tuple[str, float]] = {}

    def start(self) -> PeerWatchdog:
        if self.count > 1:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._thread.start()
        return self

    def _write(self, text: str) -> None:
        write_text_atomic(self.dir / f"process_{self.index}", text)

    def stop(self, reason: str | None = None) -> None:
        """Stops watching; peers read ``done`` (or ``failed <reason>``) from now on."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.count > 1:
            self._write("done" if reason is None else f"failed {' '.join(reason.split())}")

    def _lost(self, peer: int, why: str) -> None:
        print(
            f"process {self.index} of {self.count}: process {peer} {why}; stopping. "
            f"{self.describe()}",
            file=sys.stderr,
            flush=True,
        )
        if self.index == 0 and self.count > 2:
            # Process 0 hosts jax's coordination service, whose end aborts the others:
            # give them time to notice and say so themselves.
            time.sleep(3 * self.interval_s)
        self.exit_fn(EXIT_PEER_LOST)

    def _check(self, peer: int, now: float) -> bool:
        """Reads one peer; returns False (after reporting) if it is lost."""
        try:
            text = (self.dir / f"process_{peer}").read_text()
        except OSError:
            text = ""
        if text.startswith("failed"):
            self._lost(peer, "failed: " + (text.removeprefix("failed").strip() or "?"))
            return False
        last = self._seen.get(peer)
        if last is None or last[0] != text or text == "done":
            self._seen[peer] = (text, now)
        elif now - last[1] > self.timeout_s:
            self._lost(peer, f"stopped answering (silent for {now - last[1]:.0f} s)")
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._beat += 1
            try:
                self._write(f"alive {self._beat}")
            except OSError:
                pass  # a flaky write: the peers tolerate timeout_s of silence
            now = time.monotonic()
            for peer in range(self.count):
                if peer != self.index and not self._check(peer, now):
                    return
            self._stop.wait(self.interval_s)

"""Independent workers sharing one output directory: heartbeats, claims with leases, tasks.

Any number of processes, on one machine or many sharing a filesystem, split a job's
tasks (embed a chunk of images, compute a shard, write the manifest) with no collectives
and no coordinator:

* Each worker has a random token and a heartbeat file ``workers/<token>.json`` whose
  modification time a background thread refreshes every ``lease / 4`` seconds.
* A task is *claimed* by creating ``claims/<task>`` exclusively (``O_CREAT | O_EXCL``)
  with the worker's token inside; the claim lives as long as its owner's heartbeat.
* A claim is *expired* when its owner's heartbeat file has not changed for ``lease``
  seconds of the observer's own clock (no clocks are compared across machines) or is
  gone. Another worker then takes the task over: it renames the claim to a name of its
  own (one rename wins), checks that it moved the claim it judged expired, and claims.
* A task is *done* when its result is committed, by one atomic rename of a directory or
  an exclusive link of a file (``store.commit_dir``/``store.commit_file``): two workers
  that computed the same task (a stolen lease, a stalled process) commit it once.

So a worker may start, die (``SIGKILL``, a preempted machine) and restart at any time:
its claimed task is taken over after ``lease`` seconds, and nothing it half wrote is
ever read (temporary names carry its token). The filesystem must give atomic
``rename``/``link`` and exclusive create (local disks, NFS); object-store mounts that
emulate directories do not.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_LEASE", "Worker", "run_tasks"]

logger = logging.getLogger(__name__)

# Seconds without a heartbeat after which a worker's claims are taken over: a dead
# worker's task waits this long (seen from each other worker's clock) before it is redone.
DEFAULT_LEASE = 60.0


class Worker:
    """One process's identity in a job directory, with its heartbeat thread.

    Args:
      root: the job's output directory (``workers/`` and ``claims/`` are made in it).
      lease: seconds without a heartbeat before this worker's claims expire.
      label: written into the heartbeat file for people (host, pid, process id).

    Use as a context manager: entering starts the heartbeat, leaving stops it, releases
    the claims still held and removes the heartbeat file.
    """

    def __init__(self, root: str, lease: float = DEFAULT_LEASE, label: str = ""):
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        self.root, self.lease = root, float(lease)
        self.token = secrets.token_hex(6)
        self.workers = os.path.join(root, "workers")
        self.claims = os.path.join(root, "claims")
        self.beat_path = os.path.join(self.workers, f"{self.token}.json")
        self.label = label or f"{socket.gethostname()}:{os.getpid()}"
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, tuple[object, float]] = {}  # token -> (stat, first seen)

    # ------------------------------------------------------------------ heartbeat

    def __enter__(self) -> Worker:
        os.makedirs(self.workers, exist_ok=True)
        os.makedirs(self.claims, exist_ok=True)
        with open(self.beat_path, "w", encoding="utf-8") as f:
            json.dump({"label": self.label, "pid": os.getpid(), "started": time.time()}, f)
        self._thread = threading.Thread(target=self._beat, name="pairviz-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                os.utime(self.beat_path)
            except OSError as e:  # the shared filesystem failed: claims will expire
                logger.warning("heartbeat %s failed: %s", self.beat_path, e)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for task in list(self.held):
            self.release(task)
        try:
            os.remove(self.beat_path)
        except OSError:
            pass

    def alive(self, token: str) -> bool:
        """Whether worker ``token`` beat within the lease (as seen from here).

        A heartbeat file first seen now counts as alive for ``lease`` seconds.
        """
        if token == self.token:
            return True
        try:
            st = os.stat(os.path.join(self.workers, f"{token}.json"))
        except FileNotFoundError:
            return False
        state = (st.st_mtime_ns, st.st_size, st.st_ino)
        now = time.monotonic()
        prev = self._seen.get(token)
        if prev is None or prev[0] != state:
            self._seen[token] = (state, now)
            return True
        return now - prev[1] < self.lease

    def dead(self, token: str) -> bool:
        """Whether worker ``token`` is known dead (its heartbeat gone or stale here)."""
        return not self.alive(token)

    # ------------------------------------------------------------------ claims

    def _claim_path(self, task: str) -> str:
        return os.path.join(self.claims, task)

    def owner(self, task: str) -> str | None:
        try:
            with open(self._claim_path(task), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def try_claim(self, task: str) -> bool:
        """Claims ``task`` if unclaimed, or takes it over if its owner is dead."""
        path = self._claim_path(task)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self.owner(task)
                if owner is None:  # released between our create and read: try again
                    continue
                if owner == self.token or not self.dead(owner):
                    return owner == self.token
                if not self._take_over(task, owner):
                    return False
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.token)
            self.held.add(task)
            return True
        return False

    def _take_over(self, task: str, owner: str) -> bool:
        """Moves a dead owner's claim out of the way; True if it was ours to move."""
        path = self._claim_path(task)
        moved = f"{path}.stale-{self.token}"
        try:
            os.rename(path, moved)  # one contender's rename wins
        except FileNotFoundError:
            return True  # someone else moved it: compete for the create
        with open(moved, encoding="utf-8") as f:
            got = f.read().strip()
        if got != owner:  # we moved a fresh claim (a taker's): put it back
            try:
                os.link(moved, path)
            except OSError:
                pass
            os.remove(moved)
            return False
        os.remove(moved)
        logger.warning(
            "took over %s from worker %s (no heartbeat for %.0f s)", task, owner, self.lease
        )
        return True

    def holds(self, task: str) -> bool:
        """Whether this worker still owns ``task`` (checked before a commit)."""
        return self.owner(task) == self.token

    def release(self, task: str) -> None:
        self.held.discard(task)
        if self.owner(task) == self.token:
            try:
                os.remove(self._claim_path(task))
            except FileNotFoundError:
                pass


def run_tasks(
    worker: Worker,
    tasks: Sequence[str],
    done: Callable[[], set[str]],
    run: Callable[[str], None],
    *,
    poll: float | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> int:
    """Runs ``tasks`` with the other workers until every one is done.

    Each pass lists the done tasks (``done()``), claims the next undone unclaimed
    (or expired) task and runs it (``run(task)`` commits its result); when every undone
    task is claimed by a live worker it waits ``poll`` seconds and looks again, so a
    dead worker's task is taken over once its lease expires.

    Args:
      worker: this process's ``Worker``.
      tasks: the task names, in the preferred order.
      done: the names of the committed tasks (any superset of ``tasks`` is fine).
      run: computes and commits one task; the claim is released after it.
      poll: seconds between looks while waiting (default ``lease / 20``, 0.05-2 s).
      on_wait: called with the number of tasks others hold, once per wait.

    Returns:
      The number of tasks this worker ran.
    """
    poll = min(2.0, max(0.05, worker.lease / 20)) if poll is None else poll
    ran = 0
    while True:
        finished = done()
        pending = [t for t in tasks if t not in finished]
        if not pending:
            return ran
        for task in pending:
            if worker.try_claim(task):
                try:
                    if task not in done():  # committed while we claimed it
                        run(task)
                        ran += 1
                finally:
                    worker.release(task)
                break
        else:
            if on_wait is not None:
                on_wait(len(pending))
            time.sleep(poll)


def is_exists_error(e: OSError) -> bool:
    """An ``OSError`` meaning "the target exists" (rename onto a full directory, link)."""
    return e.errno in (errno.EEXIST, errno.ENOTEMPTY)

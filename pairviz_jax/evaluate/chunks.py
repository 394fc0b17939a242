"""Resumable evaluations: triples measured in chunks, each chunk kept on disk once finished.

The swap test (``evaluate.swap``) and correspondence against geometry
(``evaluate.geometry``) run many triples of a photo half; a chunk's file is named by a hash
of the run's settings and the chunk's range, so the same call again reads what is finished
and computes the rest, and a call with other settings never reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def run_chunks(
    total: int,
    chunk: int,
    *,
    config: dict,
    cache_dir: str | None,
    prefix: str,
    compute: Callable[[int, int], R],
    load: Callable[[str], R],
    save: Callable[[str, R], None],
    log: Callable[[str], None] | None,
    label: str,
) -> list[R]:
    """``[compute(s, e)]`` over chunks ``[s, e)`` of ``range(total)``, cached and with progress.

    Args:
      total, chunk: triples in all, triples per chunk.
      config: the settings the results depend on (JSON); with ``[s, e]`` they name a chunk's
        file ``<prefix>_<s>_<hash>.npz`` in ``cache_dir``.
      cache_dir: where finished chunks are kept (created); None keeps nothing.
      compute, load, save: a chunk's results; read one back; write one (atomically).
      log: a progress line after every chunk (None: silence); ``label`` starts it.

    Returns:
      The chunks' results, in order.
    """
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    parts, t_start = [], time.perf_counter()
    for s in range(0, total, chunk):
        e = min(s + chunk, total)
        key = json.dumps({**config, "triples": [s, e]}, sort_keys=True)
        path = None
        if cache_dir:
            digest = hashlib.sha1(key.encode()).hexdigest()[:12]
            path = os.path.join(cache_dir, f"{prefix}_{s:05d}_{digest}.npz")
        if path and os.path.exists(path):
            parts.append(load(path))
            how = "from the cache"
        else:
            r = compute(s, e)
            if path:
                save(path, r)
            parts.append(r)
            how = "computed"
        if log:
            spent = time.perf_counter() - t_start
            log(f"{label}: {e}/{total} triples ({how}; {spent:.0f} s, "
                f"about {spent / e * (total - e):.0f} s left)")  # fmt: skip
    return parts

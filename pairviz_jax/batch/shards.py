"""One shard of a job: its pairs through the compiled calls, committed once as a directory.

``shards/<k>/`` holds ``record.npy``, ``maps_a.npy``, ``maps_b.npy``, ``score.npy`` and
``shard.json`` (``job_id``, ``shard``, ``start``, ``stop``, ``written``, ``skipped``,
``worker``). It is written in the worker's temporary directory and renamed into place
(``store.commit_dir``) after the job's identity is checked, so a shard exists whole and
once, and always carries the job that made it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from pairviz_jax._util import atomic_path
from pairviz_jax.batch.store import commit_dir, read_json
from pairviz_jax.data.images import CorruptImageError

__all__ = ["compute_shard", "read_marker"]


def compute_shard(
    job, worker, plan, engine, s: int, lo: int, hi: int, bar
) -> tuple[int, int] | None:
    """Computes shard ``s`` (records ``lo..hi-1``) and commits it.

    Args:
      job: the ``job.Job`` (layout, options, identity check).
      worker: this ``claims.Worker`` (its token names the temporary directory).
      plan: the prepared job (pairs, images, readable flags).
      engine: ``kernels.Compute``/``StreamCompute``/``MethodCompute``: ``calls(pairs)``.
      s, lo, hi: the shard and its records.
      bar: the ``Progress`` line.

    Returns:
      ``(written, skipped)`` pairs, or None if another worker committed it first.
    """
    pairs = plan.pairs.take(lo, hi)
    n = len(pairs)
    buf: dict[str, np.ndarray] = {}
    calls = engine.calls(pairs)
    pending = next(calls, None)
    while pending is not None:
        pos, out = pending
        pending = next(calls, None)  # dispatch the next call before waiting on this one
        maps_a, maps_b, score = jax.device_get(out)
        grid = maps_a.shape[-2:]  # [C, gh, gw], or [T, C, gh, gw] from the tile kernel
        if not buf:
            buf = {
                "maps_a": np.empty((n, *grid), np.float16),
                "maps_b": np.empty((n, *grid), np.float16),
                "score": np.empty(n, np.float32),
            }
        valid = pos >= 0
        where = pos[valid]
        buf["maps_a"][where] = maps_a.reshape(len(pos), *grid)[valid]
        buf["maps_b"][where] = maps_b.reshape(len(pos), *grid)[valid]
        buf["score"][where] = score.reshape(len(pos))[valid]
        bar.update(int(valid.sum()))
    return _commit(job, worker, plan, s, lo, hi, pairs, buf)


def _commit(job, worker, plan, s, lo, hi, pairs, buf) -> tuple[int, int] | None:
    lay = job.layout
    keep = plan.ok[pairs[:, 0]] & plan.ok[pairs[:, 1]]
    tmp = lay.tmp_dir(lay.shard(s), worker.token)
    os.makedirs(tmp, exist_ok=True)
    np.save(os.path.join(tmp, "record.npy"), np.arange(lo, hi, dtype=np.int64)[keep])
    for name in ("maps_a", "maps_b", "score"):
        np.save(os.path.join(tmp, f"{name}.npy"), buf[name][keep])
    marker = {
        "job_id": job.job_id,
        "shard": s,
        "start": lo,
        "stop": hi,
        "written": int(keep.sum()),
        "skipped": int((~keep).sum()),
        "worker": worker.token,
        "label": worker.label,
    }
    with open(os.path.join(tmp, "shard.json"), "w", encoding="utf-8") as f:
        json.dump(marker, f)
    job.check_identity()
    if not commit_dir(tmp, lay.shard(s)):
        return None
    if job.opts.png_first > lo:
        _pngs(job, plan, lo, pairs, buf, keep)
    return marker["written"], marker["skipped"]


def read_marker(job, s: int) -> dict[str, Any]:
    """Shard ``s``'s marker, checked to belong to ``job``.

    Raises:
      ValueError: missing, or made by another job.
    """
    marker = read_json(job.layout.shard(s, "shard.json"))
    if marker is None:
        raise ValueError(f"{job.layout.shard(s)} is not committed")
    if marker.get("job_id") != job.job_id:
        raise ValueError(
            f"{job.layout.shard(s)} was written by job {marker.get('job_id')}, not {job.job_id}"
        )
    return marker


def _pngs(job, plan, lo: int, pairs, buf, keep) -> None:
    """Figures of the shard's records below ``png_first`` (the authors' look)."""
    from PIL import Image

    from pairviz_jax.plotting.paper import paper_overlay

    os.makedirs(job.layout.png, exist_ok=True)
    for j in np.flatnonzero(keep):
        record = lo + int(j)
        if record >= job.opts.png_first:
            break
        a, b = pairs[j]
        try:
            img_a, img_b = job.loader.uint8(plan.keys[a]), job.loader.uint8(plan.keys[b])
        except (CorruptImageError, AttributeError):
            continue
        over_a = paper_overlay(img_a, np.asarray(buf["maps_a"][j], np.float32))
        over_b = paper_overlay(img_b, np.asarray(buf["maps_b"][j], np.float32))
        row = np.concatenate([img_a, over_a, over_b, img_b], axis=1)
        path = os.path.join(job.layout.png, f"{record:09d}.png")
        with atomic_path(path, ".png") as tmp:
            Image.fromarray(row).save(tmp)

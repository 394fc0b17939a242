"""The batch job in phases: open (validate, identity, resume), prepare, compute shards, finish.

:func:`run_batch` is the library call (a model, a loader, :class:`BatchOptions`),
:func:`run_loaded` the command line's (a ``runs.LoadedModel`` and file or dataset specs).
Every process that runs the same job on the same output directory is a *worker*
(``claims.Worker``): the tasks of each phase are claimed, computed and committed once by
whichever worker gets them, so workers may start, die and restart at any time. The output
format and the resume rules are in the package docstring (``pairviz_jax.batch``).

Phases (:class:`Job`):

1. :meth:`Job.open`: the options are checked and fingerprinted; ``job.json`` (the job's
   identity) is created exclusively, or, if there, must name this job: a different job on
   the directory is refused before anything is written.
2. :meth:`Job.prepare`: task ``keys`` (the pairs file parsed, the distinct images listed),
   tasks ``embed-<c>`` (a chunk of images folded each), task ``index`` (the unreadable
   images listed, top-k neighbours found); ``prepared.json`` marks the end.
3. :meth:`Job.compute`: tasks ``shard-<k>``, each committed as ``shards/<k>/``.
4. :meth:`Job.finish`: task ``finish`` checks every shard's identity and writes
   ``manifest.json``; dead workers' temporary files are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from pairviz_jax._util import Progress
from pairviz_jax.batch import shards as shard_io
from pairviz_jax.batch.claims import Worker, run_tasks
from pairviz_jax.batch.embed import Embedder, EmbedStore
from pairviz_jax.batch.images import ImageLoader
from pairviz_jax.batch.kernels import DATA_AXIS, Compute, StreamCompute, top_k_pairs
from pairviz_jax.batch.method_kernels import MethodCompute
from pairviz_jax.batch.options import (
    DEFAULT_DEVICE_BUDGET,
    DEFAULT_SHARD_SIZE,
    BatchOptions,
    fingerprint,
)
from pairviz_jax.batch.pairs import AllPairs, ArrayPairs, image_keys, read_keys, read_pairs_file
from pairviz_jax.batch.store import (
    FORMAT,
    Layout,
    clean_stale,
    commit_dir,
    commit_file,
    read_json,
    save_tmp,
    text_tmp,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DEVICE_BUDGET",
    "DEFAULT_SHARD_SIZE",
    "BatchOptions",
    "Job",
    "JobConflict",
    "run_batch",
    "run_loaded",
]


class JobConflict(ValueError):
    """The output directory holds another job (refused before anything is written)."""


@dataclasses.dataclass
class _Plan:
    """What the prepare phase made: the images, the pairs, the folded images."""

    keys: list[str]
    pairs: ArrayPairs | AllPairs
    store: EmbedStore

    @property
    def ok(self) -> np.ndarray:
        return self.store.ok


class Job:
    """One worker's run of a batch job (phases: module docstring).

    Args:
      model, variables: a model of any pooling and its variables.
      loader: key -> normalised image (``ImageLoader``).
      out_dir: the output directory (created).
      opts: ``BatchOptions``.
    """

    def __init__(self, model, variables, loader, out_dir: str, opts: BatchOptions):
        opts.check()
        self.model, self.variables, self.loader, self.opts = model, variables, loader, opts
        self.layout = Layout(out_dir)
        self.fingerprint = fingerprint(opts, model, variables, loader)
        blob = json.dumps(self.fingerprint, sort_keys=True).encode()
        self.job_id = hashlib.sha256(blob).hexdigest()[:16]
        self.stderr = sys.stderr if opts.progress else None

    # ------------------------------------------------------------------ 1. open

    def open(self) -> dict | None:
        """Claims the directory for this job or joins it; the manifest if already complete.

        Raises:
          JobConflict: the directory holds another job (which fingerprint keys differ).
        """
        lay = self.layout
        os.makedirs(lay.root, exist_ok=True)
        job = {"format": FORMAT, "job_id": self.job_id, "fingerprint": self.fingerprint}
        tmp = text_tmp(lay.job, json.dumps(job, indent=1), os.urandom(6).hex())
        self.created = commit_file(tmp, lay.job)
        if not self.created:
            self.check_identity()
        for d in (lay.shards, lay.embed):
            os.makedirs(d, exist_ok=True)
        manifest = read_json(lay.manifest)
        return manifest if manifest is not None and manifest.get("job_id") == self.job_id else None

    def check_identity(self) -> None:
        """Raises ``JobConflict`` unless ``job.json`` names this job (before every commit)."""
        theirs = read_json(self.layout.job) or {}
        if theirs.get("job_id") == self.job_id:
            return
        fp = theirs.get("fingerprint", {})
        diff = sorted(
            k for k in set(fp) | set(self.fingerprint) if fp.get(k) != self.fingerprint.get(k)
        )
        raise JobConflict(
            f"{self.layout.root} holds a different job ({theirs.get('job_id', 'no job id')}, "
            f"differs in {diff}); resume it with its own command, or give another --out"
        )

    # ------------------------------------------------------------------ 2. prepare

    def prepare(self, worker: Worker) -> _Plan:
        """Parses the inputs, folds every image (a chunk per task), lists the pairs."""
        lay, opts = self.layout, self.opts
        if not os.path.exists(lay.prepared):
            run_tasks(
                worker,
                ["keys"],
                lambda: {"keys"} if os.path.exists(lay.images) else set(),
                lambda _: self._keys(worker),
            )
        keys = read_keys(lay.images)
        n_chunks = math.ceil(len(keys) / opts.embed_chunk)
        if not os.path.exists(lay.prepared):
            tasks = [f"embed-{c:06d}" for c in range(n_chunks)]
            done = lambda: {f"embed-{c:06d}" for c in lay.done_chunks()}  # noqa: E731
            embedder = []

            def embed(task: str) -> None:
                if not embedder:
                    embedder.append(
                        Embedder(
                            self.model,
                            self.variables,
                            self.loader,
                            convention=opts.convention,
                            start_layer=opts.start_layer,
                            batch_size=opts.embed_batch,
                        )
                    )
                self._embed_chunk(worker, embedder[0], keys, int(task[6:]))

            run_tasks(worker, tasks, done, embed)
        store = EmbedStore(lay.chunk, len(keys), opts.embed_chunk)
        if not os.path.exists(lay.prepared):
            run_tasks(
                worker,
                ["index"],
                lambda: {"index"} if os.path.exists(lay.prepared) else set(),
                lambda _: self._index(worker, keys, store),
            )
        if opts.mode == "all":
            pairs: ArrayPairs | AllPairs = AllPairs(len(keys))
        else:
            pairs = ArrayPairs(np.load(lay.pairs, mmap_mode="r"))
        return _Plan(keys, pairs, store)

    def _keys(self, worker: Worker) -> None:
        """Task ``keys``: ``pairs.npy`` (a pairs file) and ``images.txt``, committed once."""
        lay, opts = self.layout, self.opts
        if opts.mode == "pairs":
            tmp = f"{lay.pairs}.tmp-{worker.token}"
            try:
                keys = read_pairs_file(opts.pairs_file, tmp)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            self.check_identity()
            commit_file(tmp, lay.pairs)
        else:
            keys = list(dict.fromkeys([*opts.images, *(opts.gallery or [])]))
        tmp = text_tmp(lay.images, "".join(f"{key}\n" for key in keys), worker.token)
        self.check_identity()
        commit_file(tmp, lay.images)

    def _embed_chunk(self, worker: Worker, embedder: Embedder, keys: list[str], c: int) -> None:
        """Task ``embed-<c>``: images ``c * embed_chunk ..`` folded into ``embed/<c>/``."""
        lay, size = self.layout, self.opts.embed_chunk
        part = keys[c * size : (c + 1) * size]
        t = time.perf_counter()
        w, unit, ok, errors = embedder(part)
        tmp = lay.tmp_dir(lay.chunk(c), worker.token)
        os.makedirs(tmp, exist_ok=True)
        for name, x in (("w", w), ("unit", unit), ("ok", ok)):
            np.save(os.path.join(tmp, f"{name}.npy"), x)
        with open(os.path.join(tmp, "errors.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{key}\t{reason}\n" for key, reason in errors)
        self.check_identity()
        commit_dir(tmp, lay.chunk(c))
        if self.stderr is not None:
            rate = len(part) / max(time.perf_counter() - t, 1e-9)
            self.stderr.write(
                f"embedded images {c * size:,}..{c * size + len(part) - 1:,} of {len(keys):,} "
                f"({rate:,.1f} images/s)\n"
            )

    def _index(self, worker: Worker, keys: list[str], store: EmbedStore) -> None:
        """Task ``index``: ``unreadable.txt``, the top-k pairs, then ``prepared.json``."""
        lay, opts = self.layout, self.opts
        lines = []
        for c in range(store.num_chunks):
            with open(lay.chunk(c, "errors.txt"), encoding="utf-8") as f:
                lines.extend(f.readlines())
        if not store.ok.any():
            raise ValueError("no image of the job could be read (see the warnings above)")
        if opts.mode == "topk":
            index = {key: i for i, key in enumerate(keys)}
            qi = np.asarray([index[key] for key in opts.images], np.int64)
            gi = np.asarray([index[key] for key in (opts.gallery or opts.images)], np.int64)
            k = min(opts.top_k, len(gi) - (0 if opts.gallery else 1))
            if k < 1:
                raise ValueError(f"the gallery has {len(gi)} images: too few for top-k")
            nn = top_k_pairs(
                _Rows(store, qi),
                _Rows(store, gi),
                k,
                q_ids=qi,
                g_ids=gi,
                g_ok=store.ok[gi],
                g_block=max(k, opts.device_budget // (4 * store.unit(gi[:1]).shape[1] * 4)),
            )
            pairs = np.stack([np.repeat(qi, k), gi[nn.reshape(-1)]], axis=1).astype(np.int32)
            self.check_identity()
            commit_file(save_tmp(lay.pairs, pairs, worker.token), lay.pairs)
        self.check_identity()
        commit_file(text_tmp(lay.unreadable, "".join(lines), worker.token), lay.unreadable)
        info = {"job_id": self.job_id, "images": len(keys), "unreadable": len(lines)}
        commit_file(text_tmp(lay.prepared, json.dumps(info), worker.token), lay.prepared)

    # ------------------------------------------------------------------ 3. compute

    def compute(self, worker: Worker, plan: _Plan) -> dict[str, Any]:
        """Claims and computes shards until every one is committed (by anyone)."""
        lay, opts = self.layout, self.opts
        total = len(plan.pairs)
        num_shards = math.ceil(total / opts.shard_size)
        size = lambda s: min(opts.shard_size, total - s * opts.shard_size)  # noqa: E731
        already = sum(size(s) for s in lay.done_shards() if s < num_shards)
        bar = Progress(total, already, self.stderr)
        stats = {"computed_shards": 0, "written_this_run": 0, "skipped_this_run": 0}
        engine: list[Any] = []

        def shard(task: str) -> None:
            s = int(task[6:])
            if not engine:
                engine.append(self._engine(plan))
            lo, hi = s * opts.shard_size, min((s + 1) * opts.shard_size, total)
            counts = shard_io.compute_shard(self, worker, plan, engine[0], s, lo, hi, bar)
            if counts is None:  # another worker committed it first
                return
            stats["computed_shards"] += 1
            stats["written_this_run"] += counts[0]
            stats["skipped_this_run"] += counts[1]
            if opts.on_shard is not None:
                opts.on_shard(s)

        tasks = [f"shard-{s:06d}" for s in range(num_shards)]
        t0 = time.perf_counter()
        run_tasks(worker, tasks, lambda: {f"shard-{s:06d}" for s in lay.done_shards()}, shard)
        bar.close()
        stats["pairs_per_s"] = (bar.done - bar.start_done) / max(time.perf_counter() - t0, 1e-9)
        stats["streamed"] = bool(engine) and isinstance(engine[0], StreamCompute)
        return stats

    def _engine(self, plan: _Plan):
        """The compiled computation of this worker: W on the devices, streamed, or a method."""
        opts = self.opts
        mesh = Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
        d = mesh.devices.size
        grid = _grid(self.model, self.loader, plan.store.token_shape[0])
        if opts.method != "paper":
            return MethodCompute(
                self.model, self.variables, self.loader, plan.keys, plan.ok, opts.method, mesh=mesh
            )
        n_tok, emb = plan.store.token_shape
        per_pair = 2 * 4 * n_tok * emb
        resident = plan.store.w_bytes <= opts.device_budget
        cap = (64 << 20) if resident else min(64 << 20, opts.device_budget // 2)
        chunk = opts.chunk_size or max(d, cap // per_pair)
        chunk = max(d, math.ceil(min(chunk, opts.shard_size) / d) * d)
        if not resident:
            return StreamCompute(plan.store, grid, mesh, chunk)
        everything = np.arange(len(plan.keys))
        return Compute(
            plan.store.w(everything), plan.store.unit(everything), grid, mesh, chunk, opts.strategy
        )

    # ------------------------------------------------------------------ 4. finish

    def finish(self, worker: Worker, plan: _Plan) -> dict[str, Any]:
        """Task ``finish``: every shard's identity checked, ``manifest.json`` written once."""
        lay = self.layout
        num_shards = math.ceil(len(plan.pairs) / self.opts.shard_size)

        def write(_: str) -> None:
            markers = [shard_io.read_marker(self, s) for s in range(num_shards)]
            summary = {
                "pairs": len(plan.pairs),
                "shards": num_shards,
                "images": len(plan.keys),
                "unreadable": int((~plan.ok).sum()),
                "grid": list(_grid(self.model, self.loader, plan.store.token_shape[0])),
                "written": sum(m["written"] for m in markers),
                "skipped": sum(m["skipped"] for m in markers),
            }
            manifest = {
                "format": FORMAT,
                "job_id": self.job_id,
                "fingerprint": self.fingerprint,
                "summary": summary,
                "shards": [f"shards/{s:06d}" for s in range(num_shards)],
            }
            self.check_identity()
            commit_file(
                text_tmp(lay.manifest, json.dumps(manifest, indent=1), worker.token), lay.manifest
            )
            self._clean(worker)

        run_tasks(
            worker, ["finish"], lambda: {"finish"} if os.path.exists(lay.manifest) else set(), write
        )
        return read_json(lay.manifest)["summary"]

    def _clean(self, worker: Worker) -> None:
        """Removes dead workers' temporary files, watching their heartbeats for up to 1.5
        leases (a live worker's are left: it removes its own)."""
        owners = set()
        clean_stale(self.layout.root, lambda token: owners.add(token) or False)
        owners.discard(worker.token)
        deadline = time.monotonic() + 1.5 * worker.lease
        while any(worker.alive(t) for t in owners) and time.monotonic() < deadline:
            time.sleep(min(1.0, worker.lease / 10))
        for path in clean_stale(self.layout.root, worker.dead):
            logger.info("removed %s (left by a dead worker)", path)

    # ------------------------------------------------------------------ all

    def run(self) -> dict[str, Any]:
        """The phases in order; returns the summary (``run_batch``)."""
        t_start = time.perf_counter()
        manifest = self.open()
        if manifest is not None:
            if self.stderr is not None:
                self.stderr.write(f"{self.layout.root}: already complete\n")
            return {
                **manifest["summary"],
                "computed_shards": 0,
                "seconds": 0.0,
                "pairs_per_s": 0.0,
                "streamed": False,
            }
        with Worker(self.layout.root, self.opts.lease, self.opts.worker_label) as worker:
            try:
                plan = self.prepare(worker)
            except ValueError:
                # Bad inputs before anything was made: free the directory for the fixed job.
                if self.created and not os.path.exists(self.layout.images):
                    os.remove(self.layout.job)
                raise
            prepare_seconds = time.perf_counter() - t_start
            stats = self.compute(worker, plan)
            summary = self.finish(worker, plan)
        if self.stderr is not None:
            self.stderr.write(_final_line(self.layout, summary) + "\n")
        return {
            **summary,
            **stats,
            "seconds": time.perf_counter() - t_start,
            "prepare_seconds": prepare_seconds,
        }


class _Rows:
    """Unit embeddings of images ``ids`` read from the job's files by slices (top-k)."""

    def __init__(self, store: EmbedStore, ids: np.ndarray):
        self.store, self.ids = store, ids
        self.shape = (len(ids), store.unit(ids[:1]).shape[1])

    def __getitem__(self, where: slice) -> np.ndarray:
        return self.store.unit(self.ids[where])


def _final_line(layout: Layout, summary: dict) -> str:
    line = f"{layout.root}: {summary['written']:,} of {summary['pairs']:,} pairs written"
    if summary["skipped"]:
        line += (
            f", {summary['skipped']:,} skipped ({summary['unreadable']:,} unreadable images, "
            f"listed in {layout.unreadable})"
        )
    return line


def _grid(model, loader, n_tok: int) -> tuple[int, int]:
    size = getattr(loader, "image_size", None)
    if size is not None and hasattr(model, "grid"):
        gh, gw = model.grid((*size, 3))
        if gh * gw == n_tok:
            return gh, gw
    k = math.isqrt(n_tok)
    if k * k != n_tok:
        raise ValueError(f"cannot tell the token grid of {n_tok} tokens")
    return k, k


def run_batch(
    model, variables, loader, out_dir: str, options: BatchOptions | None = None, **kw
) -> dict[str, Any]:
    """Paired maps for many pairs, streamed to ``out_dir`` (format: package docstring).

    Run the same call again after a crash or kill to resume, or in several processes at
    once (on one machine or many sharing ``out_dir``) to split the work: each is a
    worker that claims tasks (``claims``), and the job ends when every shard is in.

    Args:
      model, variables: a model of any pooling and its variables.
      loader: key -> normalised image (``ImageLoader``).
      out_dir: the output directory (created).
      options: ``BatchOptions``; keyword arguments override its fields.

    Returns:
      A summary dict: ``pairs``, ``written``, ``skipped``, ``shards``, ``images``,
      ``unreadable``, ``grid``, and for this worker's run ``computed_shards``,
      ``written_this_run``, ``skipped_this_run``, ``seconds``, ``prepare_seconds``
      (inputs and embedding), ``pairs_per_s`` (its pairs phase) and ``streamed``
      (W read from disk per chunk: a gallery over ``device_budget``).

    Raises:
      JobConflict: ``out_dir`` holds another job.
      ValueError: bad options or inputs (one line).
    """
    opts = dataclasses.replace(options or BatchOptions(), **kw)
    return Job(model, variables, loader, out_dir, opts).run()


def run_loaded(
    loaded,
    out_dir: str,
    *,
    pairs_file: str | None = None,
    images: str | None = None,
    gallery: str | None = None,
    top_k: int | None = None,
    all_pairs: bool = False,
    root: str | None = None,
    data_dir: str | None = None,
    **kw,
) -> dict[str, Any]:
    """``run_batch`` for a loaded model (``plotting.load_run``/``load_weights``) and CLI inputs.

    Args:
      loaded: has ``model``, ``variables``, ``image_size``, ``mean``, ``std`` and ``label``.
      out_dir: the output directory.
      pairs_file: a pairs file, or None.
      images: with ``top_k``/``all_pairs``: a file of keys or ``DATASET:SPLIT[:N]``.
      gallery: with ``top_k``: the same kinds of spec (default ``images``).
      top_k, all_pairs: as ``BatchOptions``.
      root: directory relative image paths are resolved against (default: the
        pairs or images file's directory).
      data_dir: TFDS data directory of prepared datasets.
      **kw: further ``BatchOptions`` fields (``convention``, ``method``, ``shard_size``, ...).

    Returns:
      ``run_batch``'s summary.
    """
    spec_file = pairs_file or (images if images and os.path.isfile(images) else None)
    if root is None and spec_file is not None:
        root = os.path.dirname(os.path.abspath(spec_file))
    loader = ImageLoader(
        loaded.image_size,
        (loaded.mean, loaded.std),
        data_dir=data_dir,
        root=root,
        patch_size=getattr(loaded, "patch_size", (1, 1)),
    )
    if pairs_file is not None:
        if images or gallery or top_k or all_pairs:
            raise ValueError("--pairs goes alone (not with --images, --gallery, --top-k, ...)")
        if not os.path.isfile(pairs_file):
            raise ValueError(f"--pairs {pairs_file}: no such file")
    elif images is None:
        raise ValueError("give --pairs FILE, or --images with --top-k K or --all-pairs")
    elif (top_k is None) == (not all_pairs):
        raise ValueError("--images needs exactly one of --top-k K and --all-pairs")
    return run_batch(
        loaded.model,
        loaded.variables,
        loader,
        out_dir,
        pairs_file=pairs_file,
        images=image_keys(images) if images else None,
        gallery=image_keys(gallery) if gallery else None,
        top_k=top_k,
        all_pairs=all_pairs,
        model_id=getattr(loaded, "label", ""),
        **kw,
    )

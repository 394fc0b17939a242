"""The batch job: read the inputs, embed each image once, compute and commit the shards.

:func:`run_batch` is the library call (a model, a loader, the pairs), :func:`run_loaded` the
command line's (a ``runs.LoadedModel`` and file or dataset specs). The output format and
the resume rules are in the package docstring (``pairviz_jax.batch``).
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from pairviz_jax import explain
from pairviz_jax.batch.embed import barrier, embed_images
from pairviz_jax.batch.images import ImageLoader
from pairviz_jax.batch.kernels import DATA_AXIS, Compute, top_k_pairs
from pairviz_jax.batch.method_kernels import MethodCompute
from pairviz_jax.batch.pairs import AllPairs, ArrayPairs, image_keys, read_keys, read_pairs_file
from pairviz_jax.batch.progress import Progress
from pairviz_jax.batch.store import (
    Layout,
    atomic_save,
    atomic_text,
    clean_stale,
    commit_shard,
    params_fingerprint,
    read_json,
    sha256_file,
    shard_name,
)
from pairviz_jax.data.images import CorruptImageError
from pairviz_jax.explain import methods as explain_methods

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHARD_SIZE", "run_batch", "run_loaded"]

# Records per shard file. 65,536: the README's measured figures (10^6 pairs among 1,000
# images) come from this size; a shard must hold enough pairs per block of A images for
# the "tile" kernel to pay (see kernels.Compute), 16,384 took the same job 1.8x longer.
DEFAULT_SHARD_SIZE = 65536


@dataclasses.dataclass
class _Plan:
    keys: list[str]
    pairs: ArrayPairs | AllPairs
    w: np.ndarray
    unit: np.ndarray
    ok: np.ndarray


def _prepare(
    layout: Layout,
    fingerprint: dict,
    mode: str,
    model,
    variables,
    loader,
    *,
    pairs_file: str | None,
    images: Sequence[str] | None,
    gallery: Sequence[str] | None,
    k: int | None,
    convention: str,
    start_layer: int,
    embed_batch: int,
    progress: bool,
) -> _Plan:
    """Reads the inputs, embeds the images, lists the pairs; or loads all of it on resume."""
    pid = jax.process_index()
    if pid == 0:  # what a killed run left half-written; nobody else writes before a barrier
        for path in clean_stale(layout.root):
            logger.info("removed %s (left by a killed run)", path)
    job = read_json(layout.job)
    if job is not None:
        if job["fingerprint"] != fingerprint:
            diff = sorted(
                key
                for key in set(job["fingerprint"]) | set(fingerprint)
                if job["fingerprint"].get(key) != fingerprint.get(key)
            )
            raise ValueError(
                f"{layout.root} holds a different job (differs in {diff}); resume with the same "
                "command, or write to a new output directory"
            )
        barrier("pairviz_batch_resumed")
        keys = read_keys(layout.images)
        pairs = AllPairs(len(keys)) if mode == "all" else ArrayPairs(np.load(layout.pairs, "r"))
        w = np.load(os.path.join(layout.embed, "w.npy"), mmap_mode="r")
        unit = np.load(os.path.join(layout.embed, "unit.npy"))
        ok = np.load(os.path.join(layout.embed, "ok.npy"))
        return _Plan(keys, pairs, np.asarray(w), unit, ok)

    for d in (layout.root, layout.shards, layout.embed):
        os.makedirs(d, exist_ok=True)
    if mode == "pairs":
        if pid == 0:
            keys = read_pairs_file(pairs_file, layout.pairs)
            atomic_text(layout.images, "".join(f"{key}\n" for key in keys))
        barrier("pairviz_batch_pairs_read")
        keys = read_keys(layout.images)
    else:
        keys = list(dict.fromkeys([*images, *(gallery or [])]))
        for key in keys:
            if "\n" in key or not key.strip() or key != key.strip():
                raise ValueError(f"image key {key!r} is empty or has surrounding whitespace")
        if pid == 0:
            atomic_text(layout.images, "".join(f"{key}\n" for key in keys))

    w, unit, ok, errors = embed_images(
        model,
        variables,
        loader,
        keys,
        convention=convention,
        start_layer=start_layer,
        batch_size=embed_batch,
        progress=progress,
    )
    if errors:
        with open(f"{layout.unreadable}.p{pid}", "w", encoding="utf-8") as f:
            f.writelines(f"{key}\t{reason}\n" for key, reason in errors)
    barrier("pairviz_batch_embedded")
    if pid == 0:
        lines = []
        for p in range(jax.process_count()):
            part = f"{layout.unreadable}.p{p}"
            if os.path.exists(part):
                with open(part, encoding="utf-8") as f:
                    lines.extend(f.readlines())
                os.remove(part)
        atomic_text(layout.unreadable, "".join(lines))
        atomic_save(os.path.join(layout.embed, "w.npy"), w)
        atomic_save(os.path.join(layout.embed, "unit.npy"), unit)
        atomic_save(os.path.join(layout.embed, "ok.npy"), ok)
        if mode == "topk":
            index = {key: i for i, key in enumerate(keys)}
            qi = np.asarray([index[key] for key in images], np.int64)
            gi = np.asarray([index[key] for key in (gallery or images)], np.int64)
            kk = min(k, len(gi) - (0 if gallery else 1))
            if kk < 1:
                raise ValueError(f"the gallery has {len(gi)} images: too few for top-k")
            nn_ = top_k_pairs(unit[qi], unit[gi], kk, q_ids=qi, g_ids=gi, g_ok=ok[gi])
            pairs = np.stack([np.repeat(qi, kk), gi[nn_.reshape(-1)]], axis=1).astype(np.int32)
            atomic_save(layout.pairs, pairs)
        atomic_text(layout.job, json.dumps({"fingerprint": fingerprint}, indent=1))
    barrier("pairviz_batch_prepared")
    pairs = AllPairs(len(keys)) if mode == "all" else ArrayPairs(np.load(layout.pairs, "r"))
    return _Plan(keys, pairs, w, unit, ok)


def run_batch(
    model,
    variables,
    loader: ImageLoader,
    out_dir: str,
    *,
    pairs_file: str | None = None,
    images: Sequence[str] | None = None,
    gallery: Sequence[str] | None = None,
    top_k: int | None = None,
    all_pairs: bool = False,
    convention: str = "authors",
    start_layer: int = 0,
    method: str = "paper",
    shard_size: int = DEFAULT_SHARD_SIZE,
    chunk_size: int | None = None,
    strategy: str = "auto",
    embed_batch: int = 64,
    png_first: int = 0,
    model_id: str = "",
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Paired maps for many pairs, streamed to ``out_dir`` (format: module docstring).

    One of three inputs:

    * ``pairs_file``: a CSV/TSV of two image keys per line (``read_pairs_file``);
    * ``images`` + ``top_k``: each image against its k most similar images of
      ``gallery`` (default: of ``images``, itself excluded);
    * ``images`` + ``all_pairs``: every unordered pair i < j.

    Run the same call again after a crash or kill to resume. With several
    processes (``jax.distributed.initialize`` first) every process makes the
    same call with the same ``out_dir`` on a shared filesystem.

    Args:
      model, variables: a model of any pooling and its variables.
      loader: key -> normalised image (``ImageLoader``).
      out_dir: the output directory (created).
      pairs_file, images, gallery, top_k, all_pairs: the input (above).
      convention: ``"authors"`` or ``"transpose"`` (eq. 6, see ``explain.redistribute``).
      start_layer: first block of the rollout.
      method: ``"paper"`` (the default: one fold per image, a small product per pair) or
        another ``explain.methods`` name (one backward pass per pair and direction,
        ``method_kernels``; ``convention`` and ``start_layer`` are the paper's).
      shard_size: records per shard file.
      chunk_size: pairs per compiled call (a multiple of the local devices that
        divides ``shard_size``; default from the size of W, ~64 MB of gathers).
      strategy: ``"gather"``, ``"tile"`` or ``"auto"`` (per shard; see ``kernels.Compute``).
      embed_batch: images per forward batch (global).
      png_first: also write PNG figures of records ``< png_first``.
      model_id: a name for the model (a checkpoint path) recorded in ``job.json``;
        the parameters themselves are fingerprinted.
      progress: print progress to stderr (process 0).
      on_shard: called with the shard index after each shard is committed.

    Returns:
      A summary dict: ``pairs``, ``written``, ``skipped``, ``shards``, ``images``,
      ``unreadable``, and for this run ``computed_shards``, ``seconds``,
      ``prepare_seconds`` (reading the inputs, decoding and embedding the images; the
      rest is the pairs) and ``pairs_per_s`` (in the pairs phase, compilation included).
    """
    t_start = time.perf_counter()
    modes = [pairs_file is not None, top_k is not None, bool(all_pairs)]
    if sum(modes) != 1:
        raise ValueError("give exactly one of pairs_file, images with top_k, images with all_pairs")
    mode = ("pairs", "topk", "all")[modes.index(True)]
    if mode != "pairs" and not images:
        raise ValueError(f"{mode} needs a non-empty list of images")
    if gallery is not None and mode != "topk":
        raise ValueError("gallery only goes with top_k")
    if convention not in explain.CONVENTIONS:
        raise ValueError(f"convention must be one of {explain.CONVENTIONS}, got {convention!r}")
    if method != "paper":
        explain_methods.get(method)  # ValueError naming the known methods
        if convention != "authors" or start_layer:
            raise ValueError(f"convention and start_layer are the paper's, not {method!r}'s")
    if strategy not in ("auto", "gather", "tile"):
        raise ValueError(f"strategy must be auto, gather or tile, got {strategy!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    layout = Layout(out_dir)
    fingerprint = {
        "mode": mode,
        "pairs_file_sha256": sha256_file(pairs_file) if pairs_file else None,
        "images_sha256": hashlib.sha256("\n".join(images or []).encode()).hexdigest(),
        "gallery_sha256": (
            hashlib.sha256("\n".join(gallery).encode()).hexdigest() if gallery else None
        ),
        "top_k": top_k,
        "convention": convention,
        "start_layer": start_layer,
        "shard_size": shard_size,
        "loader": loader.fingerprint() if hasattr(loader, "fingerprint") else repr(loader),
        "model": repr(model),
        "model_id": model_id,
        "params_sha256": params_fingerprint(variables),
    }
    if method != "paper":  # absent for the paper's: jobs written before keep resuming
        fingerprint["method"] = method
    fingerprint = json.loads(json.dumps(fingerprint))  # compared with what job.json holds
    manifest = read_json(layout.manifest)
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        if progress and jax.process_index() == 0:
            sys.stderr.write(f"{layout.root}: already complete\n")
        return {**manifest["summary"], "computed_shards": 0, "seconds": 0.0, "pairs_per_s": 0.0}

    plan = _prepare(
        layout,
        fingerprint,
        mode,
        model,
        variables,
        loader,
        pairs_file=pairs_file,
        images=images,
        gallery=gallery,
        k=top_k,
        convention=convention,
        start_layer=start_layer,
        embed_batch=embed_batch,
        progress=progress,
    )
    prepare_seconds = time.perf_counter() - t_start
    total = len(plan.pairs)
    num_shards = math.ceil(total / shard_size)
    nproc, pid = jax.process_count(), jax.process_index()

    # Pairs on this process's devices: W and u replicated, chunks of pairs split.
    mesh = Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
    d = mesh.devices.size
    n_tok, emb = plan.w.shape[1], plan.w.shape[2]
    if chunk_size is None:
        chunk_size = max(d, min(shard_size, (64 << 20) // (2 * 4 * n_tok * emb)))
    chunk_size = max(d, math.ceil(min(chunk_size, shard_size) / d) * d)
    grid = _grid(model, loader, n_tok)
    if method == "paper":
        compute = Compute(plan.w, plan.unit, grid, mesh, chunk_size, strategy)
    else:
        compute = MethodCompute(model, variables, loader, plan.keys, plan.ok, method)

    mine = [s for s in range(pid, num_shards, nproc) if not layout.done(s)]
    share = sum(min(shard_size, total - s * shard_size) for s in range(pid, num_shards, nproc))
    remaining = sum(min(shard_size, total - s * shard_size) for s in mine)
    bar = Progress(share, share - remaining, sys.stderr if progress and pid == 0 else None)

    def calls() -> Iterator[tuple[int, np.ndarray, np.ndarray, Any, bool]]:
        for s in mine:
            lo, hi = s * shard_size, min((s + 1) * shard_size, total)
            pairs = plan.pairs.take(lo, hi)
            stream = compute.calls(pairs)
            item = next(stream)
            for following in stream:
                yield s, pairs, *item, False
                item = following
            yield s, pairs, *item, True

    written = skipped = computed = 0
    buf: dict[str, np.ndarray] = {}
    stream = calls()
    pending = next(stream, None)
    while pending is not None:
        s, pairs, pos, out, last = pending
        pending = next(stream, None)  # dispatch the next call before waiting on this one
        maps_a, maps_b, score = jax.device_get(out)
        maps_a = maps_a.reshape(len(pos), *grid)
        maps_b = maps_b.reshape(len(pos), *grid)
        score = score.reshape(len(pos))
        if not buf:
            n = len(pairs)
            buf = {
                "maps_a": np.empty((n, *maps_a.shape[1:]), np.float16),
                "maps_b": np.empty((n, *maps_b.shape[1:]), np.float16),
                "score": np.empty(n, np.float32),
                "pairs": pairs,
            }
        valid = pos >= 0
        where = pos[valid]
        buf["maps_a"][where], buf["maps_b"][where] = maps_a[valid], maps_b[valid]
        buf["score"][where] = score[valid]
        bar.update(int(valid.sum()))
        if last:
            lo = s * shard_size
            w_, s_ = _commit(layout, s, lo, lo + len(pairs), buf, plan, png_first, loader)
            written, skipped, computed = written + w_, skipped + s_, computed + 1
            buf = {}
            if on_shard is not None:
                on_shard(s)
    bar.close()
    barrier("pairviz_batch_done")
    seconds = time.perf_counter() - t_start
    summary = {
        "pairs": total,
        "shards": num_shards,
        "images": len(plan.keys),
        "unreadable": int((~plan.ok).sum()),
        "grid": list(grid),
    }
    if pid == 0:
        missing = [s for s in range(num_shards) if not layout.done(s)]
        if missing:
            raise RuntimeError(f"shards {missing[:10]} of {layout.root} are not committed")
        markers = [read_json(layout.shard(s, "json")) for s in range(num_shards)]
        summary["written"] = sum(m["written"] for m in markers)
        summary["skipped"] = sum(m["skipped"] for m in markers)
        atomic_text(
            layout.manifest,
            json.dumps(
                {
                    "fingerprint": fingerprint,
                    "summary": summary,
                    "shards": [shard_name(s) for s in range(num_shards)],
                },
                indent=1,
            ),
        )
    barrier("pairviz_batch_manifest")
    summary = read_json(layout.manifest)["summary"]
    done_here = bar.done - bar.start_done
    return {
        **summary,
        "computed_shards": computed,
        "seconds": seconds,
        "prepare_seconds": prepare_seconds,
        "pairs_per_s": done_here / max(time.perf_counter() - bar.t0, 1e-9),
        "written_this_run": written,
        "skipped_this_run": skipped,
    }


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


def _commit(
    layout: Layout, s: int, lo: int, hi: int, buf: dict, plan: _Plan, png_first: int, loader
) -> tuple[int, int]:
    """Writes shard s (records lo..hi-1), drawing the records below ``png_first``."""

    def png(record: int, j: int) -> None:
        if record >= png_first:
            return
        a, b = buf["pairs"][j]
        try:
            img_a, img_b = loader.uint8(plan.keys[a]), loader.uint8(plan.keys[b])
        except (CorruptImageError, AttributeError):
            return
        os.makedirs(layout.png, exist_ok=True)
        _png(
            os.path.join(layout.png, f"{record:09d}.png"),
            img_a,
            img_b,
            buf["maps_a"][j],
            buf["maps_b"][j],
        )

    return commit_shard(layout, s, lo, hi, buf, plan.ok, png if png_first > lo else None)


def _png(path: str, image_a, image_b, map_a, map_b) -> None:
    """A row of four: A, A's map over A, B's map over B, B (the authors' renderer)."""
    from PIL import Image

    from pairviz_jax.plotting.paper import paper_overlay

    over_a = paper_overlay(image_a, np.asarray(map_a, np.float32))
    over_b = paper_overlay(image_b, np.asarray(map_b, np.float32))
    Image.fromarray(np.concatenate([image_a, over_a, over_b, image_b], axis=1)).save(path)


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
      top_k, all_pairs: as ``run_batch``.
      root: directory relative image paths are resolved against (default: the
        pairs or images file's directory).
      data_dir: TFDS data directory of prepared datasets.
      **kw: further ``run_batch`` arguments (``convention``, ``method``, ``shard_size``,
        ``png_first``).

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

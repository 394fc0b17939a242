"""What a batch job computes and how: :class:`BatchOptions` and the job's fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from pairviz_jax import explain
from pairviz_jax.argcheck import DEFAULT_METHOD
from pairviz_jax.batch.claims import DEFAULT_LEASE
from pairviz_jax.batch.store import FORMAT, params_fingerprint, sha256_file
from pairviz_jax.explain import methods as explain_methods

__all__ = ["DEFAULT_DEVICE_BUDGET", "DEFAULT_SHARD_SIZE", "BatchOptions", "fingerprint"]

# Records per shard file. 65,536: docs/scale.md's measured figures (10^6 pairs among 1,000
# images) come from this size; a shard must hold enough pairs per block of A images for
# the "tile" kernel to pay (see kernels.Compute), 16,384 took the same job 1.8x longer.
DEFAULT_SHARD_SIZE = 65536

# Bytes of folded images (W, float32) a worker may keep on its devices. Above it the
# gallery streams: W is read per chunk of pairs (kernels.StreamCompute).
DEFAULT_DEVICE_BUDGET = 1 << 30


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What a job computes and how (the fields in ``fingerprint`` define the job).

    Attributes:
      pairs_file: a CSV/TSV of two image keys per line (``read_pairs_file``), or
      images + top_k: each image against its k most similar images of ``gallery``
        (default: of ``images``, itself excluded), or
      images + all_pairs: every unordered pair i < j.
      convention: ``"authors"`` or ``"transpose"`` (eq. 6, see ``explain.redistribute``).
      start_layer: first block of the rollout.
      method: ``"paper"`` (one fold per image, a small product per pair) or another
        ``explain.methods`` name (one backward pass per pair and direction).
      shard_size: records per shard.
      embed_chunk: images per embedding task (``embed/<c>/``).
      chunk_size: pairs per compiled call (default from the size of W, ~64 MB).
      strategy: ``"gather"``, ``"tile"`` or ``"auto"`` (per shard; ``kernels.Compute``).
      device_budget: bytes of folded images a worker keeps on its devices; a larger
        gallery streams from disk (``kernels.StreamCompute``), so memory is flat in the
        number of distinct images.
      embed_batch: images per forward batch.
      png_first: also write PNG figures of records ``< png_first``.
      model_id: a name for the model recorded in ``job.json`` (parameters are hashed).
      progress: print progress to stderr.
      lease: seconds without a heartbeat before a worker's claims are taken over.
      worker_label: names this worker in ``workers/`` and in the shards it commits.
      on_shard: called with the shard index after each shard this worker commits.
    """

    pairs_file: str | None = None
    images: Sequence[str] | None = None
    gallery: Sequence[str] | None = None
    top_k: int | None = None
    all_pairs: bool = False
    convention: str = "authors"
    start_layer: int = 0
    method: str = DEFAULT_METHOD
    shard_size: int = DEFAULT_SHARD_SIZE
    embed_chunk: int = 4096
    chunk_size: int | None = None
    strategy: str = "auto"
    device_budget: int = DEFAULT_DEVICE_BUDGET
    embed_batch: int = 64
    png_first: int = 0
    model_id: str = ""
    progress: bool = True
    lease: float = DEFAULT_LEASE
    worker_label: str = ""
    on_shard: Callable[[int], None] | None = None

    @property
    def mode(self) -> str:
        modes = [self.pairs_file is not None, self.top_k is not None, bool(self.all_pairs)]
        if sum(modes) != 1:
            raise ValueError(
                "give exactly one of pairs_file, images with top_k, images with all_pairs"
            )
        return ("pairs", "topk", "all")[modes.index(True)]

    def check(self) -> None:
        """Raises ValueError (one line) for options that cannot make a job."""
        mode = self.mode
        if mode != "pairs" and not self.images:
            raise ValueError(f"{mode} needs a non-empty list of images")
        if self.gallery is not None and mode != "topk":
            raise ValueError("gallery only goes with top_k")
        if mode == "topk" and self.top_k < 1:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.convention not in explain.CONVENTIONS:
            raise ValueError(
                f"convention must be one of {explain.CONVENTIONS}, got {self.convention!r}"
            )
        if self.method != "paper":
            explain_methods.get(self.method)  # ValueError naming the known methods
            if self.convention != "authors" or self.start_layer:
                raise ValueError(
                    f"convention and start_layer are the paper's, not {self.method!r}'s"
                )
        if self.strategy not in ("auto", "gather", "tile"):
            raise ValueError(f"strategy must be auto, gather or tile, got {self.strategy!r}")
        for name in ("shard_size", "embed_chunk", "embed_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for key in [*(self.images or []), *(self.gallery or [])]:
            if "\n" in key or not key.strip() or key != key.strip():
                raise ValueError(f"image key {key!r} is empty or has surrounding whitespace")


def _digest(keys: Sequence[str] | None) -> str | None:
    return None if keys is None else hashlib.sha256("\n".join(keys).encode()).hexdigest()


def fingerprint(opts: BatchOptions, model, variables, loader) -> dict[str, Any]:
    """What defines the job's results (the inputs, the model, the settings), JSON-ready."""
    fp = {
        "format": FORMAT,
        "mode": opts.mode,
        "pairs_file_sha256": sha256_file(opts.pairs_file) if opts.pairs_file else None,
        "images_sha256": _digest(opts.images or []),
        "gallery_sha256": _digest(opts.gallery),
        "top_k": opts.top_k,
        "convention": opts.convention,
        "start_layer": opts.start_layer,
        "method": opts.method,
        "shard_size": opts.shard_size,
        "embed_chunk": opts.embed_chunk,
        "loader": loader.fingerprint() if hasattr(loader, "fingerprint") else repr(loader),
        "model": repr(model),
        "model_id": opts.model_id,
        "params_sha256": params_fingerprint(variables),
    }
    return json.loads(json.dumps(fp))  # compared with what job.json holds

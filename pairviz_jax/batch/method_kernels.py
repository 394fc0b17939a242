"""Batch maps by an explanation method other than the paper's (``explain.methods``).

The paper's maps fold every image once (``kernels.Compute``: a pair costs one small
product). A gradient method has no such fold: a pair costs one backward pass per
direction, so its shards run ``explain.paired_maps`` on chunks of pairs, with
the images decoded again (a small cache keeps those a shard repeats). A chunk's pairs are
split over the devices' ``"data"`` axis, as the paper's maps (each device runs its share
of the backward passes). Same interface as ``kernels.Compute``: ``calls(pairs)`` yields
(positions, device outputs) per chunk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pairviz_jax import explain
from pairviz_jax.batch.kernels import padded_chunks
from pairviz_jax.explain import methods

# Pairs per compiled call: 2 x 16 images' backward passes at a time.
DEFAULT_CHUNK = 16


class MethodCompute:
    """Maps of a shard's pairs by ``method``, ``chunk`` pairs per compiled call.

    Args:
      model, variables: the model (a ViT for the attention methods; ``ig`` takes any).
      loader: key -> normalised image [H, W, 3] (``batch.images.ImageLoader``).
      keys: the job's image keys (pairs index them).
      ok: bool [N], False for images that could not be read (drawn as zeros; their
        records are skipped when the shard is committed).
      method: a name of ``explain.methods.METHODS`` other than ``"paper"``.
      chunk: pairs per call (rounded up to a multiple of the devices; the last call is
        padded, so one shape compiles).
      cache: decoded images kept (least recently used dropped).
      mesh: the devices the pairs are split over (default: this process's).
    """

    def __init__(
        self,
        model,
        variables,
        loader,
        keys: Sequence[str],
        ok: np.ndarray,
        method: str,
        chunk: int = DEFAULT_CHUNK,
        cache: int = 1024,
        mesh: Mesh | None = None,
    ):
        methods.get(method)  # ValueError naming the known methods
        self.model, self.variables, self.loader = model, variables, loader
        self.keys, self.ok, self.method = keys, np.asarray(ok, bool), method
        mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
        d = mesh.devices.size
        self.split = NamedSharding(mesh, PartitionSpec("data"))
        self.chunk, self.cache_size = -(-max(1, int(chunk)) // d) * d, cache
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._blank: np.ndarray | None = None

    def _image(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if self.ok[i]:
            x = np.asarray(self.loader(self.keys[i]), np.float32)
        else:
            if self._blank is None:
                good = int(np.flatnonzero(self.ok)[0]) if self.ok.any() else None
                shape = self._image(good).shape if good is not None else None
                if shape is None:
                    raise ValueError("no image of the job could be read")
                self._blank = np.zeros(shape, np.float32)
            x = self._blank
        self._cache[i] = x
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return x

    def calls(self, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        """Yields (positions [C] in ``pairs``, -1 for padding; (maps_a, maps_b, score))."""
        for pos, idx in padded_chunks(pairs, self.chunk):
            a = jax.device_put(np.stack([self._image(int(i)) for i in idx[:, 0]]), self.split)
            b = jax.device_put(np.stack([self._image(int(i)) for i in idx[:, 1]]), self.split)
            out = explain.paired_maps(
                self.model, self.variables, a, b, method=self.method, upsampled=False
            )
            yield pos, (out["map_a"], out["map_b"], out["score"])

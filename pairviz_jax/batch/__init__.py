"""Paired maps for millions of pairs: streaming, sharded, resumable batch jobs.

A job explains a list of image pairs (a pairs file, every query against its
top-k neighbours in a gallery, or all pairs of a set). Each distinct image is
embedded once (``explain.features`` + ``explain.fold``: W [N, E] and u [E]);
a pair then costs one [N, E] x [E] product per direction, through
``explain.cross_maps`` in one of two ways, chosen per shard:

* ``gather``: chunks of pairs, ``cross_maps`` on 1 x 1 blocks vmapped over the
  chunk (cost per pair; any pairs);
* ``tile``: the shard's pairs grouped by blocks of image A, one ``cross_maps``
  product per block against every image, then the pairs picked out (cost per
  block; wins when the pairs are dense among few images, e.g. 10^6 among 1,000).

Calls are compiled once and split over the local devices (a ``Mesh`` with one
``"data"`` axis; W and u replicated). With ``jax.distributed`` the images are
embedded on the global mesh (every process decodes its slice of each batch)
and process p computes shards p, p + P, ...; the output directory must be on a
filesystem all processes share. Results stream to disk shard by shard, so host
memory does not grow with the number of pairs. It does grow with the number
of distinct images: W of every image is held on each device (I x N x E
float32: 16 KB per demo image, 512 KB per ViT-B/16 image at 256 px).

Output directory (the format; every array is a plain ``.npy`` that
``np.load(path, mmap_mode="r")`` maps without reading)::

    job.json                  what was asked (fingerprint), written once the inputs are ready
    images.txt                the distinct images, one key per line; image i = line i
    pairs.npy                 int32 [P, 2]: record r is the pair (image pairs[r, 0], pairs[r, 1])
                              (absent for ``all_pairs``: record r is the r-th pair i < j in
                              row-major order; ``BatchResults.pairs`` computes it)
    embed/w.npy, unit.npy, ok.npy   the folded images (float32 [I, N, E], [I, E]), readable flags
    unreadable.txt            key <TAB> reason, one line per image that could not be read
    shards/<k>.record.npy     int64 [n]: the records of shard k (ascending; pairs with an
                              unreadable image are left out)
    shards/<k>.maps_a.npy     float16 [n, gh, gw]: image A's token-grid map against B (eq. 6)
    shards/<k>.maps_b.npy     float16 [n, gh, gw]: image B's map against A
    shards/<k>.score.npy      float32 [n]: the cosine similarity (the sum of a ``transpose`` map)
    shards/<k>.json           the commit marker of shard k: {"shard", "start", "stop", "written",
                              "skipped", "process"}; a shard exists only once its marker does
    manifest.json             written when every shard is committed: shards, counts, grid
    png/<record>.png          optional figures of the first N records: A, A's map over A,
                              B's map over B, B (``plotting.paper_overlay``, the authors' look)

Shard k holds records ``[k * shard_size, (k + 1) * shard_size)``. Every file is
written under a temporary name and renamed into place, the marker last, so a
job killed at any moment leaves only whole shards; the same command run again
skips committed shards and recomputes the rest: no pair is lost or written
twice. A restart whose inputs, model or settings differ from ``job.json`` is
refused. A job killed while embedding (before ``job.json`` exists) embeds again
on restart, and the temporary files a kill left are removed. Files are not
fsync-ed: this survives a killed process, not a lost machine. Images smaller than
one patch of the model are unreadable (listed, their pairs skipped), as ``pair``
refuses them.

Modules, one job each: ``pairs`` (which pairs: a pairs file, all pairs, key lists),
``images`` (``ImageLoader``), ``kernels`` (the compiled top-k and pair kernels),
``embed`` (each image folded once), ``store`` (the output directory, atomic commits,
``BatchResults``), ``progress``, ``job`` (``run_batch``, ``run_loaded``) and ``cli``
(``visualize.py batch``).
"""

import importlib

# name -> its module, imported on first use: ``visualize.py --help`` imports no JAX.
_WHERE = {
    "embed_images": "pairviz_jax.batch.embed",
    "ImageLoader": "pairviz_jax.batch.images",
    "DEFAULT_SHARD_SIZE": "pairviz_jax.batch.job",
    "run_batch": "pairviz_jax.batch.job",
    "run_loaded": "pairviz_jax.batch.job",
    "top_k_pairs": "pairviz_jax.batch.kernels",
    "AllPairs": "pairviz_jax.batch.pairs",
    "ArrayPairs": "pairviz_jax.batch.pairs",
    "image_keys": "pairviz_jax.batch.pairs",
    "read_keys": "pairviz_jax.batch.pairs",
    "read_pairs_file": "pairviz_jax.batch.pairs",
    "Progress": "pairviz_jax.batch.progress",
    "BatchResults": "pairviz_jax.batch.store",
    "clean_stale": "pairviz_jax.batch.store",
    "params_fingerprint": "pairviz_jax.batch.store",
}

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "AllPairs",
    "ArrayPairs",
    "BatchResults",
    "ImageLoader",
    "Progress",
    "clean_stale",
    "embed_images",
    "image_keys",
    "params_fingerprint",
    "read_keys",
    "read_pairs_file",
    "run_batch",
    "run_loaded",
    "top_k_pairs",
]


def __getattr__(name: str):
    """Imports ``name`` (a function, class or submodule) from its module on first use."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

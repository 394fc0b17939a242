"""Paired maps for millions of pairs: streaming, resumable batch jobs split by independent workers.

A job explains a list of image pairs (a pairs file, every query against its
top-k neighbours in a gallery, or all pairs of a set). Each distinct image is
embedded once (``explain.features`` + ``explain.fold``: W [N, E] and u [E]);
a pair then costs one [N, E] x [E] product per direction, through
``explain.cross_maps`` in one of three ways, chosen per worker and shard:

* ``tile``: the shard's pairs grouped by blocks of image A, one ``cross_maps``
  product per block against every image, then the pairs picked out (cost per
  block; wins when the pairs are dense among few images, e.g. 10^6 among 1,000);
* ``gather``: chunks of pairs, ``cross_maps`` on 1 x 1 blocks vmapped over the
  chunk (cost per pair; any pairs);
* streamed (when W of every image exceeds ``device_budget``): as ``gather``, with
  each chunk's W read from the job's files, so device and host memory are bounded
  by a chunk of pairs, not by the number of distinct images (top-k neighbours stream
  the gallery in blocks too).

Calls are compiled once per process and split over its devices (a ``Mesh`` with one
``"data"`` axis). Any number of processes, on one machine or many sharing the output
directory, run the same job: each is a *worker* (``claims``) that claims tasks (fold a
chunk of images, compute a shard, write the manifest) by creating a claim file
exclusively, keeps its claims alive with a heartbeat, and commits each result once. A
worker that dies (killed, preempted) loses its claims after ``lease`` seconds and
another takes them over; workers may join at any time, and each ends when the job is
complete. There are no collectives: no worker waits for another to be alive.

Output directory (format 2; every array is a plain ``.npy`` that
``np.load(path, mmap_mode="r")`` maps without reading)::

    job.json                  the job's identity: {"format", "job_id", "fingerprint"} (what
                              was asked), created exclusively first; another job is refused
    images.txt                the distinct images, one key per line; image i = line i
    pairs.npy                 int32 [P, 2]: record r is the pair (image pairs[r, 0], pairs[r, 1])
                              (absent for ``all_pairs``: record r is the r-th pair i < j in
                              row-major order; ``BatchResults.pairs`` computes it)
    embed/<c>/                images c * embed_chunk ..: w.npy float32 [n, N, E], unit.npy
                              [n, E], ok.npy bool [n], errors.txt (key <TAB> reason)
    unreadable.txt            key <TAB> reason, one line per image that could not be read
    prepared.json             the inputs are ready (written after embed/ and pairs.npy)
    shards/<k>/record.npy     int64 [n]: the records of shard k (ascending; pairs with an
                              unreadable image are left out)
    shards/<k>/maps_a.npy     float16 [n, gh, gw]: image A's token-grid map against B (eq. 6)
    shards/<k>/maps_b.npy     float16 [n, gh, gw]: image B's map against A
    shards/<k>/score.npy      float32 [n]: the cosine similarity (the sum of a ``transpose`` map)
    shards/<k>/shard.json     {"job_id", "shard", "start", "stop", "written", "skipped",
                              "worker", "label"}
    manifest.json             written once, when every shard is committed: job_id, summary
    png/<record>.png          optional figures of the first N records: A, A's map over A,
                              B's map over B, B (``plotting.paper_overlay``, the authors' look)
    workers/, claims/         the workers' heartbeats and claims (bookkeeping)

Shard k holds records ``[k * shard_size, (k + 1) * shard_size)``. A shard is written in
its worker's temporary directory (``shards/.<k>.<token>.tmp``) and renamed into place in
one step, after ``job.json`` is checked to still name the job; a rename onto an existing
shard fails, so a shard is committed exactly once, whole, and carries its job's id (checked
again when the manifest is written and when ``BatchResults`` opens it). Files such as
``pairs.npy`` and ``manifest.json`` are committed once by an exclusive hard link. The same
command run again (or run by more workers) skips committed tasks and computes the rest: no
pair is lost or written twice. A job whose inputs, model or settings differ from
``job.json`` is refused in one line before anything is written. Temporary files carry
their writer's token and are removed by that writer, or by the finishing worker once the
writer's heartbeat has stopped. Files are not fsync-ed: this survives killed processes and
lost machines whose writes reached the shared filesystem. The filesystem must give atomic
``rename``/``link`` and exclusive create (local disks, NFS; not object-store mounts). Images
smaller than one patch of the model are unreadable (listed, their pairs skipped), as
``pair`` refuses them; ``visualize.py batch`` exits 1 when pairs were skipped unless
``--allow-skips``.

Modules, one job each: ``pairs`` (which pairs: a pairs file, all pairs, key lists),
``images`` (``ImageLoader``), ``kernels`` (the compiled top-k and pair kernels),
``method_kernels`` (gradient methods), ``embed`` (images folded a chunk at a time, read
back per chunk of pairs), ``claims`` (workers, heartbeats, claims), ``store`` (the output
directory, commits, ``BatchResults``), ``shards`` (one shard computed and committed),
``job`` (the phases, ``run_batch``, ``run_loaded``) and ``cli``
(``visualize.py batch``).
"""

from pairviz_jax._lazy import lazy_attributes

# name -> its module, imported on first use: ``visualize.py --help`` imports no JAX.
_WHERE = {
    "embed_images": "pairviz_jax.batch.embed",
    "ImageLoader": "pairviz_jax.batch.images",
    "DEFAULT_LEASE": "pairviz_jax.batch.claims",
    "Worker": "pairviz_jax.batch.claims",
    "DEFAULT_DEVICE_BUDGET": "pairviz_jax.batch.job",
    "DEFAULT_SHARD_SIZE": "pairviz_jax.batch.job",
    "BatchOptions": "pairviz_jax.batch.job",
    "JobConflict": "pairviz_jax.batch.job",
    "run_batch": "pairviz_jax.batch.job",
    "run_loaded": "pairviz_jax.batch.job",
    "top_k_pairs": "pairviz_jax.batch.kernels",
    "AllPairs": "pairviz_jax.batch.pairs",
    "ArrayPairs": "pairviz_jax.batch.pairs",
    "image_keys": "pairviz_jax.batch.pairs",
    "read_keys": "pairviz_jax.batch.pairs",
    "read_pairs_file": "pairviz_jax.batch.pairs",
    "Progress": "pairviz_jax._util",
    "BatchResults": "pairviz_jax.batch.store",
    "clean_stale": "pairviz_jax.batch.store",
    "params_fingerprint": "pairviz_jax.batch.store",
}

__all__ = [
    "DEFAULT_DEVICE_BUDGET",
    "DEFAULT_LEASE",
    "DEFAULT_SHARD_SIZE",
    "AllPairs",
    "ArrayPairs",
    "BatchOptions",
    "BatchResults",
    "JobConflict",
    "Worker",
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


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, __all__)

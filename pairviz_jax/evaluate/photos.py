"""The real-photo benchmark: copy-paste pairs of the photos scikit-image, scikit-learn and
matplotlib ship (``pairviz_jax.data.photos``; nothing is downloaded).

Image B is a photo with an object from another photo pasted in (1/6 to 1/3 of its area);
its partner A is that object alone on a grey canvas. B's map against A is measured: the
pasted region is the mask of the shared object. In the distractor variant a second object,
from a third photo, is pasted elsewhere in B; its own cut-out is B's second partner, so the
same B against both partners gives the pair sensitivity (``measures``).

The eight photos come in two fixed halves (``"a"`` and ``"b"``) whose pairs use only their
own photos: every number is reported per half, and nothing is chosen on half ``"b"``.

Long runs go in chunks of pairs, report progress on stderr and, with ``cache_dir``, keep
every finished chunk on disk, so the same call again resumes where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pairviz_jax._util import atomic_path
from pairviz_jax.evaluate.core import forward_batch, measure
from pairviz_jax.evaluate.results import Faithfulness, concatenate

# The default kinds: every method but integrated gradients (the slow reference) and every
# baseline.
PHOTO_KINDS = (
    "authors",
    "transpose",
    "gradxinput",
    "chefer",
    "conservative",
    "rollout",
    "rollout_mean",
    "gamma",
    "random",
)
SPLITS = ("a", "b")


def normalise(images: np.ndarray, normalization) -> np.ndarray:
    """uint8 images [..., H, W, 3] as the model's input: ``(x/255 - mean)/std``, or ``x/255``."""
    from pairviz_jax.data import preprocess

    mean, std = (None, None) if normalization is None else normalization
    return np.asarray(preprocess.model_input(np.asarray(images), mean, std), np.float32)


def photo_pairs(
    indices: Sequence[int] | int,
    *,
    split: str,
    image_size: int = 224,
    seed: int = 0,
    distractor: bool = False,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, np.ndarray]:
    """Copy-paste pairs ``(seed, i)`` of one half, as the benchmark's arrays.

    Args:
      indices: which pairs (``range(n)`` for an int n); pair i is
        ``data.photos.make_pair((seed, i), ...)``, the same whatever else is drawn.
      split: the photo half, ``"a"`` or ``"b"``.
      image_size: S.
      seed: the pairs' seed.
      distractor: paste a second object into B.
      normalization: (mean, std) of the model's input, or None (scaled to [0, 1]).

    Returns:
      ``images`` [P, S, S, 3] (B, normalised), ``partners`` [P, K, S, S, 3] (A, then with a
      distractor the second object's cut-out), ``masks`` bool [P, K, S, S] (object k in B),
      ``uint8_images``, ``uint8_partners`` and ``ids`` (object, background[, distractor]).
    """
    from pairviz_jax.data import photos

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: the photo halves are 'a' and 'b'")
    indices = range(indices) if isinstance(indices, int) else indices
    pairs = [
        photos.make_pair((seed, int(i)), size=image_size, split=split, distractor=distractor)
        for i in indices
    ]
    st = photos.stack(pairs)
    return {
        "images": normalise(st["b"], normalization),
        "partners": normalise(st["partners"], normalization),
        "masks": st["b_masks"],
        "uint8_images": st["b"],
        "uint8_partners": st["partners"],
        "ids": [p.ids for p in pairs],
    }


def _save(path: str, r: Faithfulness) -> None:
    arrays = {"scores": r.scores}
    for k, ms in r.metrics.items():
        arrays.update({f"m|{k}|{n}": v for n, v in ms.items()})
    for k, cs in r.curves.items():
        arrays.update({f"c|{k}|{mode}": v for mode, v in cs.items()})
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, info=json.dumps(r.info, default=str), **arrays)


def _load(path: str) -> Faithfulness:
    with np.load(path) as z:
        metrics, curves = {}, {}
        for key in z.files:
            if key.startswith("m|"):
                _, k, n = key.split("|")
                metrics.setdefault(k, {})[n] = z[key]
            elif key.startswith("c|"):
                _, k, mode = key.split("|")
                curves.setdefault(k, {})[mode] = z[key]
        return Faithfulness(curves, metrics, z["scores"], json.loads(str(z["info"])))


def log_stderr(msg: str) -> None:
    """Progress lines of the evaluations, on stderr (stdout holds the tables)."""
    print(msg, file=sys.stderr, flush=True)


def _chunk(
    loaded, split, s, e, curve_pairs, *, num_pairs, config, cache_dir, draw, measure_kw, log, state
) -> Faithfulness:
    """Pairs ``s .. e-1`` of one half: read from ``cache_dir`` if kept there, else measured
    (and kept). ``draw(range, split=...)`` draws them; the maps are dropped. ``state``:
    ``{"measured": bool}``, whether a chunk of this call was measured before (it compiled)."""
    key = hashlib.sha1(
        json.dumps({**config, "split": split, "pairs": [s, e]}, sort_keys=True).encode()
    ).hexdigest()[:12]
    path = os.path.join(cache_dir, f"photos_{split}_{s:05d}_{key}.npz") if cache_dir else None
    if path and os.path.exists(path):
        if log:
            log(f"photos half {split}: pairs {s}-{e - 1} from {path}")
        return _load(path)
    if log:
        note = "" if state["measured"] else " (first: compiles)"
        log(f"photos half {split}: pairs {s}-{e - 1} of {num_pairs}{note}")
    state["measured"] = True
    data = draw(range(s, e), split=split)
    r = measure(
        loaded.model,
        loaded.variables,
        data["images"],
        data["partners"],
        data["masks"],
        curve_pairs=curve_pairs,
        index_offset=s,
        log=log and (lambda m: log(f"  half {split}: {m}")),
        **measure_kw,
    )
    r.maps = None
    if path:
        _save(path, r)
    return r


def _merged(parts, config, split: str, num_pairs: int) -> Faithfulness:
    """One half's chunks as one result; ``info`` holds the config and the summed seconds."""
    result = concatenate(parts)
    seconds: dict[str, float] = {}
    for p in parts:
        for k, v in p.info.get("seconds", {}).items():
            seconds[k] = seconds.get(k, 0.0) + v
    result.info.update(config, split=split, pairs=num_pairs, seconds=seconds)
    return result


BATCH = 8  # pairs per compiled map computation
EMBED_BATCH = 8  # images per forward (8 is fastest for ViT-S/14 at 224 px on 2 CPU cores)
CHUNK = 20  # pairs per resumable chunk


def compiled_shapes(
    num_pairs: int,
    *,
    distractor: bool,
    kinds: Sequence[str],
    steps: int,
    curve_pairs: int | None,
    baseline: str = "mean",
    batch_size: int = BATCH,
    embed_batch_size: int = EMBED_BATCH,
    chunk: int = CHUNK,
) -> tuple[int, int, int]:
    """The shapes ``evaluate_photos`` compiles for (its first chunk's): ``(map rows per call,
    partners per row, images per forward)``; the methods figure reuses them."""
    b = min(chunk, num_pairs)
    k = 2 if distractor else 1
    c = b if curve_pairs is None else max(0, min(curve_pairs, b))
    return (
        min(batch_size, b),
        k,
        forward_batch(b, k, c, len(kinds), steps, baseline, embed_batch_size),
    )


def evaluate_photos(
    loaded,
    num_pairs: int = 100,
    *,
    splits: Sequence[str] = SPLITS,
    distractor: bool = False,
    kinds: Sequence[str] = PHOTO_KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    steps: int = 8,
    curve_pairs: int | None = None,
    baseline: str = "mean",
    seed: int = 0,
    batch_size: int = BATCH,
    embed_batch_size: int = EMBED_BATCH,
    chunk: int = CHUNK,
    cache_dir: str | None = None,
    log: Callable[[str], None] | None = log_stderr,
    make_pairs: Callable[..., dict] | None = None,
) -> dict[str, Faithfulness]:
    """Every measure of every kind of map on copy-paste pairs of real photos, per half.

    Args:
      loaded: a model as ``plotting.load_weights``/``load_run`` returns it (``model``,
        ``variables``, ``image_size``, ``mean``, ``std``, ``label``).
      num_pairs: pairs per half.
      splits: the halves to run (``"a"``, ``"b"``).
      distractor: paste a second object (shared share, pair sensitivity).
      kinds: map kinds (default ``PHOTO_KINDS``: every method but ``ig``, every baseline).
      method_options: ``{method: {option: value}}``.
      steps: deletion/insertion points minus one.
      curve_pairs: deletion/insertion on the first this many pairs of each half (None: all).
      baseline, seed: as ``measure`` (``seed`` also draws the pairs).
      batch_size: pairs per compiled map computation.
      embed_batch_size: images per forward of the curves (8 is fastest for ViT-S/14 at
        224 px on 2 CPU cores).
      chunk: pairs per resumable chunk.
      cache_dir: a folder that keeps finished chunks (resume); None keeps nothing.
      log: progress lines (default stderr; None for silence).
      make_pairs: what draws the pairs, with ``photo_pairs``'s signature (default
        ``photo_pairs``; tests pass a synthetic stand-in).

    Returns:
      ``{half: Faithfulness}``.
    """
    h, w = loaded.image_size
    if h != w:
        raise ValueError(f"the photo pairs are square; this model takes {h}x{w}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs={num_pairs} must be positive")
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    config = dict(
        model=getattr(loaded, "label", ""),
        size=h,
        distractor=distractor,
        kinds=list(kinds),
        options={k: dict(v) for k, v in (method_options or {}).items()},
        steps=steps,
        baseline=baseline,
        seed=seed,
        curve_pairs=curve_pairs,
    )
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    draw = functools.partial(
        make_pairs or photo_pairs,
        image_size=h,
        seed=seed,
        distractor=distractor,
        normalization=norm,
    )
    measure_kw = dict(kinds=kinds, method_options=method_options, steps=steps, baseline=baseline)
    measure_kw.update(seed=seed, batch_size=batch_size, embed_batch_size=embed_batch_size)
    chunk_kw = dict(num_pairs=num_pairs, config=config, cache_dir=cache_dir, draw=draw)
    chunk_kw.update(measure_kw=measure_kw, log=log, state={"measured": False})
    out = {}
    t_start = time.perf_counter()
    total = num_pairs * len(splits)
    done = 0
    for split in splits:
        parts = []
        for s in range(0, num_pairs, chunk):
            e = min(s + chunk, num_pairs)
            c = None if curve_pairs is None else max(0, min(curve_pairs - s, e - s))
            parts.append(_chunk(loaded, split, s, e, c, **chunk_kw))
            done += e - s
            if log:
                spent = time.perf_counter() - t_start
                log(
                    f"photos half {split}: {e}/{num_pairs} pairs "
                    f"({done}/{total} in all, {spent:.0f} s, "
                    f"about {spent / done * (total - done):.0f} s left)"
                )
        out[split] = _merged(parts, config, split, num_pairs)
    return out

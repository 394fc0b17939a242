"""The swap test: does a map of A follow its partner?

Image A holds two pasted objects X and Y; partner B1 holds X, B2 holds Y (``data.swaps``:
real photos, several backgrounds, scales and places; half ``"a"`` for development, half
``"b"`` held out, to be run once at the end). For every map kind, A's map against B1 and
against B2 are measured per triple:

* ``swap``: 1 when the map's peak falls on X against B1 *and* on Y against B2, else 0 (a map
  that ignores the partner has one peak for both, on at most one object: 0; random maps:
  P(peak on X) P(peak on Y));
* ``hits``: the mean of the two (half credit for one right peak; <= 0.5 for a map that
  ignores the partner);
* ``right_minus_wrong``: the share of the min-max-normalised map's mass on the partner's
  object minus that on the other object, averaged over the two partners (0 for a map that
  ignores the partner; ``measures.energy_in_mask``);
* ``correlation``: Pearson correlation of A's two maps (1 for a map that ignores the partner).

The reference is the model itself: ``occlusion`` (``evaluate.occlusion``) is a row of the
table, and the triples where the model swaps (deleting X lowers cos(A, B1) more than
cos(A, B2), and deleting Y lowers cos(A, B2) more than cos(A, B1)) are reported apart.
Every number is a mean ± standard error over triples; differences are paired (same triples).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pairviz_jax import explain
from pairviz_jax._util import atomic_path
from pairviz_jax.evaluate.chunks import run_chunks
from pairviz_jax.evaluate.kinds import KINDS, kind_maps
from pairviz_jax.evaluate.measures import energy_on, map_correlation, normalised_pixels, points_on
from pairviz_jax.evaluate.occlusion import occluded_cosines, occlusion_maps
from pairviz_jax.evaluate.photos import log_stderr, normalise
from pairviz_jax.evaluate.results import BASELINES, LABELS

__all__ = [
    "MEASURES",
    "SWAP_KINDS",
    "SwapResult",
    "evaluate_swap",
    "explain_api",
    "model_swaps",
    "swap_measures",
    "triple_arrays",
]

# Every method of explain.methods (the paper's in both conventions), the occlusion reference
# and the baselines (rollout, gamma, random).
SWAP_KINDS = ("occlusion", *(k for k in KINDS if k != "rollout_mean"))
REFERENCES = ("occlusion",)
MEASURES = ("swap", "hits", "right_minus_wrong", "correlation")
HEADS = {
    "swap": "swap accuracy ↑",
    "hits": "right peaks ↑",
    "right_minus_wrong": "right − wrong energy ↑",
    "correlation": "partner correlation ↓",
}
_LABELS = {**LABELS, "occlusion": "occlusion (Zeiler & Fergus, ECCV 2014; the reference)"}


# --------------------------------------------------------------------------- the adapter


def explain_api(
    loaded,
    images: np.ndarray,
    partners: np.ndarray | None = None,
    kind: str | None = None,
    options: Mapping[str, Mapping] | None = None,
    index: Sequence[int] | None = None,
) -> np.ndarray:
    """The one place this module calls the explanation API (port it here when it changes).

    Args:
      loaded: the model (``model``, ``variables``).
      images: [B, H, W, C] normalised.
      partners: None, or [B, K, E] the partners' embeddings.
      kind: a map kind of ``evaluate.KINDS`` (with ``partners``).
      options: ``{method: {option: value}}``.
      index: the triples' indices (seeds of the random maps).

    Returns:
      Without partners the embeddings [B, E]; else the maps [B, K, gh, gw] of ``kind``.
    """
    if partners is None:
        return np.asarray(explain.embed(loaded.model, loaded.variables, images))
    got = kind_maps(
        loaded.model,
        loaded.variables,
        images,
        partners,
        (kind,),
        method_options=options,
        index=index,
    )
    return got[kind]


# --------------------------------------------------------------------------- measures


def _pixels(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps [T, h, w] as min-max-normalised pixels [T, H, W] (upsampled unless already H x W)."""
    maps = np.asarray(maps, np.float64)
    if maps.shape[1:] != tuple(size):
        return normalised_pixels(maps, size)
    lo = maps.min((1, 2), keepdims=True)
    span = maps.max((1, 2), keepdims=True) - lo
    flat = span <= 1e-12
    return np.where(flat, 1.0, (maps - lo) / np.where(flat, 1.0, span))


def swap_measures(maps: np.ndarray, a_masks: np.ndarray) -> dict[str, np.ndarray]:
    """The swap-test measures of A's maps (module docstring).

    Args:
      maps: [T, 2, h, w] A's map against B1 (row 0) and B2 (row 1); token grids are upsampled
        as displayed (``explain.upsample``), maps already at [H, W] are used as they are.
      a_masks: bool [T, 2, H, W] X (row 0) and Y (row 1) in A.

    Returns:
      ``swap``, ``hits``, ``right_minus_wrong``, ``correlation``: [T] float64 each.
    """
    maps, a_masks = np.asarray(maps), np.asarray(a_masks, bool)
    if maps.ndim != 4 or maps.shape[:2] != a_masks.shape[:2] or maps.shape[1] != 2:
        raise ValueError(f"maps [T, 2, h, w] and masks [T, 2, H, W], got {maps.shape}, "
                         f"{a_masks.shape}")  # fmt: skip
    size = a_masks.shape[2:]
    x, y = a_masks[:, 0], a_masks[:, 1]
    up = [_pixels(maps[:, k], size) for k in range(2)]
    hit_1, hit_2 = points_on(up[0], x), points_on(up[1], y)
    right = energy_on(up[0], x) + energy_on(up[1], y)
    wrong = energy_on(up[0], y) + energy_on(up[1], x)
    return {
        "swap": (hit_1 & hit_2).astype(np.float64),
        "hits": (hit_1.astype(np.float64) + hit_2) / 2,
        "right_minus_wrong": (right - wrong) / 2,
        "correlation": map_correlation(maps[:, 0], maps[:, 1]),
    }


def model_swaps(drops: np.ndarray) -> np.ndarray:
    """Whether the model's own cosine swaps, bool [T].

    Args:
      drops: [T, 2, 2]: drops[t, o, k] = cos(A, B_k) - cos(A with object o deleted, B_k)
        (o = 0: X, o = 1: Y; k = 0: B1, k = 1: B2).
    """
    d = np.asarray(drops)
    return (d[:, 0, 0] > d[:, 0, 1]) & (d[:, 1, 1] > d[:, 1, 0])


def _mean_sem(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), sem


def _cell(mean: float, sem: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(sem):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


# --------------------------------------------------------------------------- results


class SwapResult:
    """Per-triple results of the swap test.

    Attributes:
      metrics: kind -> measure -> [T] (``MEASURES``).
      model_swaps: bool [T] the triples where the model's own cosine swaps.
      scores: [T, 2] cos(A, B1), cos(A, B2).
      drops: [T, 2, 2] cosine drops when an object of A is deleted (``model_swaps``).
      maps: kind -> [T, 2, gh, gw] A's maps against B1, B2.
      ids: per triple (X, Y, A's background, the partners' background).
      info: what was run.
    """

    def __init__(self, metrics, model_swaps, scores, drops, maps, ids, info):
        self.metrics = metrics
        self.model_swaps = np.asarray(model_swaps, bool)
        self.scores, self.drops = np.asarray(scores), np.asarray(drops)
        self.maps, self.ids, self.info = maps, list(ids), dict(info)

    def __len__(self) -> int:
        return len(self.model_swaps)

    def summary(self, subset: np.ndarray | None = None) -> dict[str, dict[str, tuple]]:
        """kind -> measure -> (mean, standard error) over all triples or ``subset`` (bool [T])."""
        pick = slice(None) if subset is None else np.asarray(subset, bool)
        return {
            k: {n: _mean_sem(np.asarray(v)[pick]) for n, v in ms.items()}
            for k, ms in self.metrics.items()
        }

    def difference(self, kind: str, other: str, measure: str, subset=None) -> tuple[float, float]:
        """Mean and standard error of ``kind - other`` on ``measure``, over the same triples."""
        pick = slice(None) if subset is None else np.asarray(subset, bool)
        d = np.asarray(self.metrics[kind][measure]) - np.asarray(self.metrics[other][measure])
        return _mean_sem(d[pick])

    def best(self, measure: str = "swap") -> str | None:
        """The method (not a baseline or the reference) with the highest mean ``measure``."""
        means = {
            k: float(np.mean(v[measure]))
            for k, v in self.metrics.items()
            if k not in BASELINES and k not in REFERENCES
        }
        return max(means, key=means.get) if means else None

    def table(self, digits: int = 2) -> str:
        """Markdown: every kind's measures, mean ± standard error, over all triples and over
        those where the model swaps."""
        n, ns = len(self), int(self.model_swaps.sum())
        every, swapped = self.summary(), self.summary(self.model_swaps)
        head = [
            "map",
            HEADS["swap"],
            f"swap accuracy, model swaps (n = {ns})",
            HEADS["hits"],
            HEADS["right_minus_wrong"],
            f"right − wrong, model swaps (n = {ns})",
            HEADS["correlation"],
        ]
        lines = [
            f"{n} triples; the model's cosine swaps in {ns} (mean ± standard error over triples)",
            "",
            "| " + " | ".join(head) + " |",
            "|---" * len(head) + "|",
        ]
        for k in self.metrics:
            a, s = every[k], swapped[k]
            cells = [
                _cell(*a["swap"], digits),
                _cell(*s["swap"], digits),
                _cell(*a["hits"], digits),
                _cell(*a["right_minus_wrong"], digits),
                _cell(*s["right_minus_wrong"], digits),
                _cell(*a["correlation"], digits),
            ]
            lines.append(f"| {_LABELS.get(k, k)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def comparisons(self, digits: int = 2) -> str:
        """Markdown: paired differences (same triples) of every kind against the best method
        (by swap accuracy) and against the occlusion reference."""
        bases = [b for b in (self.best(), *REFERENCES) if b and b in self.metrics]
        ns = int(self.model_swaps.sum())
        head = ["map", "swap accuracy", f"swap, model swaps (n = {ns})", "right − wrong",
                f"right − wrong, model swaps (n = {ns})"]  # fmt: skip
        out = []
        for base in dict.fromkeys(bases):
            lines = [
                f"Paired differences against {_LABELS.get(base, base)} (map − it):",
                "",
                "| " + " | ".join(head) + " |",
                "|---" * len(head) + "|",
            ]
            for k in self.metrics:
                if k == base:
                    continue
                cells = [
                    _cell(*self.difference(k, base, m, subset), digits)
                    for m in ("swap", "right_minus_wrong")
                    for subset in (None, self.model_swaps)
                ]
                lines.append(f"| {_LABELS.get(k, k)} | " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
        return "\n\n".join(out)


def _concatenate(parts: Sequence[SwapResult], info: dict) -> SwapResult:
    kinds = list(parts[0].metrics)
    metrics = {
        k: {m: np.concatenate([p.metrics[k][m] for p in parts]) for m in parts[0].metrics[k]}
        for k in kinds
    }
    maps = {k: np.concatenate([p.maps[k] for p in parts]) for k in kinds}
    return SwapResult(
        metrics,
        np.concatenate([p.model_swaps for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.drops for p in parts]),
        maps,
        [i for p in parts for i in p.ids],
        info,
    )


def _save(path: str, r: SwapResult) -> None:
    arrays = {f"m|{k}|{n}": v for k, ms in r.metrics.items() for n, v in ms.items()}
    arrays.update({f"map|{k}": v for k, v in r.maps.items()})
    with atomic_path(path, ".npz") as tmp:
        np.savez(
            tmp,
            model_swaps=r.model_swaps,
            scores=r.scores,
            drops=r.drops,
            ids=json.dumps(r.ids),
            info=json.dumps(r.info, default=str),
            **arrays,
        )


def _load(path: str) -> SwapResult:
    with np.load(path) as z:
        metrics: dict[str, dict[str, np.ndarray]] = {}
        maps = {}
        for key in z.files:
            if key.startswith("m|"):
                _, k, n = key.split("|")
                metrics.setdefault(k, {})[n] = z[key]
            elif key.startswith("map|"):
                maps[key[4:]] = z[key]
        info = json.loads(str(z["info"]))
        kinds = info.get("kinds", list(metrics))
        return SwapResult(
            {k: metrics[k] for k in kinds},
            z["model_swaps"],
            z["scores"],
            z["drops"],
            {k: maps[k] for k in kinds},
            [tuple(i) for i in json.loads(str(z["ids"]))],
            info,
        )


# --------------------------------------------------------------------------- the run


def triple_arrays(
    indices: Sequence[int] | int,
    *,
    split: str,
    image_size: int = 224,
    seed: int = 0,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict:
    """Swap-test triples ``(seed, i)`` of one half (``data.swaps``) as the test's arrays.

    Returns:
      ``a`` [T, S, S, 3] and ``partners`` [T, 2, S, S, 3] normalised (None: scaled to
      [0, 1]), ``a_masks`` and ``b_masks`` bool [T, 2, S, S], ``uint8_a``,
      ``uint8_partners``, ``ids``.
    """
    from pairviz_jax.data import swaps

    triples = swaps.make_triples(indices, seed=seed, split=split, size=image_size)
    st = swaps.stack_triples(triples)
    return {
        "a": normalise(st["a"], normalization),
        "partners": normalise(st["partners"], normalization),
        "a_masks": st["a_masks"],
        "b_masks": st["b_masks"],
        "uint8_a": st["a"],
        "uint8_partners": st["partners"],
        "ids": [t.ids for t in triples],
    }


def _measure_chunk(loaded, data, index, kinds, options, window, stride, batch_size, log):
    """Every kind's maps and measures on one chunk of triples -> SwapResult."""
    a, partners = data["a"], data["partners"]
    t, t0 = len(a), time.perf_counter()
    size = a.shape[1:]
    emb_b = explain_api(loaded, partners.reshape(-1, *size)).reshape(t, 2, -1)
    # The model's own answer: A whole, then each object of A deleted in turn, against each
    # partner (one compiled function: the drops are differences of like-computed cosines).
    masks = data["a_masks"]
    none = np.zeros_like(masks[:, :1])
    cos = occluded_cosines(
        loaded.model, loaded.variables, a, emb_b, np.concatenate([none, masks], 1)
    )
    scores = cos[:, 0]  # [T, partners]
    drops = scores[:, None, :] - cos[:, 1:]  # [T, objects, partners]
    if log:
        log(f"  embeddings, objects deleted: {t} triples, {time.perf_counter() - t0:.1f} s")
    maps, metrics = {}, {}
    for kind in kinds:
        t0 = time.perf_counter()
        parts = []
        for s in range(0, t, batch_size):
            sl = slice(s, s + batch_size)
            if kind == "occlusion":
                got = occlusion_maps(
                    loaded.model, loaded.variables, a[sl], emb_b[sl], window=window, stride=stride
                )["maps"]
            else:
                got = explain_api(loaded, a[sl], emb_b[sl], kind, options, index[sl])
            parts.append(np.asarray(got, np.float32))
        maps[kind] = np.concatenate(parts)
        metrics[kind] = swap_measures(maps[kind], data["a_masks"])
        if log:
            log(f"  {kind}: {t} triples, {time.perf_counter() - t0:.1f} s")
    return SwapResult(metrics, model_swaps(drops), scores, drops, maps, data["ids"], {})


def _check(kinds: Sequence[str], split: str, num_triples: int) -> tuple[str, ...]:
    unknown = [k for k in kinds if k not in (*REFERENCES, *KINDS)]
    if unknown or not kinds:
        raise ValueError(
            f"unknown map kind {', '.join(map(repr, unknown)) or '(none given)'}; expected some "
            f"of {', '.join((*REFERENCES, *KINDS))}"
        )
    if split not in ("a", "b"):
        raise ValueError(f"split={split!r}: the photo halves are 'a' (development) and 'b'")
    if num_triples < 1:
        raise ValueError(f"num_triples={num_triples}: expected >= 1")
    return tuple(kinds)


def evaluate_swap(
    loaded,
    num_triples: int = 40,
    *,
    split: str = "a",
    kinds: Sequence[str] = SWAP_KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    window: int = 2,
    stride: int | None = None,
    seed: int = 0,
    batch_size: int = 4,
    chunk: int = 8,
    cache_dir: str | None = None,
    log: Callable[[str], None] | None = log_stderr,
    make_triples: Callable[..., dict] | None = None,
) -> SwapResult:
    """The swap test of every kind of map on ``num_triples`` triples of one photo half.

    Args:
      loaded: a model as ``runs`` loads it (``model``, ``variables``, ``image_size``,
        ``mean``, ``std``, ``label``).
      num_triples: triples ``(seed, 0) ... (seed, num_triples - 1)``.
      split: ``"a"`` (development) or ``"b"`` (held out: run it once, at the end).
      kinds: ``"occlusion"`` and names of ``evaluate.KINDS``.
      method_options: ``{method: {option: value}}``.
      window, stride: the occlusion windows in tokens (default 2 x 2, not overlapping: 64
        forwards per image on DINOv2-S/14's 16 x 16 grid).
      seed: the triples' seed (and the random maps').
      batch_size: triples per compiled map computation.
      chunk: triples per resumable chunk.
      cache_dir: a folder that keeps finished chunks (the same call again resumes); None
        keeps nothing.
      log: progress lines (default stderr; None for silence).
      make_triples: what draws the triples, with ``triple_arrays``'s signature (tests pass a
        synthetic stand-in).

    Returns:
      A ``SwapResult`` over all triples.
    """
    kinds = _check(kinds, split, num_triples)
    h, w = loaded.image_size
    if h != w:
        raise ValueError(f"the swap triples are square; this model takes {h}x{w}")
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    config = dict(
        model=getattr(loaded, "label", ""),
        size=h,
        kinds=list(kinds),
        options={k: dict(v) for k, v in (method_options or {}).items()},
        window=window,
        stride=stride,
        seed=seed,
        split=split,
    )
    if log:
        log(f"swap half {split}: {num_triples} triples, {len(kinds)} maps, chunks of {chunk}")

    def compute(s: int, e: int) -> SwapResult:
        data = (make_triples or triple_arrays)(
            range(s, e), split=split, image_size=h, seed=seed, normalization=norm
        )
        r = _measure_chunk(
            loaded, data, list(range(s, e)), kinds, method_options, window, stride,
            batch_size, log,
        )  # fmt: skip
        r.info = {**config, "triples": [s, e]}
        return r

    parts = run_chunks(
        num_triples, chunk, config=config, cache_dir=cache_dir, prefix=f"swap_{split}",
        compute=compute, load=_load, save=_save, log=log, label=f"swap half {split}",
    )  # fmt: skip
    return _concatenate(parts, {**config, "triples": num_triples})

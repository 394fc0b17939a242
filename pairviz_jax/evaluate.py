"""Are the maps right? Faithfulness of paired similarity maps, measured.

Two measures, each for the paired maps of both redistribution conventions
(``authors``: R @ gamma, ``transpose``: R^T @ gamma) and for two baselines:
a ``random`` map (uniform noise, one per pair) and the output-agnostic
``rollout`` map (``explain.rollout_map``: the same map whatever image B is).

(a) **Deletion and insertion** (after Petsiuk et al. 2018, RISE, with the
    similarity score as the output). Image A's patches are ranked by A's map
    against B (highest first); step s of S replaces the top ``round(s N / S)``
    patches of A by a baseline image (deletion) or reveals them on the
    baseline (insertion), and records the cosine of the changed A with B.
    A map that finds what makes A similar to B makes the deletion curve fall
    fast (low area under the curve, AUC) and the insertion curve rise fast
    (high AUC). The baseline is ``"mean"``: zeros of the normalised image,
    i.e. the dataset's mean colour (default), or ``"blur"``: the image blurred
    with a Gaussian of sigma = one patch side. Patches are the model's token
    patches (ViT: exactly its input patches). AUC is the trapezoid rule over
    the fraction of patches, in [0, 1] of the cosine's units.

(b) **Energy in mask and pointing game** (on the demo dataset, whose images
    carry their object's mask; both images of a pair show the same glyph
    class, so the shared object is A's glyph). The map is upsampled to pixels
    as it is displayed (``explain.upsample``) and min-max normalised to
    [0, 1]; *energy in mask* is the share of its mass inside A's object mask
    (Wang et al. 2020, Score-CAM's energy-based pointing game), *pointing
    game* whether its maximum falls inside the mask. A random map scores
    about the mask's share of the image.

(c) **Shared or distractor** (``distractor=True``): image A shows the glyph
    it shares with B *and* a glyph of another class in the other half
    (``data.demo.render_with_distractor``), equally salient but shared with
    nothing. (b) is then measured on the shared glyph's mask, and
    ``shared_share`` is the map's mass on the shared glyph over its mass on
    both glyphs: 0.5 is a map that cannot tell them apart. Only a map that
    depends on B can do better than 0.5 in expectation; this is the
    paper's claim for paired maps against output-agnostic rollout (its
    Fig. 8), measured. With one glyph per image the shared object is also
    the only salient one, so rollout, which finds salient objects, already
    marks it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain

Array = jax.Array

KINDS = ("authors", "transpose", "rollout", "random")
METRICS = ("deletion_auc", "insertion_auc", "energy_in_mask", "pointing_game", "shared_share")
# Which way is better for each metric.
HIGHER_IS_BETTER = {
    "deletion_auc": False,
    "insertion_auc": True,
    "energy_in_mask": True,
    "pointing_game": True,
    "shared_share": True,
}


# --------------------------------------------------------------------------- pieces


def patch_order(maps: np.ndarray) -> np.ndarray:
    """Token indices of each map, highest value first (ties: lower index first).

    Args:
      maps: [B, gh, gw] (or [B, N]).

    Returns:
      int [B, N].
    """
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def step_masks(order: np.ndarray, steps: int) -> np.ndarray:
    """Which tokens are changed at each step: the top ``round(s N / steps)`` of the order.

    Args:
      order: [B, N] token indices, most important first.
      steps: S.

    Returns:
      bool [B, S + 1, N]; step 0 changes nothing, step S every token.
    """
    b, n = order.shape
    counts = np.round(np.arange(steps + 1) * n / steps).astype(int)  # [S + 1]
    rank = np.empty_like(order)
    rank[np.arange(b)[:, None], order] = np.arange(n)[None, :]  # rank of each token
    return rank[:, None, :] < counts[None, :, None]


def to_pixels(token_mask: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Token masks [..., N] to pixel masks [..., H, W] (each token covers its patch)."""
    gh, gw = grid
    h, w = size
    if h % gh or w % gw:
        raise ValueError(f"image {h}x{w} is not a whole number of {gh}x{gw} patches")
    m = token_mask.reshape(*token_mask.shape[:-1], gh, gw)
    return np.repeat(np.repeat(m, h // gh, axis=-2), w // gw, axis=-1)


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [B, H, W, C] images (edge padding), float32."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = np.asarray(images, np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return x.astype(np.float32)


def baseline_images(images: np.ndarray, kind: str, patch: int) -> np.ndarray:
    """The image that deleted patches become: ``"mean"`` (zeros) or ``"blur"``."""
    if kind == "mean":
        return np.zeros_like(np.asarray(images, np.float32))
    if kind == "blur":
        return gaussian_blur(images, float(patch))
    raise ValueError(f"baseline must be 'mean' or 'blur', got {kind!r}")


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves sampled at S + 1 equally spaced fractions of [0, 1], [..., S + 1]."""
    c = np.asarray(curves, np.float64)
    s = c.shape[-1] - 1
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * s)


def shared_share(maps: np.ndarray, shared: np.ndarray, distractor: np.ndarray) -> np.ndarray:
    """Mass of each min-max-normalised map on the shared mask over its mass on both masks.

    Args:
      maps: [B, gh, gw] token-grid maps; upsampled to the masks' size.
      shared, distractor: bool [B, H, W] disjoint masks.

    Returns:
      [B] in [0, 1]; 0.5 where the map has no mass on either.
    """
    return _shared_share(_normalised_pixels(maps, shared.shape[1:]), shared, distractor)


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of a min-max-normalised map's mass inside the mask.

    Args:
      maps: [B, gh, gw] token-grid maps; upsampled to the masks' size.
      masks: bool [B, H, W].

    Returns:
      [B] in [0, 1] (a constant map gives the mask's share of the image).
    """
    return _energy_in_mask(_normalised_pixels(maps, masks.shape[1:]), masks)


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each upsampled map's maximum falls inside its mask, bool [B]."""
    return _pointing_game(_normalised_pixels(maps, masks.shape[1:]), masks)


# The same three on maps already upsampled and normalised (``_normalised_pixels``), so that
# ``faithfulness`` upsamples each map once for all of them.


def _shared_share(up: np.ndarray, shared: np.ndarray, distractor: np.ndarray) -> np.ndarray:
    on_shared = (up * shared).sum((1, 2))
    on_both = on_shared + (up * distractor).sum((1, 2))
    return np.where(on_both > 1e-12, on_shared / np.maximum(on_both, 1e-12), 0.5)


def _energy_in_mask(up: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return (up * masks).sum((1, 2)) / np.maximum(up.sum((1, 2)), 1e-12)


def _pointing_game(up: np.ndarray, masks: np.ndarray) -> np.ndarray:
    flat = up.reshape(len(up), -1).argmax(1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), flat]


def _normalised_pixels(maps: np.ndarray, size) -> np.ndarray:
    up = np.asarray(explain.upsample(jnp.asarray(maps, jnp.float32), tuple(size)), np.float64)
    lo = up.min((1, 2), keepdims=True)
    hi = up.max((1, 2), keepdims=True)
    flat = (hi - lo) <= 1e-12
    return np.where(flat, 1.0, (up - lo) / np.where(flat, 1.0, hi - lo))


# --------------------------------------------------------------------------- curves


def score_curves(
    embed: Callable[[np.ndarray], np.ndarray],
    images_a: np.ndarray,
    unit_b: np.ndarray,
    maps: np.ndarray,
    grid: tuple[int, int],
    *,
    mode: str = "deletion",
    steps: int = 16,
    baseline: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Deletion or insertion curves of the cosine with B.

    Args:
      embed: normalised images [n, H, W, C] -> embeddings [n, E] (any norm).
      images_a: [B, H, W, C] normalised images A.
      unit_b: [B, E] unit embeddings of the images B.
      maps: [B, gh, gw] maps of A ranking its patches.
      grid: (gh, gw) token grid of A.
      mode: ``"deletion"`` (replace the top patches by the baseline) or
        ``"insertion"`` (start from the baseline, reveal the top patches).
      steps: S; the curve has S + 1 points.
      baseline: [B, H, W, C] baseline images (default zeros: the mean colour).
      batch_size: images per forward.

    Returns:
      [B, S + 1] cosines; point s after changing ``round(s N / S)`` patches.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    images_a = np.asarray(images_a, np.float32)
    base = np.zeros_like(images_a) if baseline is None else np.asarray(baseline, np.float32)
    b, h, w, _ = images_a.shape
    changed = step_masks(patch_order(maps), steps)  # [B, S + 1, N]
    pix = to_pixels(changed, grid, (h, w))[..., None]  # [B, S + 1, H, W, 1]
    if mode == "deletion":
        x = np.where(pix, base[:, None], images_a[:, None])
    else:
        x = np.where(pix, images_a[:, None], base[:, None])
    x = x.reshape(b * (steps + 1), *images_a.shape[1:])
    emb = np.concatenate([embed(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])
    emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    return (emb.reshape(b, steps + 1, -1) * unit_b[:, None]).sum(-1)


# --------------------------------------------------------------------------- the evaluation


@dataclasses.dataclass
class Faithfulness:
    """Per-pair results of :func:`faithfulness`.

    Attributes:
      curves: kind -> mode (``deletion``/``insertion``) -> [B, S + 1] cosines.
      metrics: kind -> metric -> [B] per-pair values (pointing game as 0/1).
      scores: [B] cosine of each pair (the curves' start).
    """

    curves: dict[str, dict[str, np.ndarray]]
    metrics: dict[str, dict[str, np.ndarray]]
    scores: np.ndarray

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """kind -> metric -> (mean, standard error) over the pairs."""
        out = {}
        for kind, ms in self.metrics.items():
            out[kind] = {}
            for name, v in ms.items():
                v = np.asarray(v, np.float64)
                sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
                out[kind][name] = (float(v.mean()), sem)
        return out

    def difference(self, kind: str, other: str, metric: str) -> tuple[float, float]:
        """Mean and standard error of ``metric[kind] - metric[other]`` over the same pairs.

        Paired: each pair is compared with itself, so the error is that of the per-pair
        differences, smaller than the two columns' errors combined when they co-vary.
        """
        d = np.asarray(self.metrics[kind][metric], np.float64) - np.asarray(
            self.metrics[other][metric], np.float64
        )
        sem = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
        return float(d.mean()), sem

    def comparisons(self, kinds: Sequence[str] = ("transpose", "authors")) -> str:
        """Paired differences of each paired-map kind against each baseline, one line each,
        with the sign turned so that positive means the paired map is better."""
        lines = []
        for kind in kinds:
            for base in ("rollout", "random"):
                if kind not in self.metrics or base not in self.metrics:
                    continue
                cells = []
                for m in METRICS:
                    if m not in self.metrics[kind]:
                        continue
                    mean, sem = self.difference(kind, base, m)
                    sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
                    cells.append(f"{m} {sign * mean:+.4f} ± {sem:.4f}")
                lines.append(f"{kind} better than {base} by: " + ", ".join(cells))
        return "\n".join(lines)

    def table(self) -> str:
        """The summary as a Markdown table (mean +- standard error; best per column in bold)."""
        summ = self.summary()
        names = [m for m in METRICS if any(m in summ[k] for k in summ)]
        arrows = {True: "↑", False: "↓"}
        head = "| map | " + " | ".join(f"{n} {arrows[HIGHER_IS_BETTER[n]]}" for n in names) + " |"
        lines = [head, "|---" * (len(names) + 1) + "|"]
        best = {}
        for n in names:
            vals = {k: summ[k][n][0] for k in summ if n in summ[k]}
            pick = max if HIGHER_IS_BETTER[n] else min
            best[n] = pick(vals, key=vals.get)
        label = {
            "authors": "paired, authors (R @ gamma)",
            "transpose": "paired, transpose (R^T @ gamma)",
            "rollout": "rollout (output-agnostic)",
            "random": "random",
        }
        for k in summ:
            cells = []
            for n in names:
                if n not in summ[k]:
                    cells.append("")
                    continue
                mean, sem = summ[k][n]
                cell = f"{mean:.4f} ± {sem:.4f}"
                cells.append(f"**{cell}**" if best[n] == k else cell)
            lines.append(f"| {label.get(k, k)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


@functools.lru_cache(maxsize=16)
def _embed_fn(model):
    return jax.jit(lambda v, x: model.apply(v, x)[0])


def faithfulness(
    model,
    variables,
    images_a: np.ndarray,
    images_b: np.ndarray,
    masks_a: np.ndarray | None = None,
    distractor_masks_a: np.ndarray | None = None,
    *,
    kinds: Sequence[str] = KINDS,
    steps: int = 16,
    baseline: str = "mean",
    seed: int = 0,
    batch_size: int = 256,
) -> Faithfulness:
    """Deletion/insertion AUC (and, with masks, energy in mask and pointing game) per map kind.

    Args:
      model, variables: a mean-pooled ViT and its variables.
      images_a: [B, H, W, C] normalised images A (the maps explain A).
      images_b: [B, H, W, C] normalised images B.
      masks_a: bool [B, H, W] object masks of A, or None to skip (b).
      distractor_masks_a: bool [B, H, W] masks of A's distractor objects, or None
        to skip (c); needs ``masks_a``.
      kinds: which maps: ``authors``, ``transpose`` (paired maps, eq. 6 either
        way), ``rollout`` (output-agnostic), ``random``.
      steps: points of the deletion/insertion curves minus one.
      baseline: ``"mean"`` or ``"blur"`` (module docstring).
      seed: seed of the random maps.
      batch_size: images per forward.

    Returns:
      :class:`Faithfulness`.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown map kind {k!r}; expected some of {KINDS}")
    images_a = np.asarray(images_a, np.float32)
    images_b = np.asarray(images_b, np.float32)
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a {images_a.shape} and images_b {images_b.shape} differ")
    b = len(images_a)
    for name, m in (("masks_a", masks_a), ("distractor_masks_a", distractor_masks_a)):
        if m is not None and np.shape(m) != images_a.shape[:3]:
            raise ValueError(f"{name} must be [B, H, W] = {images_a.shape[:3]}, got {np.shape(m)}")
    if distractor_masks_a is not None and masks_a is None:
        raise ValueError("distractor_masks_a needs masks_a (the shared objects' masks)")
    embed_jit = _embed_fn(model)
    embed = lambda x: np.asarray(embed_jit(variables, jnp.asarray(x)))
    emb_b = np.concatenate([embed(images_b[s : s + batch_size]) for s in range(0, b, batch_size)])
    unit_b = emb_b / np.maximum(np.linalg.norm(emb_b, axis=-1, keepdims=True), 1e-12)
    grid = model.grid(images_a.shape)
    patch = images_a.shape[1] // grid[0]
    base = baseline_images(images_a, baseline, patch)

    maps: dict[str, np.ndarray] = {}
    for k in kinds:
        parts = []
        for s in range(0, b, batch_size):
            xa = jnp.asarray(images_a[s : s + batch_size])
            xb = jnp.asarray(images_b[s : s + batch_size])
            if k in explain.CONVENTIONS:
                out = explain.paired_maps(model, variables, xa, xb, convention=k, upsampled=False)
                parts.append(np.asarray(out["map_a"]))
            elif k == "rollout":
                f = explain.features(model, variables, xa, head_fusion="mean")
                parts.append(np.asarray(explain.rollout_map(f)))
            else:
                rng = np.random.default_rng([seed, s])
                parts.append(rng.uniform(size=(len(xa), *grid)).astype(np.float32))
        maps[k] = np.concatenate(parts)
    emb_a = np.concatenate([embed(images_a[s : s + batch_size]) for s in range(0, b, batch_size)])
    unit_a = emb_a / np.maximum(np.linalg.norm(emb_a, axis=-1, keepdims=True), 1e-12)
    scores = (unit_a * unit_b).sum(-1)

    curves: dict[str, dict[str, np.ndarray]] = {}
    metrics: dict[str, dict[str, np.ndarray]] = {}
    for k, m in maps.items():
        curves[k] = {
            mode: score_curves(
                embed,
                images_a,
                unit_b,
                m,
                grid,
                mode=mode,
                steps=steps,
                baseline=base,
                batch_size=batch_size,
            )
            for mode in ("deletion", "insertion")
        }
        metrics[k] = {
            "deletion_auc": auc(curves[k]["deletion"]),
            "insertion_auc": auc(curves[k]["insertion"]),
        }
        if masks_a is not None:
            masks = np.asarray(masks_a, bool)
            up = _normalised_pixels(m, masks.shape[1:])  # once for every mask measure
            metrics[k]["energy_in_mask"] = _energy_in_mask(up, masks)
            metrics[k]["pointing_game"] = _pointing_game(up, masks).astype(np.float64)
            if distractor_masks_a is not None:
                d = np.asarray(distractor_masks_a, bool)
                metrics[k]["shared_share"] = _shared_share(up, masks, d)
    return Faithfulness(curves=curves, metrics=metrics, scores=scores)


def demo_pairs(
    num_pairs: int,
    *,
    image_size: int = 64,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    split: str = "test",
    seed: int = 0,
    examples_per_class: int | None = None,
    distractor: bool = False,
) -> dict[str, np.ndarray]:
    """Pairs of demo images showing the same glyph class, with A's object mask.

    Pair i is (example i, example i + C) of the split, C its number of classes
    (the demo's classes interleave, so both show the same glyph). With
    ``distractor``, A is instead ``demo.render_with_distractor(split, i)``: the
    same class's glyph next to a glyph of another class.

    Args:
      num_pairs: how many pairs (at most the split's size minus C).
      image_size: the demo's drawing size.
      normalization: (mean, std) of the model's input; default the demo's.
      split: ``"test"`` (classes unseen in training) or ``"train"``.
      seed: the demo dataset's content seed.
      examples_per_class: demo size (default the dataset's).
      distractor: A shows a distractor glyph too.

    Returns:
      ``{"images_a", "images_b": normalised float32 [P, S, S, 3], "masks_a": bool
      [P, S, S], "uint8_a", "uint8_b": uint8 [P, S, S, 3], "labels": int32 [P]}``,
      with ``distractor``: also ``"distractor_masks_a"`` bool [P, S, S].
    """
    from pairviz_jax.data import demo, preprocess

    src = demo.DemoSource(
        split, image_size=image_size, seed=seed, examples_per_class=examples_per_class
    )
    c = src.num_classes
    if not 0 < num_pairs <= len(src) - c:
        raise ValueError(f"demo {split} has room for {len(src) - c} pairs, asked {num_pairs}")
    if distractor:
        drawn = [
            demo.render_with_distractor(split, i, image_size=image_size, seed=seed)
            for i in range(num_pairs)
        ]
        a = {k: np.stack([e[k] for e in drawn]) for k in drawn[0]}
    else:
        a = demo.materialize(src, range(num_pairs))
    b = demo.materialize(src, range(c, c + num_pairs))
    assert (a["label"] == b["label"]).all()
    mean, std = normalization or preprocess.NORMALIZATION["demo"]
    out = {
        "images_a": preprocess.normalize(a["image"], mean, std),
        "images_b": preprocess.normalize(b["image"], mean, std),
        "masks_a": a["mask"],
        "uint8_a": a["image"],
        "uint8_b": b["image"],
        "labels": a["label"],
    }
    if distractor:
        out["distractor_masks_a"] = a["distractor_mask"]
    return out


def evaluate_demo(
    loaded,
    num_pairs: int = 128,
    *,
    steps: int = 16,
    baseline: str = "mean",
    seed: int = 0,
    distractor: bool = False,
) -> Faithfulness:
    """:func:`faithfulness` of a demo model on same-class pairs of the demo test split.

    Args:
      loaded: a model as ``plotting.load_run`` returns it (``model``, ``variables``,
        ``image_size``, ``mean``, ``std``).
      num_pairs: pairs (``demo_pairs``); at most 744 with the default demo size.
      steps, baseline, seed: as :func:`faithfulness`.
      distractor: A also shows a glyph of another class (module docstring, (c)).

    Returns:
      :class:`Faithfulness` with all metrics (``shared_share`` with ``distractor``).
    """
    h, w = loaded.image_size
    if h != w:
        raise ValueError(f"the demo images are square; this model takes {h}x{w}")
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    data = demo_pairs(num_pairs, image_size=h, normalization=norm, distractor=distractor)
    if loaded.mean is None:
        data["images_a"] = data["uint8_a"].astype(np.float32) / 255.0
        data["images_b"] = data["uint8_b"].astype(np.float32) / 255.0
    return faithfulness(
        loaded.model,
        loaded.variables,
        data["images_a"],
        data["images_b"],
        data["masks_a"],
        data.get("distractor_masks_a"),
        steps=steps,
        baseline=baseline,
        seed=seed,
    )


def plot_curves(result: Faithfulness, path: str, title: str | None = None) -> str:
    """Mean deletion and insertion curves per map kind, side by side; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    summ = result.summary()
    for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
        for kind, cs in result.curves.items():
            c = cs[mode].mean(0)
            x = np.linspace(0, 1, len(c))
            a = summ[kind][f"{mode}_auc"][0]
            ax.plot(x, c, label=f"{kind} (AUC {a:.3f})")
        ax.set_xlabel(f"fraction of patches of A {'removed' if mode == 'deletion' else 'revealed'}")
        ax.set_ylabel("cosine with B")
        ax.set_title(mode)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""One evaluation: maps of every kind for images against partners, then every measure.

The data of any benchmark take one form: B explained images, each with K partners (partner
0 shares object 0 of the image; in the distractor variants partner 1 shares object 1) and
the objects' masks in the explained image. The maps against partner 0 are measured
(deletion/insertion of the cosine with partner 0, energy in mask and pointing game on
object 0, shared share of object 0 against object 1); with two partners, the maps against
partner 1 give the pair sensitivity (``measures``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax._util import unit_np
from pairviz_jax.evaluate import measures as ms
from pairviz_jax.evaluate.kinds import FEATURE_KINDS, KINDS, check_kinds, kind_maps
from pairviz_jax.evaluate.results import Faithfulness


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(s + size, n)


def _padded(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with its last item repeated up to ``size`` items (one compiled shape)."""
    pad = size - len(x)
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad > 0 else x


def forward_batch(
    pairs: int, partners: int, curve_pairs: int, kinds: int, steps: int, baseline: str, most: int
) -> int:
    """Images per forward of ``measure``: ``most``, or fewer when the whole call needs
    fewer (its embeddings, then at most 2 (S - 1) images per curve pair and kind)."""
    first = pairs * partners + pairs + (1 if baseline == "mean" else curve_pairs)
    return min(most, max(first, curve_pairs * kinds * 2 * (steps - 1)))


def _embeddings(embed, partners, images, base, baseline, size):
    """Unit embeddings of the partners [B, K, E], the images [B, E] and the baselines [C, E]:
    one stream of batches of ``size`` images (the mean baseline, zeros for every pair,
    embedded once), the shape every forward of ``measure`` has."""
    b, k = partners.shape[:2]
    c = len(base)
    rows, base_in = (np.zeros(c, int), base[:1]) if baseline == "mean" else (np.arange(c), base)
    first = np.concatenate([partners.reshape(b * k, *partners.shape[2:]), images, base_in])
    emb = ms.embed_batches(embed, lambda s, e: first[s:e], len(first), size)
    return emb[: b * k].reshape(b, k, -1), emb[b * k : b * k + b], emb[b * k + b :][rows]


def _checked(images, partners, masks, steps: int):
    """``measure``'s inputs as float32 / bool arrays; ValueError on a shape that does not fit."""
    images = np.asarray(images, np.float32)
    partners = np.asarray(partners, np.float32)
    b = len(images)
    if partners.ndim != 5 or partners.shape[0] != b or partners.shape[2:] != images.shape[1:]:
        raise ValueError(
            f"partners must be [B, K, H, W, C] = [{b}, K, {', '.join(map(str, images.shape[1:]))}]"
            f", got {partners.shape}"
        )
    if masks is not None:
        masks = np.asarray(masks, bool)
        if masks.ndim != 4 or masks.shape[0] != b or masks.shape[2:] != images.shape[1:3]:
            raise ValueError(
                f"masks must be [B, K, H, W] with [B, H, W] = {images.shape[:3]}, got {masks.shape}"
            )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    return images, partners, masks


def _all_maps(
    model,
    variables,
    images,
    emb_p,
    kinds,
    *,
    method_options,
    batch_size,
    index_offset,
    seed,
    seconds,
    say,
) -> dict[str, np.ndarray]:
    """Maps of every kind, {kind: [B, K, gh, gw]}, ``batch_size`` pairs at a time (timed)."""
    b = len(images)
    maps: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    size = min(batch_size, b)
    # The paper's maps and the rollout/gamma baselines share one forward; each method runs
    # on its own (and is timed on its own).
    groups = [tuple(k for k in kinds if k in FEATURE_KINDS)]
    groups += [(k,) for k in kinds if k not in FEATURE_KINDS]
    for s, e in _chunks(b, size):
        x = jnp.asarray(_padded(images[s:e], size))
        p = jnp.asarray(_padded(emb_p[s:e], size))
        for group in filter(None, groups):
            t = time.perf_counter()
            got = kind_maps(
                model,
                variables,
                x,
                p,
                group,
                method_options=method_options,
                index=range(index_offset + s, index_offset + s + size),
                seed=seed,
            )
            for kind in group:
                maps[kind].append(got[kind][: e - s])
            name = "features" if group[0] in FEATURE_KINDS else group[0]
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
            say(f"maps of pairs {s}-{e - 1}: {', '.join(group)} ({time.perf_counter() - t:.1f} s)")
    return {kind: np.concatenate(v) for kind, v in maps.items()}


def _curves(embed, grid, images, ends, emb_p0, maps0, *, steps, base, batch_size, seconds, say):
    """Deletion/insertion curves and their AUCs of the maps against partner 0 of C pairs: the
    distinct images of every kind and mode in one stream of same-shape batches
    (``measures.curves_of_maps``).

    Args:
      images: [C, H, W, C'] explained images; ends: the unit embeddings [C, E] of the images
        and of their baselines ``base`` [C, H, W, C'].
      emb_p0: partner 0's embeddings [C, E]; maps0: {kind: [C, gh, gw]}.

    Returns:
      ``(curves {kind: {mode: [C, steps + 1]}}, metrics {kind: {mode_auc: [C]}})``.
    """
    c = len(images)
    if not c:
        curves = {k: {m: np.zeros((0, steps + 1)) for m in ms.MODES} for k in maps0}
        return curves, {k: {f"{m}_auc": np.zeros(0) for m in ms.MODES} for k in maps0}
    t = time.perf_counter()
    last = [t]

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] >= 5.0 or done == total:
            last[0] = now
            say(
                f"deletion/insertion curves of {c} pairs, {len(maps0)} kinds: "
                f"{done}/{total} forwards ({now - t:.1f} s)"
            )

    curves = ms.curves_of_maps(
        embed,
        images,
        unit_np(emb_p0),
        maps0,
        grid,
        steps=steps,
        baseline=base,
        batch_size=batch_size,
        ends=ends,
        progress=progress,
    )
    metrics = {k: {f"{m}_auc": ms.auc(v[m]) for m in ms.MODES} for k, v in curves.items()}
    seconds["curves"] = time.perf_counter() - t
    return curves, metrics


def _mask_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The mask measures of one kind's maps [B, K, gh, gw] with masks bool [B, K', H, W]."""
    up = ms.normalised_pixels(maps[:, 0], masks.shape[2:])  # once for every mask measure
    out = {
        "energy_in_mask": ms.energy_on(up, masks[:, 0]),
        "pointing_game": ms.points_on(up, masks[:, 0]).astype(np.float64),
    }
    if masks.shape[1] > 1:
        out["shared_share"] = ms.share_on(up, masks[:, 0], masks[:, 1])
        if maps.shape[1] > 1:
            m0, m1 = maps[:, 0], maps[:, 1]
            out["share_swing"] = ms.share_swing(m0, m1, masks[:, 0], masks[:, 1])
            out["map_correlation"] = ms.map_correlation(m0, m1)
    return out


def measure(
    model,
    variables,
    images: np.ndarray,
    partners: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    kinds: Sequence[str] = KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    steps: int = 16,
    baseline: str = "mean",
    seed: int = 0,
    batch_size: int = 16,
    embed_batch_size: int = 64,
    curve_pairs: int | None = None,
    index_offset: int = 0,
    log: Callable[[str], None] | None = None,
) -> Faithfulness:
    """Every measure of every kind of map (module doc).

    Args:
      model, variables: the model (a ViT for the rollout baselines).
      images: [B, H, W, C] normalised explained images.
      partners: [B, K, H, W, C] normalised partners (K = 1 or 2).
      masks: bool [B, K', H, W] the objects in the explained images (object k shared with
        partner k), or None (deletion and insertion only).
      kinds: map kinds (``evaluate.kinds.KINDS``).
      method_options: ``{method: {option: value}}`` for the explanation methods.
      steps: points of the deletion/insertion curves minus one.
      baseline: what deleted patches become, ``"mean"`` or ``"blur"``.
      seed: seed of the random maps.
      batch_size: pairs per compiled map computation (the last batch is padded).
      embed_batch_size: images per forward (the embeddings and the curves; capped at what
        the call needs, so one compiled shape serves every forward).
      curve_pairs: deletion/insertion on the first this many pairs only (None: all); they
        cost at most 2 (S - 1) forwards per pair and kind (an image two kinds share, e.g.
        the same top patches, is embedded once).
      index_offset: the global index of the first pair (seeds of the random maps).
      log: called with a progress line after each step (the embeddings, each method's maps,
        the curves every few seconds); None: silent.

    Returns:
      ``Faithfulness``; ``info["seconds"]`` holds the time spent per step (``embeddings``,
      ``features`` and each method's maps, ``curves``).
    """
    kinds = check_kinds(kinds)
    images, partners, masks = _checked(images, partners, masks, steps)
    b, k = partners.shape[:2]
    seconds: dict[str, float] = {}
    say = log or (lambda message: None)

    def embed(x):
        return np.asarray(explain.embed(model, variables, jnp.asarray(x)))

    t0 = time.perf_counter()
    grid = model.grid(images.shape)
    c = b if curve_pairs is None else max(0, min(curve_pairs, b))
    base = ms.baseline_images(images[:c], baseline, images.shape[1] // grid[0])
    size = forward_batch(b, k, c, len(kinds), steps, baseline, embed_batch_size)
    emb_p, unit_x, unit_base = _embeddings(embed, partners, images, base, baseline, size)
    scores = (unit_x * emb_p[:, 0]).sum(-1)
    seconds["embeddings"] = time.perf_counter() - t0
    say(f"embedded {b} pairs ({seconds['embeddings']:.1f} s)")

    maps = _all_maps(
        model,
        variables,
        images,
        emb_p,
        kinds,
        method_options=method_options,
        batch_size=batch_size,
        index_offset=index_offset,
        seed=seed,
        seconds=seconds,
        say=say,
    )
    curves, metrics = _curves(
        embed,
        grid,
        images[:c],
        (unit_x[:c], unit_base),
        emb_p[:c, 0],
        {kind: m[:c, 0] for kind, m in maps.items()},
        steps=steps,
        base=base,
        batch_size=size,
        seconds=seconds,
        say=say,
    )
    if masks is not None:
        for kind in kinds:
            metrics[kind].update(_mask_metrics(maps[kind], masks))
    info = {"seconds": seconds, "pairs": b, "curve_pairs": c, "steps": steps, "kinds": kinds}
    return Faithfulness(curves=curves, metrics=metrics, scores=scores, info=info, maps=maps)


def faithfulness(
    model,
    variables,
    images_a: np.ndarray,
    images_b: np.ndarray,
    masks_a: np.ndarray | None = None,
    distractor_masks_a: np.ndarray | None = None,
    *,
    second_b: np.ndarray | None = None,
    kinds: Sequence[str] = KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    steps: int = 16,
    baseline: str = "mean",
    seed: int = 0,
    batch_size: int = 256,
    curve_pairs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Faithfulness:
    """Every measure of A's maps against B, per map kind (the demo's form of ``measure``).

    Args:
      model, variables: a ViT and its variables.
      images_a: [B, H, W, C] normalised images A (the maps explain A).
      images_b: [B, H, W, C] normalised images B.
      masks_a: bool [B, H, W] A's object shared with B, or None (deletion/insertion only).
      distractor_masks_a: bool [B, H, W] A's distractor objects (shared share), or None;
        needs ``masks_a``.
      second_b: [B, H, W, C] normalised partners that share A's distractor (pair
        sensitivity), or None; needs ``distractor_masks_a``.
      kinds, method_options, steps, baseline, seed, curve_pairs, log: as ``measure``.
      batch_size: pairs per compiled map computation and images per forward.

    Returns:
      ``Faithfulness``.
    """
    images_a = np.asarray(images_a, np.float32)
    images_b = np.asarray(images_b, np.float32)
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a {images_a.shape} and images_b {images_b.shape} differ")
    for name, m in (("masks_a", masks_a), ("distractor_masks_a", distractor_masks_a)):
        if m is not None and np.shape(m) != images_a.shape[:3]:
            raise ValueError(f"{name} must be [B, H, W] = {images_a.shape[:3]}, got {np.shape(m)}")
    if distractor_masks_a is not None and masks_a is None:
        raise ValueError("distractor_masks_a needs masks_a (the shared objects' masks)")
    if second_b is not None and distractor_masks_a is None:
        raise ValueError("second_b needs distractor_masks_a (the object it shares with A)")
    partners = [images_b] + ([np.asarray(second_b, np.float32)] if second_b is not None else [])
    masks = None
    if masks_a is not None:
        masks = np.stack(
            [masks_a] + ([distractor_masks_a] if distractor_masks_a is not None else []), 1
        )
    return measure(
        model,
        variables,
        images_a,
        np.stack(partners, 1),
        masks,
        kinds=kinds,
        method_options=method_options,
        steps=steps,
        baseline=baseline,
        seed=seed,
        batch_size=min(batch_size, 64),
        embed_batch_size=batch_size,
        curve_pairs=curve_pairs,
        log=log,
    )

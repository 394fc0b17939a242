"""The demo benchmark: glyph pairs of the demo test split, whose images carry their masks.

Image A is explained against image B, which shows the same glyph class (A's glyph is the
shared object). With ``distractor``, A also shows a glyph of another class in its other
half (``data.demo.render_with_distractor``), equally salient but not in B; a second partner
B' shows the distractor's class, so the same A against B and against B' gives the pair
sensitivity. With one glyph per image the shared object is also the only salient one, so
rollout, which finds salient objects, already marks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pairviz_jax.data import preprocess
from pairviz_jax.evaluate.core import faithfulness
from pairviz_jax.evaluate.kinds import KINDS
from pairviz_jax.evaluate.results import Faithfulness


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
    same class's glyph next to a glyph of another class, and ``second_b`` is an
    example of that other class (example ``d + C * (i // C)``, d its class).

    Args:
      num_pairs: how many pairs (at most the split's size minus C).
      image_size: the demo's drawing size.
      normalization: (mean, std) of the model's input; default the demo's.
      split: ``"test"`` (classes unseen in training) or ``"train"``.
      seed: the demo dataset's content seed.
      examples_per_class: demo size (default the dataset's).
      distractor: A shows a distractor glyph too.

    Returns:
      ``images_a``, ``images_b``: normalised float32 [P, S, S, 3]; ``masks_a``: bool
      [P, S, S]; ``uint8_a``, ``uint8_b``: uint8 [P, S, S, 3]; ``labels``: int32 [P];
      with ``distractor`` also ``"distractor_masks_a"`` bool [P, S, S], ``"second_b"``
      (normalised) and ``"uint8_second_b"``.
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
        offset = 0 if split == "train" else len(demo.TRAIN_GLYPHS)
        other = a["distractor_label"] - offset  # the distractor's class in the split
        per = src.examples_per_class
        index = other + c * ((np.arange(num_pairs) // c) % per)
        second = demo.materialize(src, index)
        assert (second["label"] == a["distractor_label"]).all()
        out["distractor_masks_a"] = a["distractor_mask"]
        out["second_b"] = preprocess.normalize(second["image"], mean, std)
        out["uint8_second_b"] = second["image"]
    return out


def evaluate_demo(
    loaded,
    num_pairs: int = 128,
    *,
    steps: int = 16,
    baseline: str = "mean",
    seed: int = 0,
    distractor: bool = False,
    kinds: Sequence[str] = KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    curve_pairs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Faithfulness:
    """Every measure of a demo model's maps on pairs of the demo test split.

    Args:
      loaded: a model as ``plotting.load_run`` returns it (``model``, ``variables``,
        ``image_size``, ``mean``, ``std``).
      num_pairs: pairs (``demo_pairs``); at most 744 with the default demo size.
      steps, baseline, seed, kinds, method_options, curve_pairs, log: as ``measure``.
      distractor: A also shows a glyph of another class (module doc); adds the shared
        share and the pair sensitivity.

    Returns:
      ``Faithfulness``.
    """
    h, w = loaded.image_size
    if h != w:
        raise ValueError(f"the demo images are square; this model takes {h}x{w}")
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    if log:
        log(f"drawing {num_pairs} demo pairs")
    data = demo_pairs(num_pairs, image_size=h, normalization=norm, distractor=distractor)
    if loaded.mean is None:
        for key in ("a", "b", "second_b"):
            if f"uint8_{key}" in data:
                name = "second_b" if key == "second_b" else f"images_{key}"
                data[name] = preprocess.to_unit_range(data[f"uint8_{key}"])
    return faithfulness(
        loaded.model,
        loaded.variables,
        data["images_a"],
        data["images_b"],
        data["masks_a"],
        data.get("distractor_masks_a"),
        second_b=data.get("second_b"),
        kinds=kinds,
        method_options=method_options,
        steps=steps,
        baseline=baseline,
        seed=seed,
        curve_pairs=curve_pairs,
        log=log,
    )

"""Each figure of the paper from loaded models and images: compute the maps, draw them.

These are the functions behind ``visualize.py``'s subcommands, usable from a notebook::

    from pairviz_jax import plotting
    m = plotting.load_run("workdirs/demo")
    a, b = (plotting.read_example(r, m) for r in ("demo:test:0", "demo:test:24"))
    plotting.save_figure(plotting.pair(m, a, b), "pair.png")

Retrieval ranks the whole gallery by the embeddings' cosine similarity (one forward
pass per image, no attention kept) and computes maps only for the top results. Every
figure's title names the model and the checkpoint step its maps come from
(``LoadedModel.label``, e.g. ``demo @ step 3500``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from pairviz_jax import explain
from pairviz_jax._util import unit_np
from pairviz_jax.plotting import figures
from pairviz_jax.plotting.figures import RetrievalRow, Style
from pairviz_jax.plotting.inputs import Example, Gallery
from pairviz_jax.runs import InputError, LoadedModel

MODERN = Style()  # the default style (a frozen dataclass, shared)

__all__ = [
    "class_maps",
    "matrix",
    "pair",
    "rank",
    "retrieval_row",
    "retrieve",
    "rollout",
    "training",
]


def _features(m: LoadedModel, examples: Sequence[Example]) -> explain.Features:
    """Features of each image, one forward pass per image (one compiled shape per model)."""
    per_image = [
        explain.features(m.model, m.variables, m.prepare(e.image[None]), head_fusion="mean")
        for e in examples
    ]
    return jax.tree.map(lambda *x: jnp.concatenate(x), *per_image)


def _images(m: LoadedModel, examples: Sequence[Example]) -> jax.Array:
    return jnp.concatenate([m.prepare(e.image[None]) for e in examples])


def _cross(
    m: LoadedModel,
    queries: Sequence[Example],
    gallery: Sequence[Example] | None,
    convention: str,
    method: str = "paper",
) -> dict[str, np.ndarray]:
    """Every query x gallery pair (the queries themselves when ``gallery`` is None), maps
    upsampled to [Q, G, H, W], through ``explain.cross_maps`` (the paper's method folds
    each image's features, one forward per image; another method runs one forward per
    image and one backward per pair and direction)."""
    if method == "paper":  # the paper's per-image object, shared with the rollout figure
        fq = _features(m, queries)
        return _paper_cross(m, fq, fq if gallery is None else _features(m, gallery), convention)
    iq = explain.Inputs(m.model, m.variables, _images(m, queries))
    ig = iq if gallery is None else explain.Inputs(m.model, m.variables, _images(m, gallery))
    try:
        out = explain.cross_maps(iq, ig, method=method)
    except ValueError as e:
        raise InputError(f"--method {method}: {e}") from None
    return _upsampled(m, out)


def _paper_cross(
    m: LoadedModel, fq: explain.Features, fg: explain.Features, convention: str
) -> dict[str, np.ndarray]:
    return _upsampled(m, explain.cross_maps(fq, fg, convention=convention))


def _upsampled(m: LoadedModel, out: dict) -> dict[str, np.ndarray]:
    return {
        "maps_q": np.asarray(explain.upsample(out["maps_q"], m.image_size)),
        "maps_g": np.asarray(explain.upsample(out["maps_g"], m.image_size)),
        "score": np.asarray(out["score"]),
    }


def _source(m: LoadedModel, method: str) -> str:
    """The figure's source line: the model, and the method when it is not the paper's."""
    return m.label if method == "paper" else f"{m.label}, {method} maps"


def _pair_maps(m: LoadedModel, a: Example, b: Example, convention: str, method: str = "paper"):
    out = _cross(m, [a], [b], convention, method)
    return out["maps_q"][0, 0], out["maps_g"][0, 0], float(out["score"][0, 0])


def pair(
    m: LoadedModel,
    a: Example,
    b: Example,
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 3/4: images A and B with their paired maps A|B and B|A (``method``: a name of
    ``explain.METHODS``; the paper's by default)."""
    map_a, map_b, score = _pair_maps(m, a, b, convention, method)
    return figures.pair_figure(
        a.image,
        b.image,
        map_a,
        map_b,
        score,
        names=(a.name, b.name),
        style=style,
        source=_source(m, method),
    )


def matrix(
    m: LoadedModel,
    examples: Sequence[Example],
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 1: the N x N grid of paired maps (every pair from one forward pass per image)."""
    if len(examples) < 2:
        raise InputError(f"matrix: needs at least 2 images, got {len(examples)}")
    cross = _cross(m, examples, None, convention, method)
    names = [e.name for e in examples]
    if len(set(names)) < len(names):
        names = [chr(ord("A") + i) if i < 26 else str(i) for i in range(len(examples))]
    return figures.matrix_figure(
        [e.image for e in examples],
        cross["maps_q"],
        cross["score"],
        names=names,
        style=style,
        source=_source(m, method),
    )


def rank(
    m: LoadedModel,
    query: Example,
    gallery: Gallery,
    top: int,
    *,
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top`` gallery indices by cosine similarity to the query (the query excluded).

    Returns:
      ``(indices [k], scores [k])``, best first.
    """
    if top < 1:
        raise InputError(f"--top {top}: must be at least 1")
    emb = gallery.embed(m) if embeddings is None else embeddings
    q = m.embed(query.image[None])[0]
    scores = unit_np(emb) @ unit_np(q)
    keep = np.asarray([e.key != query.key for e in gallery.examples])
    if not keep.any():
        raise InputError(f"--gallery {gallery.spec}: holds only the query itself")
    scores = np.where(keep, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[: min(top, int(keep.sum()))]
    return order, scores[order]


def retrieval_row(
    m: LoadedModel,
    query: Example,
    gallery: Gallery,
    top: int,
    *,
    title: str | None = None,
    convention: str = "authors",
    method: str = "paper",
) -> RetrievalRow:
    """Ranks the gallery for one model and computes the maps of the top results."""
    idx, _ = rank(m, query, gallery, top)
    results = [gallery.examples[i] for i in idx]
    out = _cross(m, [query], results, convention, method)
    correct = None
    if query.label is not None:
        correct = [r.label is not None and r.label == query.label for r in results]
    return RetrievalRow(
        title=title or _source(m, method),
        query=query.image,
        results=[r.image for r in results],
        maps=list(out["maps_g"][0]),
        scores=[float(s) for s in out["score"][0]],
        correct=correct,
        names=[r.name for r in results],
    )


def retrieve(
    rows: Sequence[tuple[LoadedModel, Example, Gallery]],
    top: int = 4,
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 9: a query's top-k results with their maps, one row per model.

    Args:
      rows: ``(model, query, gallery)`` per row; the query and gallery prepared at that
        model's input size (e.g. the ViT, then the ResNet with ``--compare``).
      top: results per row.
      style: drawing style.
      convention: rollout convention (``explain.paired_maps``).
      method: the explanation method (``explain.METHODS``; the paper's by default).
    """
    return figures.retrieval_figure(
        [retrieval_row(m, q, g, top, convention=convention, method=method) for m, q, g in rows],
        style=style,
    )


def training(
    rows: Sequence[tuple[LoadedModel, Example, Gallery]],
    top: int = 3,
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 6: a query and its top matches with maps at several checkpoints of one run."""
    built = [
        retrieval_row(
            m,
            q,
            g,
            top,
            title=f"step {m.step}" if m.step is not None else m.label,
            convention=convention,
            method=method,
        )
        for m, q, g in rows
    ]
    run = rows[0][0].label.split(" @ ")[0] if rows else None
    if run and method != "paper":
        run = f"{run}, {method} maps"
    return figures.retrieval_figure(built, style=style, source=run)


def class_maps(
    m: LoadedModel,
    queries: Sequence[Example],
    gallery: Gallery,
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 5 (Section 4.2): each query's maps summed over the gallery images of its class
    (the paper's method: class maps fold the gallery, eq. 4 summed over its images)."""
    if method != "paper":
        raise InputError(f"class-map: --method {method}: class maps use the paper's method only")
    images, maps, titles = [], [], []
    fq_all = _features(m, queries)
    for i, q in enumerate(queries):
        if q.label is None:
            raise InputError(
                f"{q.key}: its class is unknown; pass --label, or use a dataset example "
                "(NAME:SPLIT:INDEX) or a file inside a class folder of the gallery"
            )
        members = [
            j for j, g in enumerate(gallery.examples) if g.label == q.label and g.key != q.key
        ]
        if not members:
            raise InputError(
                f"--gallery {gallery.spec}: no image of class {q.label} besides {q.key}"
            )
        fg = _features(m, [gallery.examples[j] for j in members])
        cmap = explain.class_map(fq_all.slice(i, i + 1), fg, convention=convention)  # [1, gh, gw]
        maps.append(np.asarray(explain.upsample(cmap, m.image_size))[0])
        images.append(q.image)
        fq = fq_all.slice(i, i + 1)
        score = np.asarray(explain.cosine(fq.embedding, fg.embedding)).mean()
        titles.append(f"{q.name}: class {q.label}\n{len(members)} images, mean {score:.3f}")
    return figures.class_map_figure(images, maps, titles, style=style, source=m.label)


def rollout(
    m: LoadedModel,
    a: Example,
    b: Example,
    *,
    style: Style = MODERN,
    convention: str = "authors",
    method: str = "paper",
) -> Figure:
    """Fig. 8: the output-agnostic rollout maps of A and B beside their paired maps."""
    if not getattr(m.model, "has_attention", False):
        raise InputError(
            f"rollout: {m.label} is a {type(m.model).__name__}, which has no attention to roll out"
        )
    f = _features(m, [a, b])  # the rollout's forward; the paper's maps reuse it
    if method == "paper":
        out = _paper_cross(m, f.slice(0, 1), f.slice(1, 2), convention)
    else:
        out = _cross(m, [a], [b], convention, method)
    map_a, map_b, score = out["maps_q"][0, 0], out["maps_g"][0, 0], float(out["score"][0, 0])
    roll = np.asarray(explain.upsample(explain.rollout_map(f), m.image_size))
    return figures.rollout_figure(
        a.image,
        b.image,
        roll[0],
        roll[1],
        map_a,
        map_b,
        score,
        names=(a.name, b.name),
        style=style,
        source=_source(m, method),
    )

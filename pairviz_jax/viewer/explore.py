"""One pair in the browser: what each patch of A matches in B, and back (one HTML file).

``explore_data`` runs one forward pass over the two images, folds them
(``explain.fold``) and splits the cosine over patch pairs
(``explain.correspondence``: C = M_A P M_B^T through the rollout, and P over
the output tokens); ``write_explore`` writes a self-contained page: both images
as data URIs, C, P and the paired maps as float16 (base64), the drawing code
inline, and a Content-Security-Policy that forbids any network request.

Hovering (or tapping) patch i of A draws row i of C over B; a patch j of B,
column j over A. The sum of that row is A's paired map at patch i (plus the
part of B's embedding that is not on B's patches, shown when non-zero; zero for
the transpose convention of a mean-pooled model). Size for ViT-B/16 at 256 px:
see docs/correspondence.md (C and P are 256 x 256 each).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pairviz_jax._util import write_text_atomic
from pairviz_jax.viewer import _corr, _encode

__all__ = ["explore_data", "explore_html", "write_explore"]

# No network at all: inline script and style, images from data: URIs only.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_LEVEL_LABELS = {
    "patch": "patches (through rollout: C)",
    "token": "output tokens (P, no rollout)",
    "cnn": "feature-map cells (C = P)",
    "bilrp": "patches, second order (BiLRP: C = W_A W_B^T)",
}
METHODS = _corr.WITH_C

_ABOUT_BILRP = """
<p>Second order (<code>--method bilrp</code>): C = W<sub>A</sub> W<sub>B</sub><sup>T</sup>
with W[i, m] the conservative relevance (Ali et al., ICML 2022: attention, LayerNorm scale
and activation gates detached, then gradient &times; input) of patch i for coordinate m of
the unit embedding, through the whole network (BiLRP, Eberle et al., TPAMI 2020; Vasileiou
&amp; Eberle, NAACL 2024). Its row sums plus the remainder are the conservative maps; the
remainder holds the biases' and the class/register tokens' share.</p>
"""

_ABOUT = """
<p>The cosine similarity of the two embeddings splits exactly over pairs of output tokens
(Black et al., WACV 2022, eq. 1-4, applied to pairs): with &beta; the mean of the N tokens
&alpha;, <code>s = &Sigma;<sub>ij</sub> &lang;&alpha;<sup>A</sup><sub>i</sub>,
&alpha;<sup>B</sup><sub>j</sub>&rang; / (N<sub>A</sub> N<sub>B</sub> |&beta;<sup>A</sup>|
|&beta;<sup>B</sup>|) = &Sigma;<sub>ij</sub> P<sub>ij</sub></code>. Through the attention
rollout of both images (eq. 5, 6), <code>C = M<sub>A</sub> P M<sub>B</sub><sup>T</sup></code>
relates input patches: C[i, j] is the share of the cosine that patch i of A and patch j of B
account for together. Row i of C, drawn over B, is what A's patch i matches in B; its sum is
A's paired map at patch i. With the transpose convention (M = R<sup>T</sup>) C sums to the
cosine and its row and column sums are the two paired maps; with the authors' (M = R) a
remainder (the part of each embedding not on its patches) completes the sums, and is printed.
</p><p>Colours: the colour bar's ends are the smallest and largest value drawn (this patch's
row, or all of C). Maps are drawn between patch centres (bilinear) or as blocks.</p>
"""


def _method(convention: str, start_layer: int, head_fusion: str, has_attention: bool) -> str:
    if not has_attention:
        return "eq. 4 over pairs of feature-map cells (no attention): C = P"
    m = "R^T" if convention == "transpose" else "R"
    start = f", from block {start_layer}" if start_layer else ""
    return (
        f"C = M_A P M_B^T with M = {m} ({convention} convention), rollout of "
        f"{head_fusion}-fused attention{start}"
    )


def _level(out: dict[str, Any], label: str) -> dict[str, Any]:
    take = lambda key: np.asarray(out[key][0]).reshape(-1)  # noqa: E731
    return {
        "label": label,
        "corr": _encode.f16(np.asarray(out["corr"][0]), scaled=True),
        "map_a": _encode.f16(take("map_a"), scaled=True),
        "map_b": _encode.f16(take("map_b"), scaled=True),
        "rest_a": _encode.f16(take("rest_a"), scaled=True),
        "rest_b": _encode.f16(take("rest_b"), scaled=True),
        "rest": float(np.asarray(out["rest"][0])),
    }


def _display(image: np.ndarray, source: np.ndarray | None, longest: int) -> np.ndarray:
    """The image as the model saw it, at a size whose longest side is ``longest`` pixels.

    ``source``, the full-resolution original if there is one, is resized with the same
    geometry (the model's input is the whole image, resized without crop), so it is
    sharper than the model's input scaled up.
    """
    h, w = image.shape[:2]
    scale = longest / max(h, w)
    base = image if source is None else source
    return _encode.resize_for_display(base, max(1, round(w * scale)), max(1, round(h * scale)))


def explore_data(
    loaded,
    example_a,
    example_b,
    *,
    source_a: np.ndarray | None = None,
    source_b: np.ndarray | None = None,
    convention: str = "transpose",
    start_layer: int = 0,
    head_fusion: str = "mean",
    display: int = 448,
    cmap: str = "inferno",
    method: str = "paper",
) -> dict[str, Any]:
    """Everything the explore page shows, for one pair.

    Args:
      loaded: a loaded model (``model``, ``variables``, ``prepare``, ``label``), as
        ``pairviz_jax.runs.model_from_args`` returns.
      example_a: image A (``.image`` uint8 [H, W, 3] at the model's input size, ``.name``).
      example_b: image B.
      source_a: A's full-resolution original (drawn sharper), or None.
      source_b: B's.
      convention: ``"transpose"`` (default; C's sums are the paired maps) or ``"authors"``.
      start_layer: first block of the rollout.
      head_fusion: ``mean``, ``max`` or ``min``.
      display: longest side of the images on the page, in CSS pixels.
      cmap: a matplotlib colormap name.
      method: ``"paper"`` (C through the rollout, and P) or ``"bilrp"`` (also the
        second-order C through the whole network, shown first; E backward passes per image,
        ``explain.methods.bilrp``).

    Returns:
      A JSON-able dict (``write_explore`` embeds it).
    """
    import jax

    from pairviz_jax import explain

    why = _corr.problem(method, loaded.model)
    if why is not None:
        raise ValueError(why)
    if example_a.image.shape != example_b.image.shape:
        raise ValueError(
            f"A and B must both be at the model's input size, got {example_a.image.shape} and "
            f"{example_b.image.shape}"
        )
    x = loaded.prepare(np.stack([example_a.image, example_b.image]))
    kw = dict(convention=convention, start_layer=start_layer, head_fusion=head_fusion)
    f = explain.features(loaded.model, loaded.variables, x, head_fusion=head_fusion)
    has_attention = f.attention is not None
    levels: dict[str, Any] = {}
    # C through the rollout: the same path as the report's (viewer._corr).
    folded = _corr.fold(loaded.model, loaded.variables, x, "paper", **kw)
    patch = _corr.pairs(_corr.take(folded, [0]), _corr.take(folded, [1]))
    if has_attention:
        levels["patch"] = _level(patch, _LEVEL_LABELS["patch"])
        token = jax.device_get(
            explain.correspondence(f.slice(0, 1), f.slice(1, 2), aligned=True, level="token", **kw)
        )
        levels["token"] = _level(token, _LEVEL_LABELS["token"])
    else:
        levels["patch"] = _level(patch, _LEVEL_LABELS["cnn"])
    if method != "paper":
        folded = _corr.fold(loaded.model, loaded.variables, x, method)
        second = _corr.pairs(_corr.take(folded, [0]), _corr.take(folded, [1]))
        levels = {method: _level(second, _LEVEL_LABELS[method]), **levels}
    grid_a = tuple(int(g) for g in patch["map_a"].shape[-2:])
    grid_b = tuple(int(g) for g in patch["map_b"].shape[-2:])
    score = float(np.asarray(patch["score"][0]))
    shown = []
    for ex, src, grid in ((example_a, source_a, grid_a), (example_b, source_b, grid_b)):
        img = _display(ex.image, src, display)
        shown.append(
            {
                "name": str(ex.name),
                "src": _encode.data_uri(img),
                "grid": list(grid),
                "size": [int(img.shape[0]), int(img.shape[1])],
            }
        )
    return {
        "title": "Which part matches which",
        "model": str(getattr(loaded, "label", "model")),
        "score": score,
        "convention": convention,
        "method": _method(convention, start_layer, head_fusion, has_attention)
        + (f"; second order: {_corr.describe(method)}" if method != "paper" else ""),
        "images": shown,
        "levels": levels,
        "default_level": next(iter(levels)),
        "cmap": _encode.colormap_lut(cmap),
        "about_html": _ABOUT + (_ABOUT_BILRP if method == "bilrp" else ""),
    }


def explore_html(data: dict[str, Any]) -> str:
    """The self-contained page for ``explore_data``'s dict."""
    a, b = (im["name"] for im in data["images"])
    return _encode.page(
        title=f"pairviz: {a} vs {b}",
        csp=CSP,
        body="<noscript>This page draws with JavaScript; please enable it.</noscript>",
        scripts=["common.js", "explore.js"],
        styles=["style.css"],
        data=data,
    )


def write_explore(path: str, data: dict[str, Any]) -> str:
    """Writes the page to ``path`` (folders created) and returns the path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_text_atomic(path, explore_html(data))
    return path

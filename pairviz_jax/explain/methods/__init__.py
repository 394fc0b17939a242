"""Explanation methods behind one switch: ``method=`` selects one from ``METHODS``.

=================  ===============================================  =======================
name               what it is                                       what its map sums to
=================  ===============================================  =======================
``paper``          eq. 4 split, rollout back to the patches         transpose: the score
                   (eq. 5-6; the default)                           minus prefix and rest
``gradxinput``     gradient x input on the tokens entering block k  nothing in general
``chefer``         gradient-weighted attention rollout              nothing
                   (Chefer, Gur & Wolf 2021)
``conservative``   gradient x input with attention, LayerNorm       the score minus the
                   scale and gates detached (Ali et al. 2022)       bias terms (exact)
``ig``             integrated gradients over pixels, per patch      score - f(baseline)
``bilrp``          second order: C = W_a W_b^T from conservative    C + rest terms: the
                   relevance per embedding coordinate (BiLRP,       score (exact); maps:
                   Eberle et al. 2020; Vasileiou & Eberle 2024)     ``conservative``'s
=================  ===============================================  =======================

Every method explains the same quantity, the cosine with the image's own norm held
(``base``), so the partner's unit embedding is the cotangent of one backward pass and one
forward serves a whole gallery. This package is the registry; the maps come from the one
door, ``explain.paired_maps`` / ``cross_maps`` / ``against`` (``method=``).
"""

from pairviz_jax.explain.methods import bilrp, chefer, gradients, paper  # noqa: F401  (registers)
from pairviz_jax.explain.methods.base import METHODS, Method, Prepared, get, register

__all__ = ["METHODS", "Method", "Prepared", "get", "register"]

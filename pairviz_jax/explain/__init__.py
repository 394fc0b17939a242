"""The paper's method and every other explanation method, as composable JAX functions.

One door for every method (``method=``, ``"paper"`` by default; ``explain.methods``):

* ``paired_maps`` — the maps of B pairs, one compiled function.
* ``cross_maps`` — every query x gallery pair (the paper's method folds: no extra
  forward pass); ``against`` — images against K partner embeddings each.
* ``correspondence`` — the cosine split over patch pairs: C through the rollout (the
  paper's pieces below) or, ``method="bilrp"``, second order through the whole network
  (``explain.methods.bilrp``: C = W_a W_b^T, one fold per image).

The paper's pieces (Black et al., WACV 2022):

* ``token_similarity`` — eq. 1-4: the cosine split over output tokens (gamma).
* ``rollout`` — eq. 5: attention flow R through the blocks.
* ``redistribute`` — eq. 6: gamma' = R @ gamma (or R^T @ gamma).
* ``features`` — one forward pass: tokens, embedding, attention; ``embed`` the embedding.
* ``fold`` — one image's W and u, from which any pair is one product.
* ``class_map`` (Section 4.2), ``rollout_map`` (Fig. 8), ``upsample``.

Every function takes leading batch axes and works under ``jit`` and ``vmap``.
"""

from pairviz_jax.explain.api import against, cross_maps, paired_maps
from pairviz_jax.explain.correspondence import correspondence, pair_correspondence
from pairviz_jax.explain.cross import Folded, class_map, fold, rollout_map
from pairviz_jax.explain.maps import Features, Inputs, embed, features, to_grid, upsample
from pairviz_jax.explain.methods import METHODS
from pairviz_jax.explain.rollout import (
    CONVENTIONS,
    part_matrix,
    redistribute,
    redistribution_matrix,
    rollout,
)
from pairviz_jax.explain.similarity import cosine, safe_norm, token_similarity, unit

__all__ = [
    "CONVENTIONS",
    "METHODS",
    "Features",
    "Folded",
    "Inputs",
    "against",
    "class_map",
    "correspondence",
    "cosine",
    "cross_maps",
    "embed",
    "features",
    "fold",
    "pair_correspondence",
    "paired_maps",
    "part_matrix",
    "redistribute",
    "redistribution_matrix",
    "rollout",
    "rollout_map",
    "safe_norm",
    "to_grid",
    "token_similarity",
    "unit",
    "upsample",
]

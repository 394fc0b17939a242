"""The paper's method as composable JAX functions.

* ``token_similarity`` — eq. 1-4: the cosine split over output tokens (gamma).
* ``rollout`` — eq. 5: attention flow R through the blocks.
* ``redistribute`` — eq. 6: gamma' = R @ gamma (or R^T @ gamma).
* ``features`` — one forward pass: tokens, embedding, attention.
* ``paired_maps`` — the whole method for a batch of pairs, one compiled function.
* ``cross_maps`` / ``fold`` — every query x gallery pair with no extra forward.
* ``class_map`` (Section 4.2), ``rollout_map`` (Fig. 8), ``upsample``.

Every function takes leading batch axes and works under ``jit`` and ``vmap``.
"""

from pairviz_jax.explain.correspondence import correspondence, pair_correspondence
from pairviz_jax.explain.cross import Folded, class_map, cross_maps, fold, rollout_map
from pairviz_jax.explain.maps import Features, features, paired_maps, to_grid, upsample
from pairviz_jax.explain.rollout import (
    CONVENTIONS,
    part_matrix,
    redistribute,
    redistribution_matrix,
    rollout,
)
from pairviz_jax.explain.similarity import cosine, token_similarity

__all__ = [
    "CONVENTIONS",
    "Features",
    "Folded",
    "class_map",
    "correspondence",
    "cosine",
    "cross_maps",
    "features",
    "fold",
    "pair_correspondence",
    "paired_maps",
    "part_matrix",
    "redistribute",
    "redistribution_matrix",
    "rollout",
    "rollout_map",
    "to_grid",
    "token_similarity",
    "upsample",
]

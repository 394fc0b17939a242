"""Are the maps right? Faithfulness of paired similarity maps, measured.

Every explanation method (``explain.methods``) and the baselines (rollout, gamma only,
random) are measured the same way on data whose answer is known:

* ``demo`` — glyph pairs of the demo dataset (``evaluate_demo``), optionally with a
  distractor glyph and a second partner that shares it;
* ``photos`` — copy-paste pairs of real photos (``evaluate_photos``), both photo halves
  reported separately, optionally with a distractor object;
* ``measures`` — deletion and insertion AUC of the pair's cosine, energy in mask, pointing
  game, shared share and pair sensitivity (share swing, map correlation);
* ``kinds`` — the maps, by name; ``core.measure`` runs any kinds on any such data;
* ``results`` — per-pair results, mean ± standard error, paired differences, tables, curves;
* ``swap`` — the swap test (A holds X and Y, B1 holds X, B2 holds Y: does A's map follow its
  partner?), against ``occlusion``, the model's own cosine with patches deleted;
* ``geometry`` — correspondence C against the true matches of copy-paste pairs (does
  ``argmax_j C[i, j]`` find where A's patch i went in B?), for rollout C, token-level P, the
  second-order C and the patch-token cosine.
"""

from pairviz_jax.evaluate.core import faithfulness, measure
from pairviz_jax.evaluate.demo import demo_pairs, evaluate_demo
from pairviz_jax.evaluate.geometry import GeometryResult, evaluate_geometry
from pairviz_jax.evaluate.kinds import FEATURE_KINDS, KINDS, METHOD_KINDS, kind_maps
from pairviz_jax.evaluate.measures import (
    auc,
    baseline_images,
    energy_in_mask,
    gaussian_blur,
    map_correlation,
    normalised_pixels,
    patch_order,
    pointing_game,
    score_curves,
    share_swing,
    shared_share,
    step_masks,
    to_pixels,
)
from pairviz_jax.evaluate.occlusion import occluded_cosines, occlusion_maps
from pairviz_jax.evaluate.photos import PHOTO_KINDS, evaluate_photos, photo_pairs
from pairviz_jax.evaluate.results import (
    BASELINES,
    HIGHER_IS_BETTER,
    LABELS,
    METRICS,
    Faithfulness,
    concatenate,
    halves_table,
    plot_curves,
)
from pairviz_jax.evaluate.swap import SWAP_KINDS, SwapResult, evaluate_swap, swap_measures

__all__ = [
    "BASELINES",
    "FEATURE_KINDS",
    "HIGHER_IS_BETTER",
    "KINDS",
    "LABELS",
    "METHOD_KINDS",
    "METRICS",
    "PHOTO_KINDS",
    "SWAP_KINDS",
    "Faithfulness",
    "GeometryResult",
    "SwapResult",
    "auc",
    "baseline_images",
    "concatenate",
    "demo_pairs",
    "energy_in_mask",
    "evaluate_demo",
    "evaluate_geometry",
    "evaluate_photos",
    "evaluate_swap",
    "faithfulness",
    "gaussian_blur",
    "halves_table",
    "kind_maps",
    "map_correlation",
    "measure",
    "normalised_pixels",
    "occluded_cosines",
    "occlusion_maps",
    "patch_order",
    "photo_pairs",
    "plot_curves",
    "pointing_game",
    "score_curves",
    "share_swing",
    "shared_share",
    "step_masks",
    "swap_measures",
    "to_pixels",
]

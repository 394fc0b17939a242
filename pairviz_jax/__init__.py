"""pairviz-jax: why two images are similar to an image-embedding Transformer.

Black, Stylianou, Pless & Souvenir, "Visualizing Paired Image Similarity in
Transformer Networks", WACV 2022, in JAX.

Importing it first sets an XLA:CPU flag that avoids a miscompilation of batched maps
(``pairviz_jax._xla``): import pairviz_jax before running any JAX computation.
"""

from pairviz_jax import _xla  # noqa: F401  (before anything starts JAX's backend)

__version__ = "0.1.0"

"""pairviz-jax: why two images are similar to an image-embedding Transformer.

Black, Stylianou, Pless & Souvenir, "Visualizing Paired Image Similarity in
Transformer Networks", WACV 2022, in JAX.
"""

__version__ = "0.1.0"

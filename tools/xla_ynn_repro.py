"""Minimal reproduction: XLA:CPU's YNNPACK reduce fusion miscompiles a vmapped VJP.

No pairviz code; JAX only. Run ``python3 tools/xla_ynn_repro.py``: exit status 1 and
"WRONG" when the bug is present, 0 otherwise.

What it does: the VJP of an RMS norm ``x * rsqrt(mean(x**2, -1) + eps)`` for one input
``x`` [B, R, D] = [2, 1024, 32], pulled back along K = 4 cotangents at once
(``jax.vmap`` over the VJP function) and along each cotangent alone.

Expected: the batched and the one-at-a-time results agree to float32 rounding (~1e-7
relative) for every cotangent.

Actual (jax/jaxlib 0.10.2 from the PyPI wheels, Python 3.11, Linux x86-64, AMD EPYC
with AVX-512; the same on 2 cores and pinned to 1): the first cotangent's result is
right and the others are wrong by about half of their largest entry, deterministically::

    cotangent 0: max |batched - one at a time| / max |one at a time| = 8.6e-08
    cotangent 1: ... = 0.47    cotangent 2: ... = 0.51    cotangent 3: ... = 0.5

After optimisation the batched VJP is one ``__ynn_fusion`` (kind=kCustom) holding
``reduce(broadcast(x) * c, dims={3})`` times ``broadcast(s, dimensions={1,2})`` (s
[B, R] shared by all cotangents) and ``broadcast(x, dimensions={1,2,3})`` again: the
operands without the cotangent axis seem to be read as if they had it. It needs
K * B * R >= 4096 rows (K=2, B=2, R=1023: right; R=1024: wrong) and D >= 16 at that
size (D=8 right at 4096 rows, wrong at 8192); K = 1 or B = 1 is right. Disabling the
reduce fusion fixes it, either way::

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce   # right
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=          # right (no YNN fusions)
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=reduce    # wrong (reduce only)

Found through a ViT (DINOv2-S/14 shapes: 2 images x 8 partners x 257 tokens x 384
channels = 4112 rows): every LayerNorm backward in ``vmap(vjp)`` is such a fusion, and
gradient x input maps against partners 2..K were wrong by up to 100x.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

K, B, R, D = 4, 2, 1024, 32


def rms_norm(x):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6)


def main() -> int:
    kx, kc = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (B, R, D), jnp.float32)
    cots = jax.random.normal(kc, (K, B, R, D), jnp.float32)
    _, vjp = jax.vjp(rms_norm, x)
    batched = np.asarray(jax.jit(jax.vmap(vjp))(cots)[0])  # [K, B, R, D]
    single = np.stack([np.asarray(jax.jit(vjp)(cots[k])[0]) for k in range(K)])
    err = np.abs(batched - single).max((1, 2, 3)) / np.abs(single).max((1, 2, 3))
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    for k, e in enumerate(err):
        print(f"cotangent {k}: max |batched - one at a time| / max |one at a time| = {e:.2g}")
    bad = err > 1e-5
    print("WRONG" if bad.any() else "right", f"({int(bad.sum())} of {K} wrong)")
    return 1 if bad.any() else 0


if __name__ == "__main__":
    sys.exit(main())

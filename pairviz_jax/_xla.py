"""Works around an XLA:CPU miscompilation before JAX's CPU backend starts.

jaxlib 0.10's XLA:CPU hands some reductions to YNNPACK ("reduce" fusions). Inside a
``vmap`` over cotangents of a VJP, as ``explain.methods`` runs one backward pass per
partner, the fused LayerNorm backward reads the operands shared by all partners wrongly
once partners x images x tokens reaches ~4096 rows: every partner but the first of a
chunk got a wrong map (DINOv2-S/14 at 224 px: 2 images x 8 partners is enough; gradient
x input off by up to 100x, chefer perturbed). ``tools/xla_ynn_repro.py`` reproduces it
in a few lines of JAX; ``tests/test_xla_regression.py`` guards the maps.

The fix is an XLA flag, read once when the CPU backend starts: ``apply`` (run by
``import pairviz_jax``) appends ``--xla_cpu_experimental_ynn_fusion_type=`` (empty) to
``XLA_FLAGS``, which turns every YNNPACK fusion off (``=-reduce``, only the reduce
fusions, fixes it too, but was not faster: ``tools/xla_ynn_cost.py`` measured both no
slower than XLA's default on DINOv2-S/14, the methods 10-40 % faster with all off).
Subprocesses inherit the variable. It is left alone when

* ``XLA_FLAGS`` already sets ``--xla_cpu_experimental_ynn_fusion_type`` (the user's
  choice wins),
* ``PAIRVIZ_KEEP_XLA_FLAGS=1`` (to measure or reproduce the bug),
* jaxlib is outside the versions known to have the flag and the bug (``AFFECTED``; an
  unknown flag in ``XLA_FLAGS`` aborts XLA, so newer versions are not guessed at:
  run ``tools/xla_ynn_repro.py`` on a new jaxlib and widen the range if it fails).

When JAX's backend already started before pairviz_jax was imported, the flag cannot take
effect in this process: ``apply`` still sets it (for subprocesses) and warns once.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SETTING = f"{FLAG}="  # no YNNPACK fusion at all
KEEP = "PAIRVIZ_KEEP_XLA_FLAGS"
# jaxlib versions [low, high) with the flag and the miscompilation (0.10.2 measured).
AFFECTED = ((0, 10), (0, 11))


def jaxlib_version() -> tuple[int, int] | None:
    """jaxlib's (major, minor) from its metadata, without importing it; None if unknown."""
    try:
        from importlib.metadata import version

        m = re.match(r"(\d+)\.(\d+)", version("jaxlib"))
    except Exception:  # not installed as a distribution
        return None
    return (int(m.group(1)), int(m.group(2))) if m else None


def _backend_started() -> bool:
    """Whether JAX's backends are initialised (so XLA_FLAGS was already read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # a JAX without that helper: assume not
        return False


def apply(
    environ: MutableMapping[str, str] | None = None,
    version: tuple[int, int] | None = None,
    started: bool | None = None,
) -> str:
    """Adds ``SETTING`` to ``XLA_FLAGS`` when needed; returns what it did.

    Args:
      environ: the environment to edit (``os.environ``).
      version: jaxlib's (major, minor) (``jaxlib_version()``).
      started: whether JAX's backend has started (asked of JAX).

    Returns:
      ``"applied"`` (added, the backend not started yet), ``"late"`` (added, but the
      backend had started: warned), ``"user"`` (XLA_FLAGS already sets the flag),
      ``"kept"`` (``PAIRVIZ_KEEP_XLA_FLAGS=1``) or ``"unaffected"`` (another jaxlib).
    """
    env = os.environ if environ is None else environ
    if env.get(KEEP, "") not in ("", "0"):
        return "kept"
    flags = env.get("XLA_FLAGS", "")
    if any(f.split("=")[0] == FLAG for f in flags.split()):
        return "user"
    version = jaxlib_version() if version is None else version
    if version is None or not AFFECTED[0] <= tuple(version[:2]) < AFFECTED[1]:
        return "unaffected"
    env["XLA_FLAGS"] = f"{flags} {SETTING}".strip()
    if _backend_started() if started is None else started:
        warnings.warn(
            "pairviz_jax was imported after JAX's backend started, so XLA:CPU's YNNPACK "
            "fusions stay on in this process and batched maps of "
            "explain.methods (gradxinput, chefer, ...) can be wrong; import pairviz_jax "
            f"before running any JAX computation, or set XLA_FLAGS={SETTING}",
            RuntimeWarning,
            stacklevel=2,
        )
        return "late"
    return "applied"


STATUS = apply()

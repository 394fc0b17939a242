"""``benchmarks/methods.py --torch``: the PyTorch reference's maps equal the project's.

The comparison (``benchmarks/_torch_compare.py``, ``_torch_dinov2.py``) runs on a tiny
DINOv2-layout ViT here (class token, layer scale, exact GELU); the benchmark runs the same
code on DINOv2-S/14 (docs/performance.md). Torch and Captum are local tools, never in CI:
that test is skipped without them. Without torch, ``--torch`` says so in one line.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from pairviz_jax.models import ViT

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "captum"))
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH, reason="torch and captum are not installed (a local benchmark)"
)


def _tiny():
    model = ViT(
        patch_size=(4, 4),
        width=32,
        depth=2,
        num_heads=2,
        class_token=True,
        layer_scale=0.5,
        pool_type="tok",
    )
    variables = jax.jit(model.init)(jax.random.PRNGKey(3), jnp.zeros((1, 16, 16, 3)))
    return model, variables


@needs_torch
def test_torch_reference_maps_equal_the_projects_one_pair_and_cross_block(capsys):
    sys.path.insert(0, BENCH)
    import _torch_compare

    model, variables = _tiny()
    assert _torch_compare.supported(model) is None
    res = _torch_compare.compare(model, variables, (16, 16), None, repeats=1, cross_n=2)
    seen = []
    for part in ("one_pair", "cross"):
        for method, row in res[part].items():
            for name, v in row.items():
                if isinstance(v, dict):
                    seen.append((part, method, name))
                    assert v["max_rel_diff"] <= _torch_compare.TOLERANCE, (part, method, name, v)
    assert len(seen) == 6 + 3  # every torch version of every method, both settings
    assert "DIFFER" not in capsys.readouterr().out


def test_torch_flag_says_in_one_line_when_it_cannot_compare(capsys):
    """Without torch (CI), or for a model outside the DINOv2 layout: one line, the rest runs."""
    sys.path.insert(0, BENCH)
    import methods

    methods.main(["--model", "demo", "--torch", "--skip-cost", "--threads", "0"])
    lines = [s for s in capsys.readouterr().out.splitlines() if "PyTorch comparison" in s]
    why = "not installed" if not HAVE_TORCH else "DINOv2 layout only"
    assert len(lines) == 1 and "skipped" in lines[0] and why in lines[0], lines

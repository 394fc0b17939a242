"""``visualize.py evaluate``'s output: progress as it goes, no ``nan`` in a table, sizes checked."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax import evaluate as ev
from pairviz_jax.evaluate import commands
from pairviz_jax.evaluate.results import Faithfulness, cell
from pairviz_jax.models import ViT, decode_variant


def test_a_cell_of_one_pair_says_why_it_has_no_error():
    assert cell(0.5, float("nan")) == "0.500 ± n/a (needs >= 2 pairs)"
    assert cell(float("nan"), float("nan")) == "n/a (no pairs)"
    assert cell(0.25, 0.125, 2) == "0.25 ± 0.12"


def test_tables_of_one_pair_have_no_nan():
    one = {"deletion_auc": np.array([0.4]), "insertion_auc": np.array([0.7])}
    r = Faithfulness(curves={}, metrics={"paper": one, "random": dict(one)}, scores=np.ones(1))
    for text in (r.table(), r.comparisons(["paper"], ["random"]), ev.halves_table({"a": r})):
        assert "nan" not in text and "n/a (needs >= 2 pairs)" in text, text


@pytest.mark.parametrize("name, value", [("pairs", 0), ("steps", 0), ("curve_pairs", -1)])
def test_sizes_below_one_are_refused_not_replaced_by_the_default(name, value, tmp_path):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} {value}"):
        commands.run(None, out=str(tmp_path / "e.png"), **{name: value})


def test_measure_reports_progress_after_every_step():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
    data = ev.demo_pairs(2, image_size=32)
    lines = []
    ev.faithfulness(
        model,
        variables,
        data["images_a"],
        data["images_b"],
        data["masks_a"],
        kinds=("authors", "random"),
        steps=2,
        log=lines.append,
    )
    assert lines[0].startswith("embedded 2 pairs")
    assert any(line.startswith("maps of pairs 0-1: authors") for line in lines), lines
    # The curves of every kind in one stream of forwards: a line when they are done.
    assert any(re.search(r"curves of 2 pairs, 2 kinds: (\d+)/\1 forwards", ln) for ln in lines)
    assert all(math.isfinite(float(line.rsplit("(", 1)[1].split()[0])) for line in lines)

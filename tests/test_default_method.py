"""The default ``--method`` is set in one place (``argcheck.DEFAULT_METHOD``: the method that
won the swap test on the held-out photo half by more than 2 standard errors over the previous
default; notes/winners.md) and every command that draws maps takes it; the paper's figures
(``--style paper``, ``--convention transpose``) keep the paper's method."""

import pytest

import visualize
from pairviz_jax import argcheck
from pairviz_jax.batch import cli as batch_cli
from pairviz_jax.plotting import cli

DRAWING = ("pair", "matrix", "retrieve", "class-map", "training", "rollout")


def _parse(argv):
    return visualize.build_parser().parse_args([*argv, "--workdir", "run"])


def _first_args(command):
    """The smallest valid command line of ``command`` (positionals and required options)."""
    return {
        "pair": ["pair", "a.png", "b.png"],
        "matrix": ["matrix", "a.png", "b.png"],
        "retrieve": ["retrieve", "a.png", "--gallery", "g"],
        "class-map": ["class-map", "a.png", "--gallery", "g"],
        "training": ["training", "a.png", "--gallery", "g"],
        "rollout": ["rollout", "a.png", "b.png"],
    }[command]


def test_the_default_is_the_swap_tests_outcome():
    # Half b (24 triples, DINOv2-S/14): Chefer et al. - paper = +0.12 +- 0.09 swap accuracy,
    # 1.3 standard errors: nothing won by > 2, so the paper's method stays the default.
    assert argcheck.DEFAULT_METHOD == "paper"
    assert argcheck.DEFAULT_METHOD in cli.METHOD_NAMES


@pytest.mark.parametrize("command", DRAWING)
def test_every_drawing_command_takes_the_one_default(command, monkeypatch):
    args = _parse(_first_args(command))
    assert cli.resolve_method(args) == argcheck.DEFAULT_METHOD
    # Changing the one constant changes the command (it is read when the command runs).
    monkeypatch.setattr(cli, "DEFAULT_METHOD", "chefer")
    args = _parse(_first_args(command))
    assert cli.resolve_method(args) == "chefer"
    assert cli._kw(args)["method"] == "chefer"


def test_the_papers_figures_keep_the_papers_method(monkeypatch):
    monkeypatch.setattr(cli, "DEFAULT_METHOD", "chefer")
    assert cli.resolve_method(_parse(["pair", "a", "b", "--style", "paper"])) == "paper"
    assert cli.resolve_method(_parse(["pair", "a", "b", "--convention", "transpose"])) == "paper"
    assert cli.resolve_method(_parse(["pair", "a", "b", "--method", "gradxinput"])) == "gradxinput"
    explicit = _parse(["pair", "a", "b", "--method", "paper"])
    assert cli.resolve_method(explicit) == "paper"


def test_batch_takes_the_one_default(monkeypatch):
    from pairviz_jax.batch.options import BatchOptions

    argv = ["batch", "--pairs", "p.csv", "--out", "o"]
    assert batch_cli.resolve_method(_parse(argv)) == argcheck.DEFAULT_METHOD
    assert BatchOptions.__dataclass_fields__["method"].default == argcheck.DEFAULT_METHOD
    monkeypatch.setattr(batch_cli, "DEFAULT_METHOD", "chefer")
    assert batch_cli.resolve_method(_parse(argv)) == "chefer"
    transpose = _parse([*argv, "--convention", "transpose"])
    assert batch_cli.resolve_method(transpose) == "paper"


def test_help_names_the_default(capsys):
    with pytest.raises(SystemExit):
        visualize.main(["pair", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {argcheck.DEFAULT_METHOD} (no method beat it on the held-out swap" in text

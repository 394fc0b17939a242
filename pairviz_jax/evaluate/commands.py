"""``visualize.py evaluate``: the demo or photo benchmark from command-line values."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Sequence

from pairviz_jax.evaluate.demo import evaluate_demo
from pairviz_jax.evaluate.kinds import KINDS
from pairviz_jax.evaluate.photos import PHOTO_KINDS, evaluate_photos
from pairviz_jax.evaluate.results import BASELINES, halves_table, plot_curves
from pairviz_jax.explain import methods as registry

# Photos: deletion/insertion on the first 20 pairs of each half (each pair costs 2 (S - 1)
# forwards per map kind: 126 of ViT-S/14 at the default 8 steps, the budget of 200 pairs in
# under 15 minutes on 2 CPU cores).
CURVE_PAIRS = 20

# The persistent XLA cache of the command line: unset, a folder in the user's cache
# (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``pairviz-jax/xla``); a path, that folder; ``0``
# or ``off``, none. A cache JAX was already given (``JAX_COMPILATION_CACHE_DIR``) is kept.
CACHE_ENV = "PAIRVIZ_XLA_CACHE"
CACHE_MAX_BYTES = 2 << 30  # beyond this the least recently used programs are dropped


def cache_folder(environ=os.environ) -> str | None:
    """The folder ``PAIRVIZ_XLA_CACHE`` names (``CACHE_ENV``), or None when turned off."""
    setting = environ.get(CACHE_ENV)
    if setting is not None and setting.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return setting or os.path.join(root, "pairviz-jax", "xla")


def use_compile_cache(environ=os.environ) -> str | None:
    """Keeps what XLA compiles on disk between runs (JAX's persistent compilation cache), so
    a second ``evaluate`` with the same model and sizes skips compiling (every method, the
    forward). Returns the folder, or None (turned off, or not writable: no cache, no error).
    """
    import jax

    path = cache_folder(environ)
    if path is None:
        return None
    if jax.config.jax_compilation_cache_dir:  # the user's, or already set
        return jax.config.jax_compilation_cache_dir
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            return None
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    if importlib.util.find_spec("filelock"):  # JAX's size bound needs it (else unbounded)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return path


# --method names: the kinds, plus "paper" (both conventions) and "all" (with ig).
ALIASES = {"paper": ("authors", "transpose"), "all": tuple(k for k in KINDS if k not in BASELINES)}


def parse_methods(values: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    """``--method`` values (repeated or comma-separated) -> map kinds, baselines appended."""
    if not values:
        return tuple(default)
    chosen: list[str] = []
    for v in values:
        for name in (s.strip() for s in v.split(",") if s.strip()):
            names = ALIASES.get(name, (name,))
            for n in names:
                if n not in KINDS:
                    known = ", ".join([*ALIASES, *KINDS])
                    raise ValueError(f"--method {name}: unknown; expected some of {known}")
                if n not in chosen:
                    chosen.append(n)
    return tuple(chosen) + tuple(b for b in BASELINES if b not in chosen)


def swap_kinds(methods: Sequence[str] | None) -> tuple[str, ...]:
    """``--method`` values -> the swap test's kinds: the occlusion reference (always), the
    chosen methods, then the baselines (``parse_methods``; no values: every
    method, ``SWAP_KINDS``)."""
    from pairviz_jax.evaluate.swap import SWAP_KINDS

    if not methods:
        return SWAP_KINDS
    return ("occlusion", *(k for k in parse_methods(methods, ()) if k != "rollout_mean"))


def geometry_kinds(methods: Sequence[str] | None) -> tuple[str, ...]:
    """``--method`` values with ``--geometry`` -> correspondence kinds (``evaluate.geometry``:
    rollout, token, bilrp[_l<block>][_k<rank>], patch_cosine); the baseline always added."""
    from pairviz_jax.evaluate import geometry

    if not methods:
        return geometry.DEFAULT_KINDS
    kinds = tuple(dict.fromkeys(s.strip() for v in methods for s in v.split(",") if s.strip()))
    for k in kinds:
        try:
            geometry.parse_kind(k)
        except ValueError as e:
            raise ValueError(f"--method {k}: {e}") from None
    return kinds + (() if "patch_cosine" in kinds else ("patch_cosine",))


def parse_options(values: Sequence[str]) -> dict[str, dict]:
    """``--option METHOD.KEY=VALUE`` values -> ``{method: {key: value}}`` (values as Python
    literals, e.g. ``gradxinput.layer=6``, ``ig.steps=32``)."""
    out: dict[str, dict] = {}
    for v in values or ():
        head, sep, raw = v.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--option {v}: expected METHOD.KEY=VALUE, e.g. gradxinput.layer=6")
        if method not in registry.METHODS:
            raise ValueError(
                f"--option {v}: {method!r} is not a method ({', '.join(registry.METHODS)})"
            )
        accepted = {**registry.base.COMMON_OPTIONS, **registry.METHODS[method].options}
        if key not in accepted or (method == "paper" and key != "target"):
            accepted = "target" if method == "paper" else ", ".join(accepted)
            raise ValueError(f"--option {v}: {method} takes {accepted}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def _progress(message: str) -> None:
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


def _geometry(loaded, out, half, pairs, methods, cache) -> str:
    """The report of ``--geometry``: every correspondence's accuracy on photo ``half``."""
    from pairviz_jax.evaluate.geometry import evaluate_geometry

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    r = evaluate_geometry(
        loaded,
        12 if pairs is None else pairs,
        split=half,
        kinds=geometry_kinds(methods),
        cache_dir=cache or os.path.splitext(out)[0] + "_geometry",
        log=_progress,
    )
    title = f"## {loaded.label}: correspondence against geometry, photo half {half}"
    return f"{title}\n\n{r.table()}"


def _figure(loaded, figure, kinds, methods, method_options, photo_sizes) -> list[str]:
    """``--figure``: every method on a photo pair and a distractor pair ([] without it).
    ``photo_sizes``: the photo evaluation's sizes (``photos.compiled_shapes``' arguments),
    whose compiled maps the figure reuses; None: the figure's own shapes."""
    if not figure:
        return []
    from pairviz_jax.evaluate.figures import FIGURE_KINDS, methods_figure
    from pairviz_jax.evaluate.photos import compiled_shapes

    os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
    shown = [k for k in FIGURE_KINDS if not methods or k in kinds]
    share = None if photo_sizes is None else (kinds, *compiled_shapes(**photo_sizes))
    return [
        methods_figure(
            loaded, figure, kinds=shown, method_options=method_options, log=_progress, share=share
        )
    ]


def run(
    loaded,
    *,
    out: str,
    photos: bool = False,
    pairs: int | None = None,
    steps: int | None = None,
    baseline: str = "mean",
    distractor: bool = False,
    methods: Sequence[str] | None = None,
    options: Sequence[str] = (),
    curve_pairs: int | None = None,
    cache: str | None = None,
    figure: str | None = None,
    swap: str | None = None,
    geometry: str | None = None,
) -> tuple[str, list[str]]:
    """Runs one benchmark; returns (the report text, the PNGs written). ``figure``: also
    draw every method on one photo pair and one distractor pair (``figures``). What XLA
    compiles is kept on disk for the next run (``use_compile_cache``; ``PAIRVIZ_XLA_CACHE=0``:
    not)."""
    for name, value, low in (
        ("--pairs", pairs, 1),
        ("--steps", steps, 1),
        ("--curve-pairs", curve_pairs, 0),
    ):
        if value is not None and value < low:
            raise ValueError(f"{name} {value}: expected a number >= {low}")
    use_compile_cache()
    if geometry:  # correspondence against geometry on photo half "a" or "b", ``pairs`` triples
        return _geometry(loaded, out, geometry, pairs, methods, cache), []
    kinds = parse_methods(methods, PHOTO_KINDS if photos else KINDS)
    method_options = parse_options(options)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if swap:  # the swap test on photo half "a" or "b" instead, ``pairs`` triples
        from pairviz_jax.evaluate import swap_report

        return swap_report.run(
            loaded,
            out=out,
            half=swap,
            triples=pairs,
            kinds=swap_kinds(methods),
            method_options=method_options,
            cache=cache,
        )
    sizes = dict(
        num_pairs=100 if pairs is None else pairs,
        distractor=distractor,
        kinds=kinds,
        steps=8 if steps is None else steps,
        curve_pairs=CURVE_PAIRS if curve_pairs is None else curve_pairs,
        baseline=baseline,
    )
    drawn = _figure(loaded, figure, kinds, methods, method_options, sizes if photos else None)
    note = "paired differences (mean ± standard error over the same pairs; > 0: method better)"
    if not photos:
        result = evaluate_demo(
            loaded,
            128 if pairs is None else pairs,
            steps=16 if steps is None else steps,
            baseline=baseline,
            distractor=distractor,
            kinds=kinds,
            method_options=method_options,
            curve_pairs=curve_pairs,
            log=_progress,
        )
        text = f"{result.table()}\n\n{note}\n{result.comparisons()}"
        return text, [plot_curves(result, out, title=loaded.label), *drawn]
    cache = cache or os.path.splitext(out)[0] + "_chunks"
    results = evaluate_photos(loaded, method_options=method_options, cache_dir=cache, **sizes)
    texts, paths = [], []
    stem, ext = os.path.splitext(out)
    variant = "with a distractor" if distractor else "one object"
    for half, result in results.items():
        title = f"{loaded.label}: photo half {half}, {variant}"
        texts.append(f"## {title}\n\n{result.table()}\n\n{note}\n{result.comparisons()}")
        paths.append(plot_curves(result, f"{stem}_{half}{ext}", title=title))
    if len(results) > 1:
        names = " / ".join(f"half {h}" for h in results)
        texts.append(f"## {loaded.label}: {names}, {variant}\n\n{halves_table(results)}")
    return "\n\n".join(texts), paths + drawn

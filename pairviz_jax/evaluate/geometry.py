"""Correspondence measured against geometry: does C[i, j] find where patch i of A went in B?

In a copy-paste pair the true match of every object patch of A is known: the object X is
pasted into A at one place and scale and into its partner B at another, so the centre of
A's patch i, at relative position (fy, fx) inside X's box in A, lands at the same relative
position inside X's box in B (``true_matches``). The pairs are the swap test's triples
(``data.swaps``: real photos, several backgrounds, scales and places, fixed halves ``"a"``
and ``"b"``): each triple gives two pairs, (A, B1) for X and (A, B2) for Y, and A's other
object is a distractor with no match.

**Correspondence accuracy** of a patch-to-patch matrix C [N_a, N_b]: over the object
patches i of A (patch centre inside the object's mask), the share whose best match
``argmax_j C[i, j]`` lies within one patch (Chebyshev distance <= ``tolerance``) of the
truth. Chance: about 9 / N_b (0.035 on a 16 x 16 grid). Per triple the two pairs are
averaged; every number is a mean ± standard error over triples.

The kinds (``KINDS``; ``bilrp`` also as ``bilrp_l{layer}`` / ``bilrp_k{rank}``):

* ``rollout``: C = M_a P M_b^T through the attention rollout (``explain.correspondence``,
  transpose convention, eq. 4-6);
* ``token``: P, the cosine split over output-token pairs (eq. 4, no rollout);
* ``bilrp``: the second-order C through the whole network (``explain.methods.bilrp``);
  ``_l{k}`` splits the tokens entering block k, ``_k{r}`` is the rank-r fold on the top r
  directions of all the run's unit embeddings (``bilrp.top_directions``);
* ``patch_cosine``: the non-decomposing baseline, the cosine of A's and B's final patch
  tokens (the encoder's normed output; no split of the score).

Beside accuracy, each decomposing C's conservation is checked per pair: ``sum C`` plus its
rest terms minus the cosine (``conservation``, float32 rounding), and ``sum C / cosine``
(``share``: how much of the score C itself holds).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from pairviz_jax import explain
from pairviz_jax._util import atomic_path
from pairviz_jax.evaluate.chunks import run_chunks
from pairviz_jax.evaluate.photos import log_stderr, normalise
from pairviz_jax.explain.methods import bilrp

__all__ = [
    "KINDS",
    "GeometryResult",
    "correspondence_accuracy",
    "evaluate_geometry",
    "geometry_pairs",
    "true_matches",
]

KINDS = ("rollout", "token", "bilrp", "patch_cosine")
# ``visualize.py evaluate --geometry``'s default: the rank-64 second order (64 backward passes
# per image, not E; ``benchmarks/second_order.py`` measures its error against the exact C).
DEFAULT_KINDS = ("rollout", "token", "bilrp_k64", "patch_cosine")
DECOMPOSING = ("rollout", "token", "bilrp")
LABELS = {
    "rollout": "rollout C (Black et al. 2022, eq. 4-6, transpose)",
    "token": "token-level P (eq. 4)",
    "bilrp": "second-order C (BiLRP, conservative rules; Eberle et al. 2020, "
    "Vasileiou & Eberle 2024)",
    "patch_cosine": "cosine of final patch tokens (baseline, no decomposition)",
}
_BILRP = re.compile(r"bilrp(?:_l(\d+))?(?:_k(\d+))?")


def parse_kind(kind: str) -> tuple[str, dict]:
    """``"bilrp_l6_k64"`` -> ``("bilrp", {"layer": 6, "rank": 64})``; others as they are."""
    m = _BILRP.fullmatch(kind)
    if m:
        return "bilrp", {"layer": int(m.group(1) or 0), "rank": m.group(2) and int(m.group(2))}
    if kind not in KINDS:
        raise ValueError(
            f"unknown correspondence kind {kind!r}; expected {', '.join(KINDS)} or "
            "bilrp_l<layer>_k<rank> (either part optional)"
        )
    return kind, {}


def label(kind: str) -> str:
    """The kind's table label (with its block and rank for bilrp variants)."""
    base, opts = parse_kind(kind)
    extra = []
    if opts.get("layer"):
        extra.append(f"block {opts['layer']}")
    if opts.get("rank"):
        extra.append(f"rank {opts['rank']}")
    return LABELS[base] + (f" [{', '.join(extra)}]" if extra else "")


# --------------------------------------------------------------------------- the truth


def true_matches(
    place_a: Sequence[int],
    place_b: Sequence[int],
    mask_a: np.ndarray,
    grid: tuple[int, int],
    patch: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Where each patch of A lands in B when the box ``place_a`` is pasted as ``place_b``.

    Args:
      place_a: (top, left, height, width) of the object in A, pixels.
      place_b: the same in B.
      mask_a: bool [H, W], the object's pixels in A.
      grid: (gh, gw) of both images.
      patch: (ph, pw) pixels per patch.

    Returns:
      ``target`` int [gh * gw, 2] (row, column of the true match in B's grid) and ``valid``
      bool [gh * gw] (A's patch centre lies on the object).
    """
    gh, gw = grid
    ph, pw = patch
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    cy, cx = (rows.ravel() + 0.5) * ph, (cols.ravel() + 0.5) * pw
    valid = mask_a[cy.astype(int), cx.astype(int)]
    ta, la, ha, wa = place_a
    tb, lb, hb, wb = place_b
    by = tb + (cy - ta) / ha * hb
    bx = lb + (cx - la) / wa * wb
    target = np.stack([np.clip(by // ph, 0, gh - 1), np.clip(bx // pw, 0, gw - 1)], axis=-1).astype(
        int
    )
    return target, valid


def correspondence_accuracy(
    corr: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    grid_b: tuple[int, int],
    tolerance: int = 1,
) -> np.ndarray:
    """Share of A's object patches whose best match in B is within ``tolerance`` patches.

    Args:
      corr: [P, N_a, N_b] patch-to-patch scores (higher: a better match).
      target: int [P, N_a, 2], the true match's (row, column) in B's grid.
      valid: bool [P, N_a], the patches measured.
      grid_b: (gh, gw) of B.
      tolerance: the largest Chebyshev distance, in patches, that counts as a hit.

    Returns:
      [P] float64 (NaN for a pair without a valid patch).
    """
    corr = np.asarray(corr)
    best = corr.argmax(-1)  # [P, N_a]
    got = np.stack([best // grid_b[1], best % grid_b[1]], axis=-1)
    hit = (np.abs(got - target).max(-1) <= tolerance) & valid
    count = valid.sum(-1)
    return np.where(count > 0, hit.sum(-1) / np.maximum(count, 1), np.nan)


def geometry_pairs(
    indices: Sequence[int] | int,
    *,
    split: str,
    image_size: int = 224,
    patch: tuple[int, int] = (14, 14),
    seed: int = 0,
    normalization=None,
) -> dict:
    """The swap test's triples ``(seed, i)`` as correspondence pairs, two per triple.

    Returns:
      ``a`` [T, S, S, 3] and ``b`` [T, 2, S, S, 3] normalised (B1, B2), ``target`` int
      [T, 2, N, 2] and ``valid`` bool [T, 2, N] (X's patches of A against B1, Y's against
      B2), ``ids`` per triple.
    """
    from pairviz_jax.data import swaps

    if image_size % patch[0] or image_size % patch[1]:
        raise ValueError(f"image_size={image_size} is not a multiple of the patch {patch}")
    grid = (image_size // patch[0], image_size // patch[1])
    triples = swaps.make_triples(indices, seed=seed, split=split, size=image_size)
    targets, valids = [], []
    for t in triples:
        got = [
            true_matches(t.places_a[k], t.places_b[k], t.a_masks[k], grid, patch) for k in range(2)
        ]
        targets.append(np.stack([g[0] for g in got]))
        valids.append(np.stack([g[1] for g in got]))
    return {
        "a": normalise(np.stack([t.a for t in triples]), normalization),
        "b": normalise(np.stack([t.partners for t in triples]), normalization),
        "target": np.stack(targets),
        "valid": np.stack(valids),
        "grid": grid,
        "ids": [t.ids for t in triples],
    }


# --------------------------------------------------------------------------- the matrices


def _take(tree, index):
    return jax.tree_util.tree_map(lambda x: x[np.asarray(index)], tree)


def _batched(fn, n: int, batch: int):
    """``fn(slice)`` over ``range(n)`` in batches, concatenated along axis 0 (pytrees)."""
    parts = [fn(slice(s, min(s + batch, n))) for s in range(0, n, batch)]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)


def _bilrp_fold(model, variables, images, layer, basis, batch_size):
    def one(s):
        x = explain.Inputs(model, variables, images[s])
        return bilrp.fold(x, layer=layer, basis=basis)

    return _batched(one, len(images), batch_size)


def chunk_corrs(
    model, variables, a, b, kinds: Sequence[str], basis=None, batch_size: int = 2
) -> dict[str, dict]:
    """Every kind's C for the pairs (A_t, B_tk) of T triples.

    Args:
      model, variables: a ViT and its variables.
      a: [T, S, S, 3] normalised; b: [T, 2, S, S, 3].
      kinds: names of ``KINDS`` (bilrp variants included, ``parse_kind``).
      basis: U [E, r] for the ``_k{r}`` variants (its first r columns are used).
      batch_size: images per compiled forward or fold.

    Returns:
      kind -> ``corr`` [T, 2, N, N], ``score`` [T, 2] (the cosine), ``conservation`` [T, 2]
      (sum C + rest terms - the cosine C itself sums to; 0 for ``patch_cosine``), ``share``
      [T, 2] (sum C / the cosine) and ``seconds`` (for this chunk, with the forwards it
      needed: one per image; its folds: one per image).
    """
    t = a.shape[0]
    b = b.reshape(-1, *b.shape[2:])
    ia, ib = np.repeat(np.arange(t), 2), np.arange(2 * t)  # pair (t, k): A_t with B_tk
    out = {}
    t0 = time.perf_counter()
    feats = [
        _batched(lambda s, x=x: explain.features(model, variables, x[s]), len(x), batch_size)
        for x in (a, b)
    ]
    fwd = time.perf_counter() - t0
    score = np.asarray(explain.cosine(feats[0].embedding[ia], feats[1].embedding[ib]))
    for kind in kinds:
        t0 = time.perf_counter()
        base, opts = parse_kind(kind)
        if base == "patch_cosine":
            ta = explain.unit(feats[0].tokens.astype(np.float32))[ia]
            tb = explain.unit(feats[1].tokens.astype(np.float32))[ib]
            got = {"corr": np.einsum("pie,pje->pij", ta, tb), "score": score}
        else:
            if base == "bilrp":
                r = opts["rank"]
                u = None if r is None else np.asarray(basis)[:, :r]
                fa, fb = (_bilrp_fold(model, variables, x, opts["layer"], u, batch_size)
                          for x in (a, b))  # fmt: skip
                kw = dict(method="bilrp")
            else:
                fa, fb = feats
                kw = dict(level="token" if base == "token" else "patch")
            got = explain.correspondence(_take(fa, ia), _take(fb, ib), aligned=True, **kw)
            got = {k: np.asarray(v) for k, v in got.items()}
        corr = np.asarray(got["corr"], np.float64)
        whole = corr.sum((-2, -1))
        if base != "patch_cosine":
            whole = whole + got["rest_a"].sum(-1) + got["rest_b"].sum(-1) + got["rest"]
            conservation = whole - got["score"]
        else:
            conservation = np.zeros(len(corr))
        seconds = time.perf_counter() - t0 + fwd * (base != "bilrp")
        out[kind] = {
            "corr": corr.reshape(t, 2, *corr.shape[1:]).astype(np.float32),
            "score": score.reshape(t, 2),
            "conservation": np.asarray(conservation).reshape(t, 2),
            "share": (corr.sum((-2, -1)) / score).reshape(t, 2),
            "seconds": seconds,
        }
    return out


# --------------------------------------------------------------------------- results


def _mean_sem(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


class GeometryResult:
    """Per-triple results of the correspondence test.

    Attributes:
      accuracy: kind -> [T] (the two pairs of a triple averaged).
      conservation: kind -> [T, 2] sum C + rest terms - the cosine C sums to.
      share: kind -> [T, 2] sum C / the cosine.
      seconds: kind -> seconds spent (forwards or folds included).
      ids: per triple (X, Y, A's background, the partners' background).
      info: what was run.
    """

    def __init__(self, accuracy, conservation, share, seconds, ids, info):
        self.accuracy, self.conservation, self.share = accuracy, conservation, share
        self.seconds, self.ids, self.info = dict(seconds), list(ids), dict(info)

    def __len__(self) -> int:
        return len(self.ids)

    def difference(self, kind: str, other: str) -> tuple[float, float]:
        """Mean and standard error of ``kind - other`` accuracy over the same triples."""
        return _mean_sem(np.asarray(self.accuracy[kind]) - np.asarray(self.accuracy[other]))

    def table(self, baseline: str = "patch_cosine", digits: int = 3) -> str:
        """Markdown: accuracy (mean ± standard error over triples), the paired difference
        against ``baseline``, sum C / cosine, the largest conservation error, seconds."""
        head = ["correspondence", "accuracy ↑", f"− {baseline}", "sum C / cosine",
                "max |sum C + rest − cos|", "seconds"]  # fmt: skip
        lines = [
            f"{len(self)} triples ({2 * len(self)} pairs), half {self.info.get('split')}; "
            "accuracy: best match within one patch of the truth (mean ± standard error over "
            "triples)",
            "",
            "| " + " | ".join(head) + " |",
            "|---" * len(head) + "|",
        ]
        f = f"{{:.{digits}f}}"
        for k, acc in self.accuracy.items():
            m, s = _mean_sem(acc)
            cells = [f"{f.format(m)} ± {f.format(s)}"]
            if baseline in self.accuracy and k != baseline:
                dm, ds = self.difference(k, baseline)
                cells.append(f"{dm:+.{digits}f} ± {f.format(ds)}")
            else:
                cells.append("")
            if parse_kind(k)[0] in DECOMPOSING:
                sm, ss = _mean_sem(np.asarray(self.share[k]).ravel())
                cells += [f"{sm:.2f} ± {ss:.2f}", f"{np.abs(self.conservation[k]).max():.1e}"]
            else:
                cells += ["n/a", "n/a"]
            cells.append(f"{self.seconds.get(k, float('nan')):.1f}")
            lines.append(f"| {label(k)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _save(path: str, r: GeometryResult) -> None:
    arrays = {}
    for name in ("accuracy", "conservation", "share"):
        arrays.update({f"{name}|{k}": v for k, v in getattr(r, name).items()})
    meta = json.dumps({"seconds": r.seconds, "ids": r.ids, "info": r.info}, default=str)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, meta=meta, **arrays)


def _load(path: str) -> GeometryResult:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        got: dict[str, dict] = {"accuracy": {}, "conservation": {}, "share": {}}
        for key in z.files:
            if "|" in key:
                name, k = key.split("|")
                got[name][k] = z[key]
    order = meta["info"]["kinds"]
    pick = lambda d: {k: d[k] for k in order}  # noqa: E731
    ids = [tuple(i) for i in meta["ids"]]
    return GeometryResult(
        pick(got["accuracy"]), pick(got["conservation"]), pick(got["share"]), meta["seconds"],
        ids, meta["info"],
    )  # fmt: skip


def _concatenate(parts: Sequence[GeometryResult], info: dict) -> GeometryResult:
    kinds = list(parts[0].accuracy)
    cat = lambda name: {k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in kinds}  # noqa: E731
    seconds = {k: float(sum(p.seconds[k] for p in parts)) for k in kinds}
    ids = [i for p in parts for i in p.ids]
    return GeometryResult(cat("accuracy"), cat("conservation"), cat("share"), seconds, ids, info)


# --------------------------------------------------------------------------- the run


def _check(kinds, split, num_triples, model) -> tuple[str, ...]:
    if not kinds:
        raise ValueError(f"no correspondence kinds given; expected some of {', '.join(KINDS)}")
    for k in kinds:
        base, opts = parse_kind(k)
        if base == "bilrp" and opts["layer"] > getattr(model, "depth", 0):
            raise ValueError(f"{k}: block {opts['layer']} > the model's depth {model.depth}")
    if split not in ("a", "b"):
        raise ValueError(f"split={split!r}: the photo halves are 'a' (development) and 'b'")
    if num_triples < 1:
        raise ValueError(f"num_triples={num_triples}: expected >= 1")
    if not getattr(model, "has_attention", False):
        raise ValueError("the correspondence test needs a ViT (rollout, token grid)")
    return tuple(kinds)


def _basis(loaded, kinds, data_fn, num_triples, batch_size) -> np.ndarray | None:
    """U [E, r_max] from every image of the run (the 'gallery'), or None without ranks."""
    ranks = [parse_kind(k)[1].get("rank") for k in kinds]
    r = min(max([x for x in ranks if x] or [0]), int(loaded.model.embedding_dim))
    if not r:
        return None  # (a rank >= E is the exact fold in a rotated basis)
    d = data_fn(range(num_triples))
    images = np.concatenate([d["a"], d["b"].reshape(-1, *d["a"].shape[1:])])
    emb = _batched(
        lambda s: explain.embed(loaded.model, loaded.variables, images[s]), len(images), batch_size
    )
    return bilrp.top_directions(emb, r)


def evaluate_geometry(
    loaded,
    num_triples: int = 12,
    *,
    split: str = "a",
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    batch_size: int = 2,
    chunk: int = 4,
    cache_dir: str | None = None,
    log: Callable[[str], None] | None = log_stderr,
) -> GeometryResult:
    """Correspondence accuracy of every kind on ``num_triples`` triples of one photo half.

    Args:
      loaded: a model as ``runs`` loads it (``model``, ``variables``, ``image_size``,
        ``mean``, ``std``, ``label``).
      num_triples: triples ``(seed, 0) ... (seed, num_triples - 1)`` (two pairs each).
      split: ``"a"`` (development) or ``"b"`` (held out: run it once, at the end).
      kinds: names of ``KINDS`` and bilrp variants (``bilrp_l6``, ``bilrp_k64``, ...).
      seed: the triples' seed.
      batch_size: images per compiled forward or fold.
      chunk: triples per resumable chunk.
      cache_dir: a folder that keeps finished chunks (the same call resumes); None: none.
      log: progress lines (stderr by default; None for silence).

    Returns:
      A ``GeometryResult`` over all triples.
    """
    model = loaded.model
    kinds = _check(kinds, split, num_triples, model)
    h, w = loaded.image_size
    if h != w:
        raise ValueError(f"the triples are square; this model takes {h}x{w}")
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)

    def data_fn(indices):
        return geometry_pairs(
            indices, split=split, image_size=h, patch=model.patch_size, seed=seed,
            normalization=norm,
        )  # fmt: skip

    config = dict(model=getattr(loaded, "label", ""), size=h, kinds=list(kinds), seed=seed,
                  split=split, num_triples=num_triples)  # fmt: skip
    if log:
        log(f"geometry half {split}: {num_triples} triples, {len(kinds)} kinds, chunks of {chunk}")
    basis = _basis(loaded, kinds, data_fn, num_triples, batch_size)

    def compute(s: int, e: int) -> GeometryResult:
        d = data_fn(range(s, e))
        got = chunk_corrs(model, loaded.variables, d["a"], d["b"], kinds, basis, batch_size)
        acc = {
            k: np.nanmean(
                correspondence_accuracy(
                    g["corr"].reshape(-1, *g["corr"].shape[2:]),
                    d["target"].reshape(-1, *d["target"].shape[2:]),
                    d["valid"].reshape(-1, d["valid"].shape[-1]),
                    d["grid"],
                ).reshape(-1, 2),
                axis=1,
            )
            for k, g in got.items()
        }
        r = GeometryResult(
            acc,
            {k: g["conservation"] for k, g in got.items()},
            {k: g["share"] for k, g in got.items()},
            {k: g["seconds"] for k, g in got.items()},
            d["ids"],
            {**config, "triples": [s, e]},
        )
        return r

    parts = run_chunks(
        num_triples, chunk, config=config, cache_dir=cache_dir, prefix=f"geometry_{split}",
        compute=compute, load=_load, save=_save, log=log, label=f"geometry half {split}",
    )  # fmt: skip
    return _concatenate(parts, config)

"""Per-pair results of an evaluation: summaries, paired differences, a Markdown table, curves."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

METRICS = (
    "deletion_auc",
    "insertion_auc",
    "energy_in_mask",
    "pointing_game",
    "shared_share",
    "share_swing",
    "map_correlation",
)
# Which way is better for each metric (map_correlation: a map that depends on the partner
# changes with it; random maps change most, so the column is read beside share_swing).
HIGHER_IS_BETTER = {
    "deletion_auc": False,
    "insertion_auc": True,
    "energy_in_mask": True,
    "pointing_game": True,
    "shared_share": True,
    "share_swing": True,
    "map_correlation": False,
}
# Maps that do not explain anything: never marked best, the references of the differences.
BASELINES = ("rollout", "rollout_mean", "gamma", "random")
LABELS = {
    "authors": "paired, authors (R @ gamma; Black et al. 2022)",
    "transpose": "paired, transpose (R^T @ gamma; Black et al. 2022)",
    "gradxinput": "gradient x input (Shrikumar et al. 2016)",
    "chefer": "Chefer et al. (grad-weighted rollout, ICCV 2021)",
    "conservative": "conservative (Ali et al., ICML 2022)",
    "ig": "integrated gradients (Sundararajan et al. 2017)",
    "rollout": "rollout (output-agnostic; Abnar & Zuidema 2020)",
    "rollout_mean": "rollout, mean of rows",
    "gamma": "gamma only (no rollout)",
    "random": "random",
}


def cell(mean: float, sem: float, digits: int = 3, sign: str = "") -> str:
    """``"mean ± sem"``; no ``nan`` in a table: an error of one pair reads
    ``"± n/a (needs >= 2 pairs)"``, a mean of none ``"n/a (no pairs)"``."""
    if not math.isfinite(mean):
        return "n/a (no pairs)"
    text = f"{mean:{sign}.{digits}f}"
    return (
        f"{text} ± {sem:.{digits}f}" if math.isfinite(sem) else f"{text} ± n/a (needs >= 2 pairs)"
    )


def _mean_sem(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), sem


@dataclasses.dataclass
class Faithfulness:
    """Per-pair results of an evaluation (``faithfulness``, ``evaluate_demo``, ``evaluate_photos``).

    Attributes:
      curves: kind -> mode (``deletion``/``insertion``) -> [B', S + 1] cosines (B' pairs with
        curves: all, or the first ``curve_pairs``).
      metrics: kind -> metric -> per-pair values (pointing game as 0/1); deletion and
        insertion AUC have B' values, the others B.
      scores: [B] cosine of each pair (the curves' start).
      info: what was run (model, method options, seconds, ...), for the report.
      maps: kind -> [B, K, gh, gw] the maps (for figures; not saved or concatenated).
    """

    curves: dict[str, dict[str, np.ndarray]]
    metrics: dict[str, dict[str, np.ndarray]]
    scores: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)
    maps: dict[str, np.ndarray] | None = None

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """kind -> metric -> (mean, standard error) over the pairs."""
        return {
            k: {n: _mean_sem(v) for n, v in ms.items() if len(v)} for k, ms in self.metrics.items()
        }

    def difference(self, kind: str, other: str, metric: str) -> tuple[float, float]:
        """Mean and standard error of ``metric[kind] - metric[other]`` over the same pairs.

        Paired: each pair is compared with itself, so the error is that of the per-pair
        differences, smaller than the two columns' errors combined when they co-vary.
        """
        d = np.asarray(self.metrics[kind][metric], np.float64) - np.asarray(
            self.metrics[other][metric], np.float64
        )
        return _mean_sem(d)

    def comparisons(
        self, kinds: Sequence[str] | None = None, bases: Sequence[str] = ("rollout", "random")
    ) -> str:
        """Paired differences of each method against each baseline, one line each, with the
        sign turned so that positive means the method is better."""
        kinds = [k for k in self.metrics if k not in BASELINES] if kinds is None else kinds
        lines = []
        for kind in kinds:
            for base in bases:
                if kind not in self.metrics or base not in self.metrics:
                    continue
                cells = []
                for m in METRICS:
                    if not len(self.metrics[kind].get(m, ())) or m not in self.metrics[base]:
                        continue
                    mean, sem = self.difference(kind, base, m)
                    sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
                    cells.append(f"{m} {cell(sign * mean, sem, 4, '+')}")
                lines.append(f"{kind} better than {base} by: " + ", ".join(cells))
        return "\n".join(lines)

    def table(self, digits: int = 3) -> str:
        """The summary as a Markdown table (mean ± standard error; the best method per column,
        baselines excluded, in bold)."""
        summ = self.summary()
        names = [m for m in METRICS if any(m in summ[k] for k in summ)]
        arrows = {True: "↑", False: "↓"}
        head = "| map | " + " | ".join(f"{n} {arrows[HIGHER_IS_BETTER[n]]}" for n in names) + " |"
        lines = [head, "|---" * (len(names) + 1) + "|"]
        best = {}
        for n in names:
            vals = {k: summ[k][n][0] for k in summ if n in summ[k] and k not in BASELINES}
            if vals:
                pick = max if HIGHER_IS_BETTER[n] else min
                best[n] = pick(vals, key=vals.get)
        for k in summ:
            cells = []
            for n in names:
                if n not in summ[k]:
                    cells.append("")
                    continue
                mean, sem = summ[k][n]
                text = cell(mean, sem, digits)
                cells.append(f"**{text}**" if best.get(n) == k else text)
            lines.append(f"| {LABELS.get(k, k)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def halves_table(results: dict[str, Faithfulness], digits: int = 2) -> str:
    """Several results (e.g. the photo halves) in one Markdown table: each cell "mean ±
    standard error" per result, separated by " / ", in the order of ``results``."""
    summs = {name: r.summary() for name, r in results.items()}
    kinds = list(dict.fromkeys(k for s in summs.values() for k in s))
    names = [m for m in METRICS if any(m in s.get(k, {}) for s in summs.values() for k in s)]
    arrows = {True: "↑", False: "↓"}
    head = "| map | " + " | ".join(f"{n} {arrows[HIGHER_IS_BETTER[n]]}" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for k in kinds:
        cells = []
        for n in names:
            vals = [s[k][n] if k in s and n in s[k] else None for s in summs.values()]
            cells.append(" / ".join("–" if v is None else cell(v[0], v[1], digits) for v in vals))
        lines.append(f"| {LABELS.get(k, k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def concatenate(results: Sequence[Faithfulness]) -> Faithfulness:
    """Results of consecutive chunks of pairs as one (same kinds and metrics in each)."""
    first = results[0]
    cat = lambda get: np.concatenate([get(r) for r in results])  # noqa: E731
    curves = {
        k: {m: cat(lambda r, k=k, m=m: r.curves[k][m]) for m in first.curves[k]}
        for k in first.curves
    }
    metrics = {
        k: {n: cat(lambda r, k=k, n=n: r.metrics[k][n]) for n in first.metrics[k]}
        for k in first.metrics
    }
    return Faithfulness(curves, metrics, cat(lambda r: r.scores), dict(first.info))


def plot_curves(result: Faithfulness, path: str, title: str | None = None) -> str:
    """Mean deletion and insertion curves per map kind, side by side; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    summ = result.summary()
    for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
        for kind, cs in result.curves.items():
            if mode not in cs or not len(cs[mode]):
                continue
            c = cs[mode].mean(0)
            x = np.linspace(0, 1, len(c))
            a = summ[kind][f"{mode}_auc"][0]
            style = "--" if kind in BASELINES else "-"
            ax.plot(x, c, style, label=f"{kind} (AUC {a:.3f})")
        ax.set_xlabel(f"fraction of patches {'removed' if mode == 'deletion' else 'revealed'}")
        ax.set_ylabel("cosine with the partner")
        ax.set_title(mode)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

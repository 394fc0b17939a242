"""The report's correspondence: a method's C for the pairs of a batch job (``report --method``).

``CSource`` gives C (and its marginals, the paired maps, and the rest terms) of any of a
job's pairs, through the explorer's path (``viewer._corr``):

* ``"paper"``: the job's own folds (``embed/<c>/w.npy``: W of every image, the job's
  convention and start layer), so C costs one product per pair and no model: rollout C.
* ``"bilrp"`` (and any method that folds per image): the images read again as the job
  read them (its loader: size, normalisation) and folded with the model, which must be
  the job's (its parameters' hash is checked against ``job.json``): E backward passes per
  image, once per distinct image.

``page_c`` is what a page embeds for its first pairs: C of each pair as float16 scaled by
its own largest magnitude (``scales``), the rests, and the cosine they sum to.
"""

from __future__ import annotations

import base64
from typing import Any, TextIO

import numpy as np

from pairviz_jax._util import Progress
from pairviz_jax.viewer import _corr

__all__ = ["CSource", "page_c"]


class CSource:
    """C of a job's pairs by ``method``; checks everything in ``__init__`` (before work).

    Args:
      res: the job's ``batch.BatchResults``.
      method: one of ``viewer._corr.WITH_C``.
      loaded: the job's model (``model``, ``variables``): needed by methods other than
        ``"paper"``, unused by it.
      data_dir: TFDS data directory of the job's dataset images.
      matches: the pairs that will carry C (at least 1 when the job's maps are another
        method's: only those pairs are reported).

    Attributes:
      method, label (one line: which C, from which paper), job_method (the method of the
      job's maps), same_maps (the job's maps are this method's: C's marginals).

    Raises:
      ValueError: a method with no C (for this model), no model where one is needed, a
        model that is not the job's, or a job without its folds.
    """

    def __init__(self, res, method: str, loaded=None, data_dir: str | None = None, matches=1):
        fp = res.fingerprint
        self.method = method
        self.job_method = fp.get("method") or "paper"
        self.same_maps = method == self.job_method
        why = _corr.problem(method, None if loaded is None else loaded.model)
        if why is not None:
            raise ValueError(why)
        if not self.same_maps and matches < 1:
            raise ValueError(
                f"--matches {matches}: the job's maps are {self.job_method}'s, so --method "
                f"{method} reports only the pairs that carry its C; expected at least 1"
            )
        if method == "paper":
            conv = fp.get("convention") or "authors"
            start = fp.get("start_layer") or 0
            self.label = f"{_corr.describe(method)}, the job's {conv} convention" + (
                f" from block {start}" if start else ""
            )
            self._store = self._open_store(res)
        else:
            self.label = _corr.describe(method)
            self._check_model(res, loaded)
            self._loaded = loaded
            self._loader = _normalising_loader(fp, data_dir)
            self._folds: dict[int, Any] = {}
        self._keys = res.images
        self._grid = tuple(int(g) for g in res.shards[0]["maps_a"].shape[1:])

    @staticmethod
    def _open_store(res):
        from pairviz_jax.batch.embed import EmbedStore

        fp = res.fingerprint
        try:
            return EmbedStore(res.layout.chunk, len(res.images), int(fp["embed_chunk"]))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(
                f"{res.layout.root}: cannot read the job's folded images (embed/: "
                f"{type(e).__name__}); rollout C needs them"
            ) from None

    def _check_model(self, res, loaded) -> None:
        from pairviz_jax.batch import params_fingerprint

        if loaded is None:
            raise ValueError(
                f"--method {self.method}: needs the job's model (--workdir or --weights) to "
                "fold its images"
            )
        if params_fingerprint(loaded.variables) != res.fingerprint.get("params_sha256"):
            raise ValueError(
                f"--method {self.method}: the model given is not the one the job ran with "
                "(its parameters differ from job.json's); give the batch command's model"
            )

    def prepare(self, image_ids: np.ndarray, progress: TextIO | None = None) -> None:
        """Folds the images ``image_ids`` that C will need (methods other than the paper's)."""
        if self.method == "paper":
            return
        from pairviz_jax.data.images import CorruptImageError

        pending = [int(i) for i in np.unique(image_ids) if int(i) not in self._folds]
        if not pending:
            return
        try:
            x = np.stack([self._loader(self._keys[i]) for i in pending])
        except CorruptImageError as e:
            raise ValueError(f"--method {self.method}: {' '.join(str(e).split())}") from None
        bar = Progress(
            len(pending), stream=progress, every=1.0, unit="images",
            label=f"report: folding ({self.method}) ",
        )  # fmt: skip
        done = [0]

        def step(n: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        m = self._loaded
        folded = _corr.fold(m.model, m.variables, x, self.method, progress=step)
        bar.close()
        for k, i in enumerate(pending):
            self._folds[i] = _corr.take(folded, [k])

    def _folded(self, ids: np.ndarray):
        """``explain.Folded`` of images ``ids`` (each of the distinct ones read once)."""
        import jax

        from pairviz_jax.explain import Folded

        if self.method == "paper":
            uniq, inverse = np.unique(ids, return_inverse=True)
            f = Folded(w=self._store.w(uniq), unit=self._store.unit(uniq), grid=self._grid)
            return _corr.take(f, inverse)
        self.prepare(ids)
        return jax.tree.map(lambda *t: np.concatenate(t), *(self._folds[int(i)] for i in ids))

    def meta(self, with_c: int) -> dict[str, Any]:
        """What the report's page says of its C (``with_c``: the pairs that carry it)."""
        return {
            "method": self.method,
            "job_method": self.job_method,
            "c_label": self.label,
            "c_pairs": int(with_c),
            "maps_of_c": with_c > 0 and not self.same_maps,
        }

    def pairs(self, pairs: np.ndarray) -> dict[str, np.ndarray]:
        """C of the pairs [n, 2] (image indices): ``viewer._corr.pairs``' dict."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        return _corr.pairs(self._folded(pairs[:, 0]), self._folded(pairs[:, 1]))


def f16_rows(x: np.ndarray) -> dict[str, Any]:
    """[n, ...] as float16 base64, each row divided by its largest magnitude (``scales``)."""
    x = np.asarray(x, np.float32)
    scales = np.abs(x.reshape(len(x), -1)).max(1)
    scales = np.where(np.isfinite(scales) & (scales > 0), scales, 1.0).astype(np.float32)
    data = (x / scales.reshape(-1, *([1] * (x.ndim - 1)))).astype("<f2").tobytes()
    return {
        "b64": base64.b64encode(data).decode("ascii"),
        "shape": list(x.shape),
        "scales": [float(s) for s in scales],
    }


def page_c(out: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a page embeds of ``CSource.pairs``: C [n, N_a, N_b] per pair scaled, the rests
    ``[n, 2, N]`` (A's, B's) scaled per pair, ``rest`` and the cosine ``score`` [n]."""
    n = len(out["score"])
    rests = np.stack([out["rest_a"].reshape(n, -1), out["rest_b"].reshape(n, -1)], axis=1)
    return {
        "corr": f16_rows(out["corr"]),
        "rests": f16_rows(rests),
        "rest": [float(v) for v in out["rest"]],
        "score": [float(v) for v in out["score"]],
    }


def _normalising_loader(fp: dict, data_dir: str | None):
    """The job's loader, normalising as the job did (its fingerprint's mean and std)."""
    from pairviz_jax.batch import ImageLoader

    spec = fp.get("loader")
    if not isinstance(spec, dict) or "image_size" not in spec:
        raise ValueError("the job does not say how its images were read; C needs them again")
    mean, std = spec.get("mean"), spec.get("std")
    return ImageLoader(
        tuple(spec["image_size"]),
        None if mean is None else (mean, std),
        dataset=spec.get("dataset"),
        split=spec.get("split") or "test",
        data_dir=data_dir,
        root=spec.get("root"),
        demo_examples_per_class=spec.get("demo_examples_per_class"),
        patch_size=tuple(spec.get("patch_size") or (1, 1)),
    )

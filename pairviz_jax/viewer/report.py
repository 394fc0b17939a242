"""A finished batch job as a static HTML gallery, paginated and loaded page by page.

Layout of the report folder (default ``JOB/report``)::

    index.html                the page: styles, drawing code and the job's summary inline
    report.json               what was written (marks the folder as a report)
    data/<k>/<p>.js           page p (k = p // 1000): its pairs (record, image A, image B,
                              score, rank), the image names, and both maps of every pair
                              as float16 base64, wrapped in ``PV_page(p, {...})``
    data/queries.js           the first page of every query, read only when searching
    img/<k>/<i>.jpg           one thumbnail per distinct image i (k = i // 1000)

Only the first page's script is read when the report opens, so a job of 10^6
pairs opens as fast as one of 100; each page's maps are drawn to canvases by the
page's own script. Pages are loaded with ``<script>`` elements (a browser does
not let a ``file://`` page ``fetch`` its neighbours) and a Content-Security-Policy
forbids any network request.

Pairs are grouped by query (image A of a pair: the query of a top-k job, the
first column of a pairs file; an all-pairs job lists each pair once, under its
first image), best score first; or, with ``order="score"``, all pairs by score.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import numpy as np
from PIL import Image

from pairviz_jax._util import Progress, write_text_atomic
from pairviz_jax.viewer import _encode, _report_c

__all__ = ["page_path", "plan_pages", "thumb_path", "write_report"]

# Scripts and thumbnails from the report's own folder (file: for file://, 'self' when
# served over http), nothing else; no fetch, no XHR.
CSP = (
    "default-src 'none'; img-src 'self' file: data:; script-src 'self' file: 'unsafe-inline'; "
    "style-src 'unsafe-inline'"
)
ORDERS = ("query", "score")
# Pairs whose C the report embeds by default (``--matches``): 10 pages of 48; bounded so a
# report of 10^6 pairs stays the size of its maps (ViT-B/16's 16 x 16 grid: 84 MB of C).
DEFAULT_MATCHES = 480
_MARKER = "report.json"


def page_path(p: int) -> str:
    """Relative path of page p's script (the page's JS computes the same)."""
    return f"data/{p // 1000:04d}/{p}.js"


def thumb_path(i: int) -> str:
    """Relative path of image i's thumbnail (the page's JS computes the same)."""
    return f"img/{i // 1000:04d}/{i}.jpg"


def plan_pages(group_sizes: np.ndarray, per_page: int) -> np.ndarray:
    """Page start offsets for consecutive groups: whole groups per page where they fit.

    A group larger than ``per_page`` is split over pages of ``per_page``; its last
    part shares a page with the groups that follow when they fit.

    Args:
      group_sizes: [G] sizes of consecutive groups (queries), all > 0.
      per_page: most entries on a page.

    Returns:
      int64 [pages] offsets into the concatenated entries; page p holds
      ``starts[p]`` to ``starts[p + 1]`` (or the end).
    """
    starts = [0]
    used = 0
    offset = 0
    for size in np.asarray(group_sizes, np.int64).tolist():
        if used and used + size > per_page:
            starts.append(offset)
            used = 0
        while size > per_page - used:  # only when the group alone overflows the page
            take = per_page - used
            offset += take
            size -= take
            starts.append(offset)
            used = 0
        used += size
        offset += size
    return np.asarray(starts, np.int64)


def _collect(res) -> dict[str, np.ndarray]:
    """Every written record of the job: record, score, and where its maps are."""
    recs, scores, shard_of, row_of = [], [], [], []
    for k, sh in enumerate(res.shards):
        n = len(sh["record"])
        recs.append(np.asarray(sh["record"], np.int64))
        scores.append(np.asarray(sh["score"], np.float32))
        shard_of.append(np.full(n, k, np.int32))
        row_of.append(np.arange(n, dtype=np.int64))
    if not recs or not sum(len(r) for r in recs):
        raise ValueError(f"{res.layout.root}: the job holds no written pairs")
    rec = np.concatenate(recs)
    return {
        "record": rec,
        "score": np.concatenate(scores),
        "shard": np.concatenate(shard_of),
        "row": np.concatenate(row_of),
        "pairs": res.pairs(rec).astype(np.int64),
    }


def _order(c: dict[str, np.ndarray], order: str, per_query: int | None, limit: int | None):
    """(entries in page order, rank of each, group sizes) after the per-query cut, and
    only the first ``limit`` entries in page order when a limit is given."""
    a = c["pairs"][:, 0]
    by_query = np.lexsort((c["record"], -c["score"], a))  # query, best first, stable
    sa = a[by_query]
    new = np.ones(len(sa), bool)
    new[1:] = sa[1:] != sa[:-1]
    group_start = np.flatnonzero(new)
    rank = np.arange(len(sa)) - np.repeat(group_start, np.diff(np.append(group_start, len(sa))))
    keep = rank < per_query if per_query is not None else np.ones(len(sa), bool)
    entries, rank = by_query[keep][:limit], rank[keep][:limit] + 1
    if order == "query":
        sizes = np.diff(np.append(np.flatnonzero(rank == 1), len(entries)))
        return entries, rank, sizes
    entries = by_query[keep]
    by_score = np.lexsort((c["record"][entries], -c["score"][entries]))[:limit]
    return entries[by_score], np.arange(1, len(by_score) + 1), np.ones(len(by_score), np.int64)


def _loader(fingerprint: dict, data_dir: str | None):
    from pairviz_jax.batch import ImageLoader

    spec = fingerprint.get("loader")
    if not isinstance(spec, dict) or "image_size" not in spec:
        return None
    return ImageLoader(
        tuple(spec["image_size"]),
        None,
        dataset=spec.get("dataset"),
        split=spec.get("split") or "test",
        data_dir=data_dir,
        root=spec.get("root"),
        demo_examples_per_class=spec.get("demo_examples_per_class"),
    )


def _write_thumbs(dest, keys, indices, loader, size, progress) -> list[str]:
    """One JPEG per distinct image; returns the keys that could not be read."""
    from pairviz_jax.data.images import CorruptImageError

    missing: list[str] = []
    bar = Progress(
        len(indices), stream=progress, every=1.0, unit="images", label="report: thumbnails "
    )

    def one(i: int) -> str | None:
        path = os.path.join(dest, thumb_path(i))
        try:
            if loader is None:
                raise CorruptImageError("the job does not say how its images were read")
            image = loader.uint8(keys[i])
            err = None
        except (CorruptImageError, OSError, ValueError) as e:
            image = np.full((size, size, 3), 128, np.uint8)
            err = f"{keys[i]}: {' '.join(str(e).split())[:200]}"
        pil = Image.fromarray(image)
        scale = size / max(pil.size)
        if scale < 1:
            pil = pil.resize(
                (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))),
                Image.LANCZOS,
            )
        pil.save(path, format="JPEG", quality=85)
        return err

    for k in sorted({i // 1000 for i in indices}):
        os.makedirs(os.path.join(dest, f"img/{k:04d}"), exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        for err in pool.map(one, indices):
            if err is not None:
                missing.append(err)
            bar.update(1)
    bar.close()
    return missing


def _thumbs(dest, res, used, data_dir, size, progress) -> list[str]:
    """The thumbnails of images ``used``; returns (and says) the ones that could not be read."""
    loader = _loader(res.fingerprint, data_dir)
    missing = _write_thumbs(dest, res.images, used.tolist(), loader, size, progress)
    if missing and progress is not None:
        progress.write(f"report: {len(missing)} images could not be read, first: {missing[0]}\n")
    return missing


def _prepare_dest(dest: str) -> None:
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ValueError(f"--dest {dest}: is a file, expected a folder")
    if os.path.isdir(dest) and os.listdir(dest):
        if not os.path.exists(os.path.join(dest, _MARKER)):
            raise ValueError(
                f"--dest {dest}: a folder that is not a pairviz report; choose an empty or new one"
            )
        for sub in ("data", "img"):  # an older report: replace it
            shutil.rmtree(os.path.join(dest, sub), ignore_errors=True)
    os.makedirs(os.path.join(dest, "data"), exist_ok=True)


def _page_maps(c, e: np.ndarray, maps_a, maps_b, n_tok: int) -> np.ndarray:
    """The maps of the job's entries ``e``, float16 [len(e), 2, N], read shard by shard."""
    maps = np.empty((len(e), 2, n_tok), np.float16)
    shard, row = c["shard"][e], c["row"][e]
    for k in np.unique(shard):
        sel = np.flatnonzero(shard == k)
        rows = row[sel]
        order_rows = np.argsort(rows)  # memory maps read best in file order
        got_a = np.asarray(maps_a[k][rows[order_rows]]).reshape(len(sel), n_tok)
        got_b = np.asarray(maps_b[k][rows[order_rows]]).reshape(len(sel), n_tok)
        maps[sel[order_rows], 0] = got_a
        maps[sel[order_rows], 1] = got_b
    return maps


def _write_pages(dest, c, entries, rank, starts, keys, shards, by_query, progress, corr):
    """Writes one ``data/pages/*.js`` per page; returns (the queries [[key, page]], the grid).

    ``queries`` lists the page of each query's best pair (rank 1) when ``by_query``, else is
    empty. ``corr`` = (``_report_c.CSource``, the number of leading entries that carry C): a
    page's pairs among those carry C (``_report_c.page_c``), and their maps are C's
    marginals unless the job's maps are the same method's.
    """
    source, with_c = corr
    ends = np.append(starts[1:], len(entries))
    pairs = c["pairs"][entries]
    maps_a = [sh["maps_a"] for sh in shards]
    maps_b = [sh["maps_b"] for sh in shards]
    grid = list(maps_a[0].shape[1:])
    n_tok = int(np.prod(grid))
    bar = Progress(len(starts), stream=progress, every=1.0, unit="pages", label="report: ")
    queries: list[list[Any]] = []
    for p, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        e = entries[lo:hi]
        maps = _page_maps(c, e, maps_a, maps_b, n_tok)
        pp = pairs[lo:hi]
        n_c = max(0, min(hi, with_c) - lo)
        extra = {}
        if n_c:
            out = source.pairs(pp[:n_c])
            if not source.same_maps:  # the maps of the method that C is
                maps[:n_c, 0] = out["map_a"].reshape(n_c, n_tok)
                maps[:n_c, 1] = out["map_b"].reshape(n_c, n_tok)
            extra = _report_c.page_c(out)
        rows_out = [
            [int(r), int(a), int(b), round(float(s), 5), int(k)]
            for r, (a, b), s, k in zip(c["record"][e], pp, c["score"][e], rank[lo:hi], strict=True)
        ]
        if by_query:
            queries += [[keys[r[1]], p] for r in rows_out if r[4] == 1]
        body = {
            "rows": rows_out,
            "names": {int(i): keys[i] for i in np.unique(pp)},
            "maps": {
                "b64": base64.b64encode(maps.astype("<f2").tobytes()).decode("ascii"),
                "shape": [len(e), 2, n_tok],
            },
            **extra,
        }
        path = os.path.join(dest, page_path(p))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"PV_page({p},{_encode.script_json(body)});\n")
        bar.update(1)
    bar.close()
    return queries, grid


def _write_index(dest: str, meta: dict[str, Any], missing: list[str]) -> str:
    """Writes the report's marker (``meta`` and the unreadable images) and ``index.html``."""
    write_text_atomic(
        os.path.join(dest, _MARKER),
        json.dumps(
            {**{k: v for k, v in meta.items() if k != "cmap"}, "missing": missing[:1000]}, indent=1
        ),
    )
    meta = {k: v for k, v in meta.items() if k != "job"}  # the page shows the job's name only
    index = os.path.join(dest, "index.html")
    write_text_atomic(
        index,
        _encode.page(
            title=meta["title"],
            csp=CSP,
            body="<noscript>This page draws with JavaScript; please enable it.</noscript>",
            scripts=["common.js", "report.js"],
            styles=["style.css"],
            data=meta,
        ),
    )
    return index


def write_report(
    job: str,
    dest: str | None = None,
    *,
    per_page: int = 48,
    per_query: int | None = None,
    order: str = "query",
    thumb: int = 128,
    cmap: str = "inferno",
    partial: bool = False,
    data_dir: str | None = None,
    progress: TextIO | None = None,
    method: str = "paper",
    loaded=None,
    matches: int = DEFAULT_MATCHES,
) -> str:
    """Writes the HTML report of a batch job.

    Args:
      job: the batch job's output folder (``visualize.py batch --out``).
      dest: the report folder (default ``job/report``); an older report there is replaced.
      per_page: most pairs on a page.
      per_query: keep only each query's best N pairs (default all).
      order: ``"query"`` (grouped by image A, best first) or ``"score"`` (all pairs).
      thumb: thumbnail size on the page, CSS pixels (images are stored at most this big).
      cmap: matplotlib colormap of the maps.
      partial: report an unfinished job's committed shards.
      data_dir: TFDS data directory of the job's dataset images.
      progress: a stream for progress lines (e.g. ``sys.stderr``), or None.
      method: whose C the pages show (``_report_c.CSource``): ``"paper"`` or ``"bilrp"``.
      loaded: the job's model (checked against the job), for methods other than the paper's.
      matches: the first this many pairs in page order carry C (N x N float16 each); when
        the job's maps are another method's, only these pairs are reported, with C's maps.

    Returns:
      The path of ``index.html``.

    Raises:
      ValueError / FileNotFoundError: not a (finished) batch job, no pairs, bad options.
    """
    from pairviz_jax.batch import BatchResults

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if per_page < 1 or thumb < 1 or (per_query is not None and per_query < 1) or matches < 0:
        raise ValueError("per_page, per_query and thumb must be positive, matches >= 0")
    if not os.path.isdir(job):
        raise FileNotFoundError(f"{job}: no such folder (expected a batch job's --out)")
    res = BatchResults(job, partial=partial)
    c = _collect(res)
    source = _report_c.CSource(res, method, loaded, data_dir, matches)  # checks, before work
    dest = os.path.abspath(dest or os.path.join(job, "report"))
    _prepare_dest(dest)

    entries, rank, sizes = _order(c, order, per_query, None if source.same_maps else matches)
    with_c = min(matches, len(entries))
    source.prepare(c["pairs"][entries[:with_c]], progress)
    if order == "query":
        starts = plan_pages(sizes, per_page)
    else:
        starts = np.arange(0, len(entries), per_page, dtype=np.int64)
    used = np.unique(c["pairs"][entries])
    keys = res.images

    fp = res.fingerprint
    image_size = list(fp.get("loader", {}).get("image_size", [thumb, thumb]))
    missing = _thumbs(dest, res, used, data_dir, max(1, min(thumb, max(image_size))), progress)

    queries, grid = _write_pages(
        dest, c, entries, rank, starts, keys, res.shards, order == "query", progress,
        (source, with_c),
    )  # fmt: skip
    write_text_atomic(
        os.path.join(dest, "data", "queries.js"),
        f"PV_queries({_encode.script_json(queries)});\n",
    )

    meta = {
        "title": f"pairviz report: {os.path.basename(os.path.abspath(job))}",
        "job": os.path.abspath(job),
        "model": fp.get("model_id") or "",
        "convention": fp.get("convention"),
        "mode": fp.get("mode"),
        "top_k": fp.get("top_k"),
        "order": order,
        "per_query": per_query,
        "pairs": int(len(entries)),
        "pairs_in_job": int(res.num_pairs),
        "images": int(len(used)),
        "pages": int(len(starts)),
        "per_page": per_page,
        "grid": grid,
        "image_size": image_size,
        "thumb": thumb,
        "missing_images": len(missing),
        "finished": not partial or os.path.exists(os.path.join(job, "manifest.json")),
        "cmap": _encode.colormap_lut(cmap),
        **source.meta(with_c),
    }
    return _write_index(dest, meta, missing)


if __name__ == "__main__":  # python -m pairviz_jax.viewer.report JOB [DEST]
    print(write_report(sys.argv[1], *sys.argv[2:3], progress=sys.stderr))

"""``train_and_evaluate(config, workdir)``: the training loop around the pure step.

Every process runs this same function; process 0 writes the logs. The loop

1. builds the mesh, model, optimiser and state (fresh, from ``config.init_from``, or resumed
   from the latest checkpoint in ``workdir``, data-iterator position included);
2. runs the jitted step, checking the *previous* step's loss and gradient norm for non-finite
   values (so the host never waits for the step it just dispatched) and raising
   ``FloatingPointError`` on one;
3. prints a progress line (steps/s, images/s, loss, ETA) every ``log_every`` steps, and
   appends every logged record to ``workdir/metrics.jsonl``;
4. evaluates retrieval (Recall@k, MAP@R on the evaluation split, gallery = queries) every
   ``eval_every`` steps and at the end;
5. checkpoints every ``checkpoint_every`` steps and at the end, and plots the loss and
   Recall@1 curves to ``workdir/curves.png``.

A restart never repeats or loses a record: ``metrics.jsonl`` is cut back to the restored
checkpoint first, and an evaluation that was due at that checkpoint but never written (a
kill during it, the final one included) is run before training goes on. The run's config
is remembered in ``config.json``; a rerun with another config is refused
(``runfiles.check_config``) before anything in the workdir is touched.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from pairviz_jax import metrics as retrieval
from pairviz_jax.train import input as input_lib
from pairviz_jax.train import peers, runfiles, sharding
from pairviz_jax.train import state as state_lib
from pairviz_jax.train import step as step_lib
from pairviz_jax.train.checkpointing import Checkpointer, as_path
from pairviz_jax.train.runfiles import read_metrics, run_status

__all__ = ["evaluate", "plot_curves", "read_metrics", "run_status", "train_and_evaluate"]

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends JSON records to ``<workdir>/metrics.jsonl`` (process 0 only)."""

    def __init__(self, workdir: str | epath.Path):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.enabled = jax.process_index() == 0

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        values = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in _to_python(values).items()
        }
        line = json.dumps({"step": int(step), "time": time.time(), **values}) + "\n"
        if "://" in os.fspath(self.path):  # object stores cannot append: rewrite
            old = self.path.read_text() if self.path.exists() else ""
            self.path.write_text(old + line)
        else:
            with self.path.open("a") as f:
                f.write(line)


def _to_python(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def plot_curves(workdir: str) -> str | None:
    """Loss and Recall@1 against step, to ``<workdir>/curves.png``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval/recall@1"]) for r in records if "eval/recall@1" in r]
    if not train and not evals:
        return None
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.2))
    if train:
        ax0.plot(*zip(*train, strict=True))
    ax0.set(xlabel="step", ylabel="training loss")
    if evals:
        ax1.plot(*zip(*evals, strict=True), marker="o")
    ax1.set(xlabel="step", ylabel="Recall@1", ylim=(0, 1))
    fig.tight_layout()
    path = epath.Path(workdir) / "curves.png"
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return os.fspath(path)


def evaluate(
    embed_fn: Callable[..., Any],
    model_params: Any,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
) -> dict[str, float]:
    """Retrieval metrics of the evaluation split(s), every item a query against all others.

    The main split (``config.input.eval_split``, read with ``config.eval.options`` if set,
    else ``config.input.options``) gives ``eval/<metric>``; each entry
    ``name: {"split": ..., "options": {...}}`` of ``config.eval.extra`` gives
    ``eval_<name>/<metric>`` (e.g. held-out images of the training classes).

    Returns:
      ``{"eval/recall@k": ..., "eval/map@r": ..., ...}``, the same on every process.
    """
    local = sharding.local_batch_size(int(config.eval.batch_size), mesh)
    main_options = config.eval.get("options")
    jobs = [("eval", None, None if main_options is None else dict(main_options))]
    for name, job in (config.eval.get("extra") or {}).items():
        jobs.append((f"eval_{name}", job["split"], dict(job.get("options") or {})))
    out: dict[str, float] = {}
    for prefix, split, options in jobs:
        embs, labels = [], []
        for batch in input_lib.eval_batches(
            config,
            local_batch=local,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            split=split,
            options=options,
        ):
            g = sharding.global_batch(batch, mesh)
            emb, lab, valid = embed_fn(model_params, g["image"], g["label"], g["valid"])
            valid = np.asarray(valid)
            embs.append(np.asarray(emb)[valid])
            labels.append(np.asarray(lab)[valid])
        result = retrieval.retrieval_metrics(
            np.concatenate(embs),
            np.concatenate(labels),
            ks=tuple(config.eval.ks),
            block_size=int(config.eval.get("block_size", 1024)),
        )
        out.update({f"{prefix}/{k}": v for k, v in result.items()})
    return out


def _duration(seconds: float) -> str:
    """``h:mm:ss`` (hours unbounded), ``?`` when unknown."""
    if not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _check_finite(step: int, values: dict[str, Any]) -> None:
    for key in ("loss", "grad_norm"):
        if not np.isfinite(values[key]):
            raise FloatingPointError(
                f"non-finite {key} = {values[key]} at step {step}; lower the learning rate "
                f"(config.optim.lr) or check the input data"
            )


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"training label {labels.min() if labels.min() < 0 else labels.max()} is outside "
            f"the head's {num_classes} classes; set config.num_classes"
        )


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Host arrays (identical on every process) -> replicated global arrays."""
    repl = sharding.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), repl, lambda i: np.asarray(x)[i]),
        tree,
    )


@dataclasses.dataclass
class Run:
    """What :func:`build` makes of a config on a mesh."""

    model: Any
    tx: Any
    state: state_lib.TrainState
    num_classes: int
    step_fn: Callable[..., Any]  # jitted train_step(state, batch, rng), state donated
    # jitted (params, images, labels, valid) -> ((embedding, keep), labels, valid)
    embed_fn: Callable[..., Any]
    step_rng: jax.Array


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Run:
    """Model, optimiser, fresh replicated state and jitted steps for ``config`` on ``mesh``."""
    repl = sharding.replicated(mesh)
    model = state_lib.build_model(config.model)
    tx = state_lib.make_optimizer(config)
    mean, std = input_lib.normalization(config)
    init_rng, step_rng = jax.random.split(jax.random.key(int(config.seed)))
    num_classes = input_lib.num_train_classes(config)
    params = jax.device_get(state_lib.init_params(model, config, init_rng, num_classes))
    params = put_replicated(params, mesh)
    state = jax.jit(lambda p: state_lib.create_train_state(p, tx), out_shardings=repl)(params)
    step_fn = step_lib.jit_train_step(
        mesh,
        repl,
        model=model,
        loss_fn=state_lib.head_loss_fn(config.loss),
        tx=tx,
        schedule=state_lib.learning_rate_schedule(config),
        accum_steps=int(config.optim.get("grad_accum_steps") or 1),
        mean=mean,
        std=std,
    )
    embed = step_lib.jit_embed(mesh, model, mean, std)
    embed_fn = jax.jit(
        lambda p, x, y, v: (embed(p, x), y, v),
        in_shardings=(repl, *(sharding.data_sharded(mesh),) * 3),
        out_shardings=repl,
    )
    return Run(model, tx, state, num_classes, step_fn, embed_fn, step_rng)


def _last(records: list[dict[str, Any]], eval_records: bool) -> dict[str, Any]:
    """The last training (or evaluation) record, without step and time."""
    for r in reversed(records):
        if any(k.startswith("eval") for k in r) == eval_records:
            return {k: v for k, v in r.items() if k not in ("step", "time")}
    return {}


def _eval_due(done: int, total: int, eval_every: int) -> bool:
    return eval_every >= 0 and ((eval_every > 0 and done % eval_every == 0) or done == total)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    devices: list[jax.Device] | None = None,
    *,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    Args:
      config: a run config (see ``configs/``).
      workdir: output folder: ``checkpoints/``, ``metrics.jsonl``, ``config.json``,
        ``curves.png``.
      devices: the devices of the data mesh; default all devices of all processes.
      allow_config_change: go on in a workdir whose run was started with another config
        (otherwise ``runfiles.ConfigChangedError``, before anything is written).

    Returns:
      The last training metrics and evaluation metrics of the run (read back from
      ``metrics.jsonl`` when this call had nothing left to do), as Python numbers, and
      ``step``.

    Raises:
      runfiles.ConfigChangedError: ``workdir`` holds a run of another config.
    """
    workdir = as_path(workdir)
    diff = runfiles.check_config(workdir, config, allow_changed=allow_config_change)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        if diff:
            log.warning(
                "config changed (allowed): %s", ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diff)
            )
        runfiles.write_config(workdir, config)
    peers.check_shared_workdir(workdir)
    watchdog = peers.PeerWatchdog(workdir, lambda: _how_to_resume(workdir)).start()
    try:
        result = _train(config, workdir, devices)
    except BaseException as e:
        watchdog.stop(f"{type(e).__name__}: {e}")
        raise
    watchdog.stop()
    return result


def _how_to_resume(workdir: epath.Path) -> str:
    status = run_status(os.fspath(workdir))
    where = (
        f"The last complete checkpoint is step {status.latest}"
        if status.latest is not None
        else "There is no checkpoint yet"
    )
    return (
        f"{where} in {workdir}; rerun the same command (on any number of processes) "
        "to resume from it"
    )


def _resume(config: ml_collections.ConfigDict, workdir: epath.Path, state, local_batch: int):
    """The checkpointer, the state restored from its latest step (or as given) with that
    step, and the input iterator from it: ``(ckpt, state, start, train_it)``."""
    ckpt = Checkpointer(
        workdir / "checkpoints",
        save_every=int(config.checkpoint_every),
        max_to_keep=config.get("keep_checkpoints"),
        keep_every=config.get("keep_checkpoint_every"),
        async_save=bool(config.get("async_checkpoints", True)),
    )
    if ckpt.latest_step() is not None:
        state, start = ckpt.restore(state)
        log.info("Resumed from %s at step %d.", ckpt.directory, start)
    else:
        start = 0
    # The input of step s depends on the config and s only: any process count resumes it.
    train_it = input_lib.train_iterator(
        config,
        local_batch=local_batch,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start,
    )
    # What a killed run logged past its last checkpoint is logged again.
    if jax.process_index() == 0:
        dropped = runfiles.truncate_metrics(workdir, start)
        if dropped:
            log.info("Dropped %d metrics records after step %d (logged again).", dropped, start)
    return ckpt, state, start, train_it


def _log_window(writer, window, done: int, total: int, rate: float, batch_size: int, is_main):
    """Writes (and on the main process logs) the mean metrics of the steps since the last
    line, with steps/s and images/s; returns them."""
    last_train = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    last_train.update(steps_per_s=rate, images_per_s=rate * batch_size)
    writer.write(done, last_train)
    if is_main:
        log.info(
            "step %d/%d  loss %.4f  lr %.3g  %.2f steps/s  %.0f img/s  ETA %s",
            done,
            total,
            last_train["loss"],
            last_train["lr"],
            rate,
            rate * batch_size,
            _duration((total - done) / rate),
        )
    return last_train


def _train(
    config: ml_collections.ConfigDict, workdir: epath.Path, devices: list[jax.Device] | None
) -> dict[str, Any]:
    """The body of :func:`train_and_evaluate` once the workdir is checked."""
    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh(devices)
    run = build(config, mesh)
    state, step_rng = run.state, run.step_rng
    run.state = None  # donated to the first step; keep no second reference
    batch_size = int(config.batch_size)

    total = int(config.total_steps)
    local_batch = sharding.local_batch_size(batch_size, mesh)
    ckpt, state, start, train_it = _resume(config, workdir, state, local_batch)

    step_fn, embed_fn = run.step_fn, run.embed_fn
    writer = MetricWriter(workdir)
    log_every = int(config.log_every)
    eval_every = int(config.get("eval_every") or 0)

    last_train: dict[str, Any] = {}
    last_eval: dict[str, Any] = {}

    def run_eval(done: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = evaluate(embed_fn, state.params["model"], config, mesh)
        writer.write(done, result)
        if is_main:
            log.info(
                "eval step %d: %s (%.1fs)",
                done,
                "  ".join(f"{k} {v:.4g}" for k, v in result.items()),
                time.perf_counter() - t0,
            )
        return result

    # An evaluation due at the restored checkpoint that a kill kept out of metrics.jsonl.
    if start > 0 and _eval_due(start, total, eval_every):
        if not any(
            r.get("step") == start and any(k.startswith("eval") for k in r)
            for r in read_metrics(workdir)
        ):
            log.info("Evaluating step %d (its evaluation was not written).", start)
            last_eval = run_eval(start)

    pending: tuple[int, Any] | None = None
    window: list[dict[str, float]] = []
    t_window, n_window = time.perf_counter(), 0
    for step in range(start, total):
        local = next(train_it)
        _check_labels(local["label"], run.num_classes)
        batch = sharding.global_batch(local, mesh)
        state, metrics = step_fn(state, batch, step_rng)
        done = step + 1
        if pending is not None:  # the previous step's metrics: no wait on the current step
            prev_step, prev = pending
            values = _to_python(jax.device_get(prev))
            _check_finite(prev_step, values)
            window.append(values)
        pending = (done, metrics)
        n_window += 1
        if step == start:  # keep compilation out of the steps/s of the first window
            jax.block_until_ready(metrics)
            t_window, n_window = time.perf_counter(), 0

        save_due = done % int(config.checkpoint_every) == 0 or done == total
        log_due = done % log_every == 0 or done == total
        eval_due = _eval_due(done, total, eval_every)
        if save_due or log_due or eval_due:  # sync on this step before acting on its state
            values = _to_python(jax.device_get(pending[1]))
            _check_finite(done, values)
            window.append(values)
            pending = None
        if log_due:
            dt = time.perf_counter() - t_window
            rate = n_window / dt if n_window and dt > 0 else float("nan")
            last_train = _log_window(writer, window, done, total, rate, batch_size, is_main)
            window, t_window, n_window = [], time.perf_counter(), 0
        if save_due:
            ckpt.save(done, state, None, config, force=done == total)
        if eval_due:
            last_eval = run_eval(done)
            t_window = time.perf_counter()
    ckpt.close()
    records = read_metrics(workdir) if is_main else []
    if is_main:
        plot_curves(workdir)  # also after a kill while the curves were drawn
    last_train = last_train or _last(records, eval_records=False)
    last_eval = last_eval or _last(records, eval_records=True)
    return {**last_train, **last_eval, "step": max(start, total)}

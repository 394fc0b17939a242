"""The files of a run directory besides its checkpoints, and what they say about the run.

* ``metrics.jsonl``: one JSON record per logged step (training) and per evaluation. A
  restarted run first drops every record beyond the checkpoint it restored
  (:func:`truncate_metrics`, atomically), so after any number of kills each step is there
  once, exactly as in an uninterrupted run.
* ``config.json``: the config the run was started with. A rerun with a different config is
  refused with a one-line diff of the fields (:func:`check_config`) unless the change is
  allowed (``train.py --allow_config_change``).
* :func:`run_status`: which checkpoints exist, the configured last step, and whether the
  final evaluation was written: a run is *finished* only then.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections
from etils import epath

from pairviz_jax._util import write_text_atomic

__all__ = [
    "ConfigChangedError",
    "RunStatus",
    "check_config",
    "config_diff",
    "read_metrics",
    "run_status",
    "truncate_metrics",
    "write_config",
]

METRICS, CONFIG = "metrics.jsonl", "config.json"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``<workdir>/metrics.jsonl``, in order ([] if there is none).

    A torn last line (a process killed mid-write) is ignored.
    """
    path = epath.Path(workdir) / METRICS
    if not path.exists():
        return []
    records = []
    with path.open() as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_metrics(workdir: str, step: int) -> int:
    """Drops the records of steps after ``step`` (what a killed run logged past its last
    checkpoint), and torn lines; the file is replaced atomically.

    Returns:
      The number of records dropped.
    """
    path = epath.Path(workdir) / METRICS
    if not path.exists():
        return 0
    with path.open() as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", 0)) <= step:
            keep.append(json.dumps(record) + "\n")
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(keep))
    return len(lines) - len(keep)


def flat_dict(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flat_dict(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def as_dict(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    """A config as plain JSON-able nested dicts."""
    if isinstance(config, dict):
        return json.loads(json.dumps(config))
    return json.loads(config.to_json_best_effort())


def config_diff(old: ml_collections.ConfigDict | dict, new: ml_collections.ConfigDict | dict):
    """``[(field, old value, new value)]`` of every dotted field that differs, sorted."""
    a, b = flat_dict(as_dict(old)), flat_dict(as_dict(new))
    missing = object()
    out = []
    for key in sorted(a.keys() | b.keys()):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


class ConfigChangedError(ValueError):
    """A rerun in a workdir whose run has another config (one-line message with the diff)."""


def stored_config(workdir: str) -> dict[str, Any] | None:
    """The config a run directory remembers (``config.json``), or None."""
    path = epath.Path(workdir) / CONFIG
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None  # an empty or torn file (older versions wrote it non-atomically)


def check_config(
    workdir: str, config: ml_collections.ConfigDict, *, allow_changed: bool = False
) -> list[tuple[str, Any, Any]]:
    """Refuses a config that differs from the one ``workdir``'s run was started with.

    Reads only; nothing in ``workdir`` is written.

    Returns:
      The differences (empty for a new workdir or the same config).

    Raises:
      ConfigChangedError: the configs differ and ``allow_changed`` is False.
    """
    old = stored_config(workdir)
    if old is None:
        return []
    diff = config_diff(old, config)
    if diff and not allow_changed:
        shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise ConfigChangedError(
            f"{workdir} holds a run with another config ({shown}{more}); rerun with its "
            "config, use a new --workdir, or pass --allow_config_change to go on with this one"
        )
    return diff


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json`` atomically (never an empty or half-written file)."""
    write_text_atomic(epath.Path(workdir) / CONFIG, config.to_json_best_effort(indent=2))


@dataclasses.dataclass
class RunStatus:
    """Where a run directory stands.

    Attributes:
      steps: complete checkpoints, ascending.
      total: the configured last step (``total_steps`` of the latest checkpoint's config),
        or None without a checkpoint.
      final_eval: the evaluation of the last step is in ``metrics.jsonl`` (or the run
        never evaluates).
    """

    steps: list[int]
    total: int | None
    final_eval: bool

    @property
    def latest(self) -> int | None:
        return self.steps[-1] if self.steps else None

    @property
    def finished(self) -> bool:
        """The last configured step is checkpointed and evaluated."""
        return self.latest is not None and self.latest >= self.total and self.final_eval

    def describe(self) -> str:
        if self.latest is None:
            return "no checkpoint yet"
        if self.latest < self.total:
            return f"stopped at step {self.latest} of {self.total}"
        if not self.final_eval:
            return f"at step {self.latest} of {self.total}, final evaluation missing"
        return f"finished at step {self.latest}"


def _checkpoint_config(directory: str, step: int) -> dict[str, Any]:
    path = epath.Path(directory) / str(step) / "config" / "metadata"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_status(workdir: str) -> RunStatus:
    """:class:`RunStatus` of a ``train.py`` run directory (cheap: reads JSON only)."""
    directory = epath.Path(workdir) / "checkpoints"
    steps = []
    if directory.is_dir():
        steps = sorted(int(d.name) for d in directory.iterdir() if d.name.isdigit() and d.is_dir())
    if not steps:
        return RunStatus([], None, False)
    config = _checkpoint_config(directory, steps[-1]) or stored_config(workdir) or {}
    total = int(config.get("total_steps", steps[-1]))
    evaluates = int(config.get("eval_every", 0) or 0) >= 0
    final_eval = not evaluates or any(
        r.get("step") == total and any(k.startswith("eval") for k in r)
        for r in read_metrics(workdir)
    )
    return RunStatus(steps, total, final_eval)

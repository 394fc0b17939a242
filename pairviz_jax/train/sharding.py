"""Data parallelism with ``jax.sharding``: one ``Mesh`` axis ``"data"`` over every device.

The same code runs on 1 CPU, 8 GPUs or a TPU pod slice: the state is replicated, a batch is
split along its first axis over all devices of all processes. Each process feeds its own
slice of the global batch (``jax.make_array_from_process_local_data``); multi-host runs call
:func:`initialize_distributed` first (flags, or the cluster launcher detected).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
HEARTBEAT_TIMEOUT_S = 30  # jax declares a silent process dead (its default: 100 s); the
# peer watchdog (train.peers, 8 s) stops the survivors first, with one line

log = logging.getLogger(__name__)


# jax's cluster detections (``jax.distributed.initialize(cluster_detection_method=...)``),
# told apart here by environment variables only: no network query, no initialisation for a
# single process.
def detect_cluster(environ: dict[str, str] | None = None) -> str | None:
    """The multi-process launcher this process runs under, or None for a single process.

    ``"slurm"`` (``srun`` with more than one task), ``"ompi"`` (``mpirun`` with more than
    one process), ``"gketpu"`` (a multi-host TPU slice on GKE: ``TPU_WORKER_HOSTNAMES``),
    ``"gcetpu"`` (a Cloud TPU VM: libtpu and ``/dev/accel*`` or ``/dev/vfio``), ``"k8s"``
    (an indexed Kubernetes job), each a ``cluster_detection_method`` of
    ``jax.distributed.initialize``.
    """
    env = os.environ if environ is None else environ

    def count(key: str) -> int:
        try:
            return int(env.get(key, "1"))
        except ValueError:
            return 1

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and count("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if "," in hosts:
        return "gketpu"
    if environ is None and _on_cloud_tpu_vm() and "TPU_SKIP_MDS_QUERY" not in env:
        return "gcetpu"
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        return "k8s"
    return None


def _on_cloud_tpu_vm() -> bool:
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


class ClusterError(RuntimeError):
    """The processes of a run could not be joined (one-line message)."""


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
    *,
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
    initialization_timeout_s: int = 300,
) -> str | None:
    """``jax.distributed.initialize`` for multi-process runs; a no-op for one process.

    With explicit flags (``coordinator_address`` and ``num_processes`` > 1) they are used;
    without, the launcher is detected (:func:`detect_cluster`: SLURM, Open MPI, TPU pods,
    Kubernetes) and jax reads the rest from its environment. On CPU the cross-process
    collectives use gloo. A process that stops sending heartbeats for
    ``heartbeat_timeout_s`` is declared dead and the others stop (see ``loop``).

    Returns:
      How the processes were found (``"flags"``, a cluster name) or None (one process).
      One line, ``process i of n ...``, is logged.

    Raises:
      ClusterError: the processes could not be joined.
    """
    if coordinator_address is not None and num_processes not in (None, 1):
        method, kwargs = (
            "flags",
            dict(
                coordinator_address=coordinator_address,
                num_processes=num_processes,
                process_id=process_id,
            ),
        )
    elif coordinator_address is not None or num_processes not in (None, 1):
        raise ClusterError(
            "give --coordinator HOST:PORT, --num_processes N and --process_id I together, "
            "or none of them under a cluster launcher"
        )
    else:
        method = detect_cluster()
        if method is None:
            return None
        kwargs = dict(cluster_detection_method=method)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            local_device_ids=local_device_ids,
            heartbeat_timeout_seconds=int(heartbeat_timeout_s),
            initialization_timeout=int(initialization_timeout_s),
            **kwargs,
        )
    except Exception as e:  # jax raises plain errors (ValueError, XlaRuntimeError...)
        detail = " ".join(str(e).split())[:300]
        raise ClusterError(f"cannot join the processes of the run ({method}): {detail}") from None
    log.info(
        "process %d of %d (%s), %d local of %d devices (%s)",
        jax.process_index(),
        jax.process_count(),
        method,
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
    )
    return method


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-d mesh ``("data",)`` over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (the train state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Split along the leading (batch) axis over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of a global batch; raises unless it divides evenly over devices."""
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(
            f"batch size {global_batch_size} must be a multiple of the {n} devices in the mesh"
        )
    return global_batch_size // jax.process_count()


def global_batch(local: Any, mesh: Mesh) -> Any:
    """Assembles each process's host arrays [b, ...] into global arrays [P * b, ...].

    Args:
      local: pytree of numpy arrays, this process's consecutive slice of the global batch.
      mesh: the data mesh.

    Returns:
      The same pytree of ``jax.Array`` sharded along the batch axis.
    """
    sharding = data_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
    )

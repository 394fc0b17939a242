"""Data parallelism with ``jax.sharding``: one ``Mesh`` axis ``"data"`` over every device.

The same code runs on 1 CPU, 8 GPUs or a TPU pod slice: the state is replicated, a batch is
split along its first axis over all devices of all processes. Each process feeds its own
slice of the global batch (``jax.make_array_from_process_local_data``); multi-host runs call
:func:`initialize_distributed` first.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
) -> None:
    """``jax.distributed.initialize`` for multi-host runs; a no-op for one process.

    With no arguments, JAX detects the cluster (TPU pods, SLURM, Open MPI...). On CPU the
    cross-process collectives use gloo.
    """
    if coordinator_address is None and num_processes in (None, 1):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


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

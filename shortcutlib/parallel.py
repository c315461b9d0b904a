"""Devices, meshes and shardings: data parallelism, FSDP, and multi-host start-up.

The mesh has two axes, ``data`` and ``fsdp``. The batch is split over both (every device
gets ``global_batch / num_devices`` examples); parameters and optimizer state are either
replicated (``fsdp=1``) or, with ``fsdp>1``, each large array is split along its largest
axis divisible by the ``fsdp`` size and gathered by XLA where it is used (ZeRO-3 style).

Configuration (the ``parallel`` group)::

    parallel.data=-1 parallel.fsdp=1     # -1: all devices not used by the other axis
    parallel.devices=-1                  # or only the first N devices (one process)
    parallel.fsdp_min_size=262144        # arrays with fewer elements stay replicated
    parallel.distributed=false           # true: jax.distributed.initialize()
    parallel.coordinator_address=host:port parallel.num_processes=N parallel.process_id=i

Multi-host data: ``train.batch_size`` is the *global* batch. Every process draws the same
seeded global batch from its domain and keeps only the rows its own devices hold (then
encodes just those), so N processes see exactly the batches one process would; see
``local_rows``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


@dataclass
class ParallelConfig:
    data: int = -1  # -1: all devices not used by fsdp
    fsdp: int = 1  # >1 shards params, EMA and optimizer state over this many devices
    devices: int = -1  # use only the first N devices (-1: all); single-process only
    fsdp_min_size: int = 2**18  # arrays with fewer elements stay replicated
    distributed: bool = False  # true: jax.distributed.initialize() from the cluster environment
    coordinator_address: Optional[str] = None  # host:port; with num_processes and process_id, multi-host without a cluster manager
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


def fake_cpu_devices_env(n: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a *subprocess* that should see ``n`` CPU devices (set before jax starts)."""
    env = dict(os.environ if env is None else env)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def initialize_distributed(pcfg: ParallelConfig) -> None:
    """Start multi-host JAX when the config asks for it; a no-op for single-process runs.

    Must run before anything touches a device. With ``coordinator_address`` the three
    values come from the config; with only ``distributed=true`` JAX detects them from the
    cluster environment (SLURM, Open MPI, Kubernetes, Cloud TPU).
    """
    wanted = pcfg.distributed or pcfg.coordinator_address is not None
    if not wanted or jax.distributed.is_initialized():
        return
    if pcfg.coordinator_address is not None and (pcfg.num_processes is None or pcfg.process_id is None):
        raise ValueError("parallel.coordinator_address needs parallel.num_processes and parallel.process_id as well.")
    # Cross-process collectives on CPU need an implementation (GPU/TPU backends ignore this).
    # Asking which backend is in use would start it, too early for initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=pcfg.coordinator_address,
            num_processes=pcfg.num_processes,
            process_id=pcfg.process_id,
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"jax.distributed.initialize failed ({exc}). It must run before any JAX computation; "
            "check parallel.coordinator_address/num_processes/process_id or the cluster environment."
        ) from exc
    log.info("Process %d of %d, %d local / %d global devices.", jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
    """Resolve ``-1`` (all remaining devices) and check the product is the device count."""
    if data == -1 and fsdp == -1:
        raise ValueError("At most one of parallel.data and parallel.fsdp may be -1.")
    if fsdp == -1:
        fsdp, data = num_devices // data, data
    elif data == -1:
        data = num_devices // fsdp
    if data < 1 or fsdp < 1 or data * fsdp != num_devices:
        raise ValueError(
            f"parallel.data={data} x parallel.fsdp={fsdp} must equal the {num_devices} available devices; "
            "set one of them to -1 to use all remaining devices."
        )
    return data, fsdp


def make_mesh(pcfg: ParallelConfig, devices: list[Any] | None = None) -> Mesh:
    """A (data, fsdp) mesh over all devices of all processes, each process's devices adjacent.

    Devices are ordered by (process, id) so the rows of the batch a process holds are one
    contiguous block, which is what per-process data loading relies on.
    """
    devices = list(devices if devices is not None else jax.devices())
    devices.sort(key=lambda d: (d.process_index, d.id))
    if pcfg.devices != -1:
        if jax.process_count() > 1 or not 1 <= pcfg.devices <= len(devices):
            raise ValueError(f"parallel.devices={pcfg.devices}: give -1 or 1..{len(devices)} (single process only).")
        devices = devices[: pcfg.devices]
    shape = mesh_shape(int(pcfg.data), int(pcfg.fsdp), len(devices))
    return Mesh(np.array(devices, dtype=object).reshape(shape), (DATA, FSDP))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """Shard along the largest axis divisible by ``fsdp_size`` (first such axis on ties),
    for arrays of at least ``min_size`` elements; otherwise replicate."""
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return P()
    candidates = [(size, -axis) for axis, size in enumerate(shape) if size % fsdp_size == 0]
    if not candidates:
        return P()
    _, neg_axis = max(candidates)
    spec: list[Any] = [None] * len(shape)
    spec[-neg_axis] = FSDP
    return P(*spec)


def array_sharding(x: Any, mesh: Mesh, min_size: int) -> NamedSharding:
    return NamedSharding(mesh, fsdp_spec(tuple(np.shape(x)), mesh.shape[FSDP], min_size))


def tree_shardings(tree: Any, mesh: Mesh, min_size: int) -> Any:
    """Per-leaf shardings for parameters, EMA, optimizer state (same rule, so Adam's moments
    are split like the parameters they follow) and a teacher's parameters."""
    return jax.tree.map(lambda x: array_sharding(x, mesh, min_size), tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device: (data, fsdp)."""
    return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the {mesh.size} devices of the mesh "
            f"(data={mesh.shape[DATA]} x fsdp={mesh.shape[FSDP]})."
        )


def local_rows(global_batch: int, mesh: Mesh) -> slice:
    """The contiguous rows of a global batch whose shards live on this process's devices."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    starts = sorted({(idx[0].start or 0, idx[0].stop if idx[0].stop is not None else global_batch) for idx in index_map.values()})
    lo, hi = starts[0][0], starts[-1][1]
    covered = sum(b - a for a, b in starts)
    if covered != hi - lo:
        raise ValueError("This process's devices do not hold a contiguous block of the batch; build the mesh with make_mesh.")
    return slice(lo, hi)


def global_batch(local: dict[str, Any], mesh: Mesh, global_size: int) -> dict[str, Any]:
    """Assemble this process's rows into global arrays sharded over (data, fsdp)."""
    sharding = batch_sharding(mesh)

    def assemble(a: Any) -> jax.Array:
        a = np.asarray(a)
        return jax.make_array_from_process_local_data(sharding, a, (global_size, *a.shape[1:]))

    return jax.tree.map(assemble, local)


def place(tree: Any, shardings: Any) -> Any:
    """Put host-identical values onto (possibly multi-process) shardings, one shard at a time."""

    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(x: Any, sharding: NamedSharding) -> jax.Array:
        # Each process supplies only the shards its devices hold, from its own (identical) copy.
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree, shardings)


def gather(tree: Any) -> Any:
    """Every leaf as a full numpy array on every process (for tests, exports and logging)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def jit_sharded(
    fn: Callable[..., Any],
    in_shardings: tuple[Any, ...],
    out_shardings: Any,
    *,
    donate_argnums: int | tuple[int, ...] = (),
) -> Callable[..., Any]:
    """jax.jit with explicit in/out shardings (the layout of every argument is fixed up front)."""
    return jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums)


def any_process(flag: bool) -> bool:
    """True on every process when it is true on at least one (e.g. a preemption signal)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def to_host(tree: Any) -> Any:
    """Fetch replicated arrays (metrics) as numpy; works when other processes hold copies too."""

    def fetch(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)
